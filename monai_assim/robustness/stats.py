"""
Statistics of a multi-seed study: mean and spread over seeds, and the exact McNemar (sign) test that the
paired per-image comparisons (:mod:`monai_assim.robustness.compare`) use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from monai_assim.robustness.results import row_key

__all__ = ["aggregate_over_seeds", "mcnemar_exact", "mean_and_spread", "mean_over_seeds"]


def mcnemar_exact(b: int, c: int) -> float:
    r"""
    Two-sided exact McNemar test of ``b`` and ``c`` discordant pairs (the sign test):
    :math:`p = \min\big(1, 2 \sum_{k=0}^{\min(b, c)} \binom{b+c}{k} 2^{-(b+c)}\big)`; 1 when ``b + c = 0``.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got {b}, {c}.")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def mean_and_spread(values: Sequence[float]) -> dict[str, float | None]:
    """``{"mean", "std", "min", "max"}`` of ``values`` (at least one); ``std`` is the sample std, ``None`` for one value."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values)}


def aggregate_over_seeds(results: Mapping[Any, Mapping[str, Sequence[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """
    Mean and spread over seeds of each arm's accuracy per (attack, eps, role).

    Args:
        results: ``seed -> arm -> rows`` of the robustness handler (``attack``, ``eps`` or ``eps_255``,
            ``role``, ``n``, ``accuracy``; e.g. :func:`monai_assim.visualize.load_robustness_rows`).

    Returns:
        rows ``{"arm", "attack", "eps_255", "role", "n_seeds", "n_images", "mean", "std", "min", "max"}``
        in the order of the first seed's rows, arm by arm; ``std`` is the sample standard deviation
        (``ddof = 1``; ``None`` for one seed) and ``n_images`` the mean test-set size.
    """
    collected: dict[tuple, list[tuple[float, int]]] = {}
    order: list[tuple] = []
    for per_arm in results.values():
        for arm, rows in per_arm.items():
            for r in rows:
                key = (arm, *row_key(r))
                if key not in collected:
                    collected[key] = []
                    order.append(key)
                collected[key].append((float(r["accuracy"]), int(r["n"])))
    arms = list(dict.fromkeys(k[0] for k in order))
    out = []
    for arm in arms:
        for key in (k for k in order if k[0] == arm):
            values = [v for v, _ in collected[key]]
            out.append(
                {
                    "arm": arm,
                    "attack": key[1],
                    "eps_255": key[2],
                    "role": key[3],
                    "n_seeds": len(values),
                    "n_images": sum(n for _, n in collected[key]) / len(values),
                    **mean_and_spread(values),
                }
            )
    return out


def mean_over_seeds(per_seed: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The rows of the first seed with ``accuracy`` replaced by its mean over the seeds that have the row."""
    keyed = [{row_key(r): r for r in rows} for rows in per_seed]
    out = []
    for r in per_seed[0]:
        values = [float(k[row_key(r)]["accuracy"]) for k in keyed if row_key(r) in k]
        out.append(dict(r, accuracy=sum(values) / len(values)))
    return out
