"""
Pixel offsets of a GLCM: scikit-image's angle convention, the canonical offsets actually computed, and the
number of pixel pairs of an offset inside a window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["DEFAULT_ANGLES", "glcm_offset", "canonical_offsets", "n_pairs"]

#: The paper's eight angles, in degrees.
DEFAULT_ANGLES = (0, 45, 90, 135, 180, 225, 270, 315)


def _round_half_away(value: float) -> int:
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def glcm_offset(distance: int, angle: float) -> tuple[int, int]:
    """
    The pixel offset ``(row, col)`` of an angle in degrees, with scikit-image's convention::

        row = round(sin(theta) * distance),  col = round(cos(theta) * distance)

    rounding half away from zero. Rows grow downwards, so 90 degrees pairs a pixel with the pixel
    ``distance`` rows below it, and ``theta + 180`` gives the negated offset.
    """
    theta = math.radians(float(angle))
    return _round_half_away(math.sin(theta) * distance), _round_half_away(math.cos(theta) * distance)


def canonical_offsets(distance: int, angles: Sequence[float], window: int) -> tuple[list, list]:
    """
    The offsets to compute and how every angle is read from them.

    ``theta + 180`` negates the offset ``o``, and the in-window pairs of ``-o`` are those of ``o`` reversed,
    so :math:`P(-o) = P(o)^T`. Only the distinct canonical offsets (``dr > 0``, or ``dr == 0`` and ``dc > 0``;
    at most four per distance) are computed.

    Returns:
        ``(offsets, plan)``: the canonical offsets ``[(dr, dc), ...]`` and, for each angle, ``(index into
        offsets, transposed)``.

    Raises:
        ValueError: an angle gives a zero offset, or an offset that does not fit in the window.
    """
    canonical: list[tuple[int, int]] = []
    plan = []
    for angle in angles:
        dr, dc = glcm_offset(distance, angle)
        if dr == 0 and dc == 0:
            raise ValueError(f"angle {angle} with distance {distance} gives a zero offset.")
        if abs(dr) >= window or abs(dc) >= window:
            raise ValueError(
                f"angle {angle} with distance {distance} gives offset {(dr, dc)}: no pixel pair fits in a "
                f"window of {window}; use a larger window or a smaller distance."
            )
        transposed = dr < 0 or (dr == 0 and dc < 0)
        if transposed:
            dr, dc = -dr, -dc
        if (dr, dc) not in canonical:
            canonical.append((dr, dc))
        plan.append((canonical.index((dr, dc)), transposed))
    return canonical, plan


def n_pairs(offset: tuple[int, int], window: int) -> int:
    """:math:`N_o = (\\mathrm{window} - dr)(\\mathrm{window} - |dc|)`: the pairs of a canonical offset in one window."""
    return (window - offset[0]) * (window - abs(offset[1]))
