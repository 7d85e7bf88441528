"""
The tile path: GLCM statistics of non-overlapping tiles (``stride == window``) without per-window matrices.

The covered area of an image is viewed as tiles ``(N, nH, window, nW, window)`` (no copy), and the pairs
``(p, p + o)`` of a canonical offset ``o = (dr, dc)`` inside every tile are the same element of two
shifted views of it (:func:`tile_pairs`). Every pair is given a key, its cell in the ``L x L`` joint matrix
``C`` of its tile or its bin in the tile's histogram over the level difference ``D = a_p - a_q``,

.. math::

    \\mathrm{key}_{joint} = k L^2 + a_p L + a_q, \\qquad
    \\mathrm{key}_{difference} = k (2L - 1) + (L - 1) + a_p - a_q,

``k`` the tile's index within its chunk of images, and one ``scatter_add_`` per chunk and offset
accumulates the pairs' weights into a reused buffer (:class:`TileChunks`, the loop that the hard path
below and the soft path of :mod:`monai_assim.glcm.soft_tiles` share). The buffer is then reduced at once
to per-tile statistics (:func:`cell_stats`): the sums over pairs of the features linear in ``P``
(``C`` or the histograms times a weight table), the moments of correlation, :math:`\\sum C^2` and the
entropy. :func:`split_stats` normalises them by the number of pairs :math:`N_o`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from monai_assim.glcm.features import LINEAR_WEIGHTS, centred_moments, entropy_of_counts
from monai_assim.glcm.offsets import n_pairs

__all__ = [
    "TileChunks",
    "tiled",
    "tile_pairs",
    "difference_table",
    "joint_table",
    "region_masks",
    "region_sums",
    "column_major",
    "cell_stats",
    "split_stats",
    "hard_tile_stats",
]

# a chunk of images of the tile paths holds at most about this many pixels and this many accumulator
# cells (2 MiB in float32), so that its keys, products and matrices stay in cache through the offsets,
# while its operations stay large enough for their overhead (the sizes tried: docs/dev/log.md)
_TILE_CHUNK_PIXELS = 1 << 19
_TILE_CHUNK_CELLS = 1 << 19


def tiled(v: torch.Tensor, window: int, nh: int, nw: int) -> torch.Tensor:
    """View of the covered area of ``v`` (``(N, H, W)``) as tiles: ``(N, nH, window, nW, window)`` (no copy)."""
    return v[:, : nh * window, : nw * window].reshape(v.shape[0], nh, window, nw, window)


def tile_pairs(v: torch.Tensor, offset: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """
    For tiles ``v`` (``(N, nH, window, nW, window)``) and a canonical offset ``(dr, dc)``, the first and
    second pixels of the pairs ``(p, p + offset)`` that lie inside one tile: two views
    ``(N, nH, window - dr, nW, window - |dc|)``. Summing them over dims 2 and 4 sums over the in-tile pairs.
    """
    dr, dc = offset
    window = v.shape[2]
    kh, kw, c0 = window - dr, window - abs(dc), max(0, -dc)
    return v[:, :, :kh, :, c0 : c0 + kw], v[:, :, dr:, :, c0 + dc : c0 + dc + kw]


def chunk_images(pixels_per_image: int, tiles_per_image: int, cells_per_tile: int) -> int:
    """Images per chunk of the tile paths (at least 1; chunk-relative keys stay below 2**31)."""
    by_pixels = _TILE_CHUNK_PIXELS // pixels_per_image
    by_cells = _TILE_CHUNK_CELLS // (tiles_per_image * cells_per_tile)
    chunk = max(1, min(by_pixels, by_cells))
    if chunk * tiles_per_image * cells_per_tile >= 2**31:
        raise ValueError(f"levels too large: {cells_per_tile} cells per window overflow the int32 keys.")
    return chunk


def _chunk_tile_index(n_img: int, chunk: int, nh: int, nw: int, device: torch.device) -> torch.Tensor:
    """The index of every tile within its chunk of ``chunk`` images: int32, ``(N, nH, 1, nW, 1)``."""
    local = torch.arange(chunk * nh * nw, device=device, dtype=torch.int32).view(chunk, nh, 1, nw, 1)
    return local.repeat(-(-n_img // chunk), 1, 1, 1, 1)[:n_img]


class TileChunks:
    """
    The chunks of images of the tile paths, the key of every in-tile pair, and the one loop over both.

    Images are processed in chunks (:func:`chunk_images`), every offset of a chunk before the next chunk,
    with keys relative to the chunk (see the module docstring), so that a chunk's keys, products and
    accumulator stay in cache. Every pixel carries a precomputed int32 key base, ``k L^2 + a L`` (joint) or
    ``k (2L - 1) + (L - 1) + a`` (difference), so a pair's key is one addition (subtraction) of the bases
    of its first pixels and the levels of its second pixels.

    Args:
        level: the level ``a`` of every pixel, int32 ``(N, H, W)`` (hard: ``q``; soft: the lower bin).
        levels: ``L``.
        window, nh, nw: the tiles, as :func:`tiled`.
        joint: keys into the joint matrices (``True``) or into the difference histograms (``False``).
    """

    def __init__(self, level: torch.Tensor, levels: int, window: int, nh: int, nw: int, joint: bool):
        n_img = level.shape[0]
        self.levels, self.window, self.joint = levels, window, joint
        self.n_img, self.tiles_per_image = n_img, nh * nw
        self.n_tiles = n_img * nh * nw
        self.n_cells = levels * levels if joint else 2 * levels - 1
        self.chunk = min(n_img, chunk_images(level.shape[-2] * level.shape[-1], nh * nw, self.n_cells))
        self.level_tiles = tiled(level, window, nh, nw)
        base = _chunk_tile_index(n_img, self.chunk, nh, nw, level.device)
        if joint:  # a pair's cell: tile * L^2 + a_p * L + a_q
            self._first = torch.add(base * self.n_cells, self.level_tiles, alpha=levels)
        else:  # a pair's difference bin: tile * (2L - 1) + (L - 1) + a_p - a_q
            self._first = torch.add(base * self.n_cells + (levels - 1), self.level_tiles)

    @property
    def chunk_pixels(self) -> int:
        """The most in-tile pixels (hence pairs of one offset) of a chunk."""
        return self.chunk * self.tiles_per_image * self.window * self.window

    def chunks(self):
        """``(images, tiles)`` slices of the chunks of images and of their tiles (numbered image-major)."""
        for s in range(0, self.n_img, self.chunk):
            e = min(s + self.chunk, self.n_img)
            yield slice(s, e), slice(s * self.tiles_per_image, e * self.tiles_per_image)

    def key(self, offset: tuple[int, int], images: slice, out: torch.Tensor | None = None) -> torch.Tensor:
        """
        The chunk-relative key of every in-tile pair of ``offset`` in the images ``images``, flat: int32
        (enough for ``index_select``), or written into the int64 buffer ``out`` (``scatter_add_``'s index type).
        """
        first, _ = tile_pairs(self._first[images], offset)
        _, a_q = tile_pairs(self.level_tiles[images], offset)
        combine = torch.add if self.joint else torch.sub
        if out is None:
            return combine(first, a_q).view(-1)
        out = out[: first.numel()].view(first.shape)
        combine(first, a_q, out=out)
        return out.view(-1)

    def run(
        self,
        offsets: Sequence[tuple[int, int]],
        per_chunk: Callable[[slice, slice], Callable],
        channels: int = 0,
        dtype: torch.dtype | None = None,
        out: torch.Tensor | None = None,
        wide: bool = True,
    ) -> None:
        """
        The chunk loop of the tile paths: for every chunk, ``per_offset = per_chunk(images, tiles)``, then
        for every offset ``o``, ``per_offset(o, offset, key, cells)``, with ``key`` the pairs' keys
        (:meth:`key`; int64 if ``wide``, else int32) and ``cells`` a zeroed accumulator
        ``(channels, tiles of the chunk * cells per tile)`` of ``dtype`` (one buffer reused; ``None`` without
        ``channels``). With ``out`` (``(O, n_tiles, k)``), ``per_offset`` returns the ``k`` columns of
        statistics of the chunk's tiles as a list of ``(tiles, k_c)`` tensors, written to ``out[o, tiles]``.
        """
        device = self._first.device
        buffer = None
        if channels:
            buffer = torch.empty(channels, self.chunk * self.tiles_per_image * self.n_cells, dtype=dtype, device=device)
        keys = torch.empty(self.chunk_pixels, dtype=torch.int64, device=device) if wide else None
        for images, tiles in self.chunks():
            n_chunk = tiles.stop - tiles.start
            per_offset = per_chunk(images, tiles)
            for o, offset in enumerate(offsets):
                key = self.key(offset, images, keys)
                cells = None if buffer is None else buffer[:, : n_chunk * self.n_cells].zero_()
                cols = per_offset(o, offset, key, cells)
                if out is not None:
                    torch.cat(cols, -1, out=out[o, tiles])


def difference_table(levels: int, names: Sequence[str], soft: bool) -> torch.Tensor:
    """
    Weights that turn per-window histograms over the level difference ``D = a_p - a_q`` into sums of the
    features linear in ``P`` (float64, ``((2L - 1) * C, len(names))``, row ``(D + L - 1) * C + c``).

    A pair with soft memberships ``(1 - t_p, t_p)`` on levels ``(a_p, a_p + 1)`` and ``(1 - t_q, t_q)``
    on ``(a_q, a_q + 1)`` adds to a feature with weight ``g(i - j)`` the amount

    .. math::

        g(D) + t_p (g(D+1) - g(D)) + t_q (g(D-1) - g(D)) + t_p t_q (2 g(D) - g(D+1) - g(D-1)),

    so the ``C = 4`` channels are the histograms of ``1``, ``t_p``, ``t_q`` and ``t_p t_q``; hard mode
    (``C = 1``) uses the first only.
    """
    d = torch.arange(-levels, levels + 1, dtype=torch.float64)
    g = torch.stack([LINEAR_WEIGHTS[f](d) for f in names], 1)  # g(D) for D in [-L, L]
    g0, gp, gm = g[1:-1], g[2:], g[:-2]  # g(D), g(D + 1), g(D - 1) for D in [-(L-1), L-1]
    if not soft:
        return g0
    return torch.stack((g0, gp - g0, gm - g0, 2 * g0 - gp - gm), 1).flatten(0, 1)


def joint_table(levels: int, names: Sequence[str], moments: bool) -> torch.Tensor:
    """
    Weights from the cells ``(i, j)`` of a joint matrix (row ``i * L + j``) to the sums of the features
    ``names`` (linear in ``P``, weight ``g(i - j)``) and, with ``moments``, of ``i``, ``j``, ``i^2`` and
    ``j^2``: float64, ``(L * L, len(names) + 4 * moments)``.
    """
    lv = torch.arange(levels, dtype=torch.float64)
    i, j = lv[:, None].expand(levels, levels).reshape(-1), lv[None, :].expand(levels, levels).reshape(-1)
    cols = [LINEAR_WEIGHTS[f](i - j) for f in names]
    if moments:
        cols += [i, j, i * i, j * j]
    return torch.stack(cols, 1) if cols else torch.zeros(levels * levels, 0, dtype=torch.float64)


def column_major(table: torch.Tensor) -> torch.Tensor:
    """
    The same ``(cells, k)`` matrix stored column by column, with zero columns appended up to 4 or to a
    multiple of 16: CPU BLAS multiplies ``(n, cells) @ table`` faster with these shapes than with the
    row-major ``k``-column table (figures in docs/dev/log.md). Multiply with :func:`times_table`.
    """
    k = table.shape[1]
    width = 4 if k <= 4 else -(-k // 16) * 16
    return F.pad(table, (0, width - k)).t().contiguous().t()


def times_table(m: torch.Tensor, table: torch.Tensor, k: int) -> torch.Tensor:
    """``m @ table[:, :k]`` for a table from :func:`column_major` (``k`` its columns before padding)."""
    return (m @ table)[:, :k]


def region_masks(
    offsets: Sequence[tuple[int, int]], window: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The in-tile regions of the first (column ``2 k``) and of the second (column ``2 k + 1``) pixels of the
    pairs of offset ``k`` (see :func:`tile_pairs`) are rectangles: their 0/1 row and column indicators,
    two ``(window, 2 * O)`` tensors.
    """
    rows = torch.zeros(window, 2 * len(offsets), dtype=dtype)
    cols = torch.zeros(window, 2 * len(offsets), dtype=dtype)
    for k, (dr, dc) in enumerate(offsets):
        kh, kw, c0 = window - dr, window - abs(dc), max(0, -dc)
        rows[:kh, 2 * k] = 1
        cols[c0 : c0 + kw, 2 * k] = 1
        rows[dr:, 2 * k + 1] = 1
        cols[c0 + dc : c0 + dc + kw, 2 * k + 1] = 1
    return rows.to(device), cols.to(device)


def region_sums(
    level_tiles: torch.Tensor, t_tiles: torch.Tensor | None, offsets: Sequence[tuple[int, int]], acc: torch.dtype
) -> torch.Tensor:
    """
    Per-tile sums over the first and over the second pixels of the pairs of every offset of

    .. math::

        c = i - i_0 \\ (\\text{soft: } a + t - (a_0 + t_0)), \\qquad
        E[c^2] = c^2 \\ (\\text{soft: } c^2 + t (1 - t)),

    ``i_0`` the level of the tile's top-left pixel: ``(2, n_tiles, 2 * O)``, the moments
    ``S_i, S_j, S_ii, S_jj`` of correlation without the joint matrices (one matmul with the masks of
    :func:`region_masks`).
    """
    n_img, nh, window, nw, _ = level_tiles.shape
    level_tiles = level_tiles.to(acc)
    mean_level = level_tiles if t_tiles is None else level_tiles + t_tiles
    centred = mean_level - mean_level[..., :1, :, :1]
    second = centred * centred
    if t_tiles is not None:
        second = second + t_tiles * (1 - t_tiles)
    rows, cols = region_masks(offsets, window, acc, level_tiles.device)
    # sum over the columns of each region (a matmul on the contiguous last dim), then over its rows
    out = [torch.einsum("nhwmr,wr->nhmr", v @ cols, rows).reshape(n_img * nh * nw, -1) for v in (centred, second)]
    return torch.stack(out)


def cell_stats(
    cells: torch.Tensor,
    table: torch.Tensor | None,
    n_table: int,
    n_pairs: int,
    *,
    centre: torch.Tensor | None = None,
    levels: int = 0,
    asm: bool = False,
    entropy: bool = False,
) -> list[torch.Tensor]:
    """
    The per-tile statistics of accumulated cells ``(tiles, cells)``, as columns: ``cells @ table``
    (``n_table`` columns, :func:`column_major`; none if 0), the centred moments about ``centre``
    (:func:`~monai_assim.glcm.features.centred_moments`; joint cells of ``levels`` levels), :math:`\\sum C^2`
    (``asm``) and the entropy of :math:`C / N_o` (``entropy``), ``N_o = n_pairs``.
    """
    cols = [times_table(cells, table, n_table)] if n_table else []
    if centre is not None:
        cols.append(centred_moments(cells, centre, levels))
    if asm:
        cols.append(torch.linalg.vecdot(cells, cells).unsqueeze(-1))
    if entropy:
        cols.append(entropy_of_counts(cells, n_pairs).unsqueeze(-1))
    return cols


def split_stats(
    stats: torch.Tensor,
    offsets: Sequence[tuple[int, int]],
    window: int,
    linear: Sequence[str],
    moments: bool,
    asm: bool,
    entropy: bool,
) -> list[dict[str, torch.Tensor]]:
    """
    Per offset, the features in the per-tile statistics ``(O, n_tiles, k)`` of the tile paths, whose
    columns are the pair sums of the ``linear`` features, then (``moments``) ``S_i, S_j, S_ii, S_jj``, then
    (``asm``) :math:`\\sum C^2`, then (``entropy``) the entropy; the sums are normalised by :math:`N_o`
    (:math:`N_o^2`).
    """
    out = []
    for o, offset in enumerate(offsets):
        k = n_pairs(offset, window)
        vals = {f: stats[o, :, c] / k for c, f in enumerate(linear)}
        col = len(linear)
        if moments:
            vals["moments"] = stats[o, :, col : col + 4].t()
            col += 4
        if asm:
            vals["asm"] = stats[o, :, col] / (k * k)
            col += 1
        if entropy:
            vals["entropy"] = stats[o, :, col]
        out.append(vals)
    return out


def hard_tile_stats(
    x: torch.Tensor,
    levels: int,
    offsets: Sequence[tuple[int, int]],
    window: int,
    nh: int,
    nw: int,
    joint: bool,
    names: Sequence[str],
    corr: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    Per-tile statistics of the hard co-occurrences of images ``x`` (``(N, H, W)``), the counterpart of
    :class:`~monai_assim.glcm.soft_tiles.SoftTileSums` with the same arguments and outputs.

    ``joint``: one ``scatter_add_`` of ones per pair into the joint counts ``C``, then ``C @ W`` with the
    weights of :func:`joint_table` (the linear features of ``names`` and, with ``corr``, the moments
    ``S_i, S_j, S_ii, S_jj``, exact since the counts are whole numbers), :math:`\\sum C^2` and the entropy.
    Otherwise the histograms over ``D = a_p - a_q`` times :func:`difference_table`, and with ``corr`` the
    region sums of :func:`region_sums`.

    Returns:
        ``(stats, region)``: ``(O, n_tiles, k)`` in the accumulation dtype (float64 where float32 sums would
        not be exact), and the region sums or ``None``.
    """
    linear = [f for f in names if f in LINEAR_WEIGHTS]
    # hard sums are whole numbers below window^2 (L - 1)^2: exact in float32 while that is below 2**24
    exact32 = window * window * (levels - 1) ** 2 < 2**24
    acc = x.dtype if (x.dtype == torch.float64 or exact32) else torch.float64
    level = torch.floor(x.detach() * levels).clamp_(0, levels - 1)  # quantize(), kept as floats
    chunks = TileChunks(level.to(torch.int32), levels, window, nh, nw, joint)
    region = None
    if joint:
        table = joint_table(levels, linear, corr)
    else:
        table = difference_table(levels, linear, False)
        region = region_sums(tiled(level, window, nh, nw), None, offsets, acc) if corr else None
    n_table = table.shape[1]
    table = column_major(table.to(device=x.device, dtype=acc))
    asm, entropy = "asm" in names, "entropy" in names
    stats = torch.empty(len(offsets), chunks.n_tiles, n_table + asm + entropy, dtype=acc, device=x.device)
    ones = torch.ones(chunks.chunk_pixels, dtype=acc, device=x.device)

    def per_chunk(images, tiles):
        def per_offset(o, offset, key, cells):
            cells = cells[0].scatter_add_(0, key, ones[: key.numel()]).view(-1, chunks.n_cells)
            return cell_stats(cells, table, n_table, n_pairs(offset, window), asm=asm, entropy=entropy)

        return per_offset

    chunks.run(offsets, per_chunk, channels=1, dtype=acc, out=stats)
    return stats, region
