"""
The soft tile path: per-tile statistics of soft co-occurrences as one ``torch.autograd.Function`` with a
hand-written backward.

Every pixel has memberships ``(u, t) = (1 - t, t)`` on levels ``(a, a + 1)``
(:func:`~monai_assim.glcm.quantization.soft_lower_bin`), so the unnormalised joint matrix of a tile is

.. math::

    C = \\sum_{\\text{pairs}} m(p)\\, m(q)^T, \\qquad
    m(p) = u_p e_{a_p} + t_p e_{a_p + 1},

bilinear in ``(t_p, t_q)``. With :math:`G = \\partial \\ell / \\partial C` and ``k`` the pair's corner
``(a_p, a_q)``,

.. math::

    \\frac{\\partial \\ell}{\\partial t_p} = G_p[k] + t_q G_x[k], \\qquad
    \\frac{\\partial \\ell}{\\partial t_q} = G_q[k] + t_p G_x[k],

:math:`G_p[i, j] = G[i+1, j] - G[i, j]`, :math:`G_q[i, j] = G[i, j+1] - G[i, j]`,
:math:`G_x[i, j] = G_p[i, j+1] - G_p[i, j]` (for the difference histograms, the gradients of their
``t_p``, ``t_q``, ``t_p t_q`` channels), and :math:`\\partial t / \\partial x = L / \\mathrm{width}` where the
ramp is not clamped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from monai_assim.glcm.features import LINEAR_WEIGHTS
from monai_assim.glcm.offsets import n_pairs
from monai_assim.glcm.tiles import (
    TileChunks,
    cell_stats,
    column_major,
    difference_table,
    joint_table,
    region_masks,
    region_sums,
    tile_pairs,
    tiled,
)

__all__ = ["SoftTileSums"]


def _stat_table(
    levels: int, names: Sequence[str], joint: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """
    Weights from the joint cells (:func:`~monai_assim.glcm.tiles.joint_table`) or from the soft difference
    histograms (:func:`~monai_assim.glcm.tiles.difference_table`) to the linear features of ``names``.
    """
    linear = [f for f in names if f in LINEAR_WEIGHTS]
    if joint:
        table = joint_table(levels, linear, False)
    elif linear:
        table = difference_table(levels, linear, True)
    else:
        return None
    return table.to(device=device, dtype=dtype) if table.shape[1] else None


class _SoftTileState:
    """
    Per-pixel quantities of :class:`SoftTileSums` (no autograd), computed once in forward and kept for
    backward: the levels ``a`` and ramps ``t`` as tiles, and the chunks and keys (:class:`TileChunks`).
    """

    def __init__(self, x, levels, width, window, nh, nw, joint):
        x = x.detach()
        self.levels, self.width = levels, width
        # soft_lower_bin without autograd, in few passes over the image: edge = clamp(round(x L), 1, L - 1),
        # a = edge - 1, ramp = (x L - edge) / width + 1/2 (unclamped, kept for dt/dx), t = clamp(ramp, 0, 1)
        scaled = x * levels
        edge = torch.round(scaled).clamp_(1, levels - 1)
        self.ramp = scaled.sub_(edge)
        if width != 1.0:
            self.ramp.div_(width)
        self.ramp.add_(0.5)
        lower = edge.sub_(1)
        self.lower_tiles = tiled(lower, window, nh, nw)  # the levels, as floats
        self.t_tiles = tiled(self.ramp.clamp(0.0, 1.0), window, nh, nw)
        self.chunks = TileChunks(lower.to(torch.int32), levels, window, nh, nw, joint)

    def centre(self, images: slice) -> torch.Tensor:
        """The level ``a`` of the top-left pixel of every tile of ``images``, flat (the moments' centre)."""
        return self.lower_tiles[images][:, :, 0, :, 0].reshape(-1)

    def slope(self) -> torch.Tensor:
        """``dt/dx``: ``levels / width`` where the ramp is not clamped (bounds included, as ``torch.clamp``'s gradient)."""
        inside = (self.ramp >= 0) & (self.ramp <= 1)
        return inside.to(self.ramp.dtype).mul_(self.levels / self.width)


class SoftTileSums(torch.autograd.Function):
    """
    Per-tile statistics of the soft co-occurrences of non-overlapping tiles, with a hand-written backward.

    Forward (no autograd graph), for every chunk of images and canonical offset (:meth:`TileChunks.run`),
    accumulates into one reused buffer either the joint matrices ``C`` (``joint``; a pair adds
    ``u_p u_q``, ``t_p u_q``, ``u_p t_q``, ``t_p t_q`` at ``(a_p, a_q)``, ``(a_p + 1, a_q)``,
    ``(a_p, a_q + 1)``, ``(a_p + 1, a_q + 1)``: one ``scatter_add_`` each, into shifted views of the
    buffer), or the histograms over ``D = a_p - a_q`` of ``1, t_p, t_q, t_p t_q``
    (:func:`~monai_assim.glcm.tiles.difference_table`), and reduces them at once
    (:func:`~monai_assim.glcm.tiles.cell_stats`) to the sums over pairs of the linear features of ``names``;
    with ``corr`` and ``joint``, the centred moments; ``asm``: :math:`\\sum C^2`; ``entropy``: of
    :math:`C / N_o`.

    Returns:
        ``(O, n_tiles, k)`` statistics and, with ``corr`` but not ``joint``, the region sums of
        :func:`~monai_assim.glcm.tiles.region_sums` (``(2, n_tiles, 2 O)``; otherwise an empty tensor).

    Backward turns the incoming gradient into ``G`` per chunk and offset,
    :math:`G = g_{lin} W^T + 2 g_{asm} C + g_{ent}\\, \\partial H / \\partial C` plus the moments' term, takes its
    three differences as shifted 1-D views, gathers them at every pair's key (see the module docstring) and
    adds the results in place into the first-pixel and second-pixel views of one gradient of ``t``, finally
    multiplied by ``dt/dx``. Double backward is not supported.
    """

    @staticmethod
    def forward(ctx, x, levels, width, offsets, window, nh, nw, joint, names, corr):
        ctx.set_materialize_grads(False)
        state = _SoftTileState(x, levels, width, window, nh, nw, joint)
        chunks = state.chunks
        lv, dtype, device = levels, x.dtype, x.device
        table = _stat_table(lv, names, joint, dtype, device)
        keep = ctx.needs_input_grad[0] and joint and ("asm" in names or "entropy" in names)
        n_cells = chunks.n_cells
        moments = corr and joint  # the moments of correlation from the joint matrices (4 columns)
        asm, entropy = "asm" in names, "entropy" in names
        n_table = 0 if table is None else table.shape[1]
        padded = None if table is None else column_major(table)
        n_stats = n_table + 4 * moments + asm + entropy
        stats = torch.empty(len(offsets), chunks.n_tiles, n_stats, dtype=dtype, device=device)
        saved = torch.empty(len(offsets), chunks.n_tiles, n_cells, dtype=dtype, device=device) if keep else None
        ones = None if joint else torch.ones(chunks.chunk_pixels, dtype=dtype, device=device)

        def per_chunk(images, tiles):
            t_tiles = state.t_tiles[images]
            u_tiles = 1 - t_tiles if joint else None
            centre = state.centre(images) if moments else None  # the same for every offset

            def per_offset(o, offset, key, buf):
                t_p, t_q = tile_pairs(t_tiles, offset)
                if not joint:
                    buf[0].scatter_add_(0, key, ones[: key.numel()])
                    buf[1].scatter_add_(0, key, t_p.reshape(-1))
                    buf[2].scatter_add_(0, key, t_q.reshape(-1))
                    buf[3].scatter_add_(0, key, (t_p * t_q).reshape(-1))
                    n_chunk = buf.shape[1] // n_cells
                    hist = buf.view(4, n_chunk, -1).permute(1, 2, 0).reshape(n_chunk, -1)  # (tiles, bins x channels)
                    return cell_stats(hist, padded, n_table, 0)
                u_p, u_q = tile_pairs(u_tiles, offset)
                buf = buf[0]
                buf.scatter_add_(0, key, (u_p * u_q).reshape(-1))  # cell (a_p, a_q)
                buf[lv:].scatter_add_(0, key, (t_p * u_q).reshape(-1))  # cell (a_p + 1, a_q)
                buf[1:].scatter_add_(0, key, (u_p * t_q).reshape(-1))  # cell (a_p, a_q + 1)
                buf[lv + 1 :].scatter_add_(0, key, (t_p * t_q).reshape(-1))  # cell (a_p + 1, a_q + 1)
                cells = buf.view(-1, n_cells)
                if keep:
                    saved[o, tiles] = cells
                k = n_pairs(offset, window)
                return cell_stats(cells, padded, n_table, k, centre=centre, levels=lv, asm=asm, entropy=entropy)

            return per_offset

        chunks.run(offsets, per_chunk, channels=1 if joint else 4, dtype=dtype, out=stats)
        if corr and not joint:  # with the joint matrices, the moments are among the stats
            region = region_sums(state.lower_tiles, state.t_tiles, offsets, dtype)
        else:
            region = torch.zeros(0, dtype=dtype, device=device)
        ctx.save_for_backward(x, *(() if saved is None else (saved,)))
        ctx.state = state if ctx.needs_input_grad[0] else None
        ctx.args = (levels, width, offsets, window, nh, nw, joint, names, corr)
        return stats, region

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_stats, grad_region):
        x, *saved = ctx.saved_tensors
        levels, _, offsets, window, nh, nw, joint, names, corr = ctx.args
        state = ctx.state
        lv = levels
        grad_t = torch.zeros_like(x)
        grad_tiles = tiled(grad_t, window, nh, nw)
        if grad_stats is not None:
            table = _stat_table(lv, names, joint, x.dtype, x.device)
            n_lin = 0 if table is None else table.shape[1]

            def per_chunk(images, tiles):
                t_tiles = state.t_tiles[images]
                grad_chunk = grad_tiles[images]
                d = d2 = None
                if corr and joint:  # the levels about the tiles' centres, d and d^2 (see centred_moments)
                    d = torch.arange(lv, dtype=x.dtype, device=x.device) - state.centre(images).unsqueeze(-1)
                    d2 = d * d

                def per_offset(o, offset, key, _):
                    k = n_pairs(offset, window)
                    g_stat = grad_stats[o, tiles]  # (tiles of the chunk, len(names))
                    # G = dloss / d(joint cells) or d(histogram bins), (tiles of the chunk, cells)
                    if table is not None:
                        g = g_stat[:, :n_lin] @ table.t()
                    else:
                        g = torch.zeros(g_stat.shape[0], lv * lv, dtype=x.dtype, device=x.device)
                    col = n_lin
                    if corr and joint:  # moments S_i, S_j, S_ii, S_jj
                        g_m = g_stat[:, col : col + 4]
                        g_rows = torch.addcmul(g_m[:, 0:1] * d, g_m[:, 2:3], d2)
                        g_cols = torch.addcmul(g_m[:, 1:2] * d, g_m[:, 3:4], d2)
                        g.view(-1, lv, lv).add_(g_rows.unsqueeze(-1)).add_(g_cols.unsqueeze(-2))
                        col += 4
                    if "asm" in names:
                        g.addcmul_(saved[0][o, tiles], 2 * g_stat[:, col : col + 1])
                        col += 1
                    if "entropy" in names:
                        p = saved[0][o, tiles] / k
                        dent = -(torch.log(torch.where(p > 0, p, torch.ones_like(p))) + (p > 0).to(p.dtype)) / k
                        g.addcmul_(dent, g_stat[:, col : col + 1])
                    t_p, t_q = tile_pairs(t_tiles, offset)
                    if joint:
                        # differences of G along rows, columns and both at the corners (flat shifted views;
                        # entries past a row or a tile are garbage but never gathered, as a_p, a_q <= L - 2)
                        g = g.view(-1)
                        m = g.numel()
                        diffs = torch.empty(3, m, dtype=g.dtype, device=g.device)
                        torch.sub(g[lv:], g[:-lv], out=diffs[0, : m - lv])
                        torch.sub(g[1:], g[:-1], out=diffs[1, : m - 1])
                        torch.sub(diffs[0, 1 : m - lv], diffs[0, : m - lv - 1], out=diffs[2, : m - lv - 1])
                    else:
                        diffs = g.view(-1, 4).t()[1:]  # channels t_p, t_q, t_p t_q, (3, tiles * (2L - 1))
                    g_p, g_q, g_x = (diffs[c].index_select(0, key).view(t_p.shape) for c in range(3))
                    first, second = tile_pairs(grad_chunk, offset)
                    first.add_(torch.addcmul(g_p, t_q, g_x))
                    second.add_(torch.addcmul(g_q, t_p, g_x))

                return per_offset

            state.chunks.run(offsets, per_chunk, wide=False)
        if corr and not joint and grad_region is not None:
            rows, cols = region_masks(offsets, window, grad_region.dtype, grad_region.device)
            g = grad_region.view(2, x.shape[0], nh, 1, nw, -1) * rows.view(window, 1, -1)
            g = g @ cols.t()  # (2, N, nH, window, nW, window): the layout of the tiles
            t_tiles = state.t_tiles
            mean_level = state.lower_tiles + t_tiles
            centred = mean_level - mean_level[..., :1, :, :1]  # the shift is a constant (detached)
            grad_tiles.add_(g[0] + g[1] * (2 * centred + 1 - 2 * t_tiles))
        return (grad_t.mul_(state.slope()),) + (None,) * 9
