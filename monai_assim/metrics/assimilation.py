"""
How far the assimilation modules moved: grey-level shift, chroma and GLCM term of ``C(T(x))`` against
``x``, as plain functions and as an Ignite metric for the bundles' trainer and evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from torch import nn

from monai_assim.losses.glcm_loss import GLCMLoss
from monai_assim.networks.output_map import saturation
from monai_assim.utils import LUMA_BT601, first_item, output_tensor, rgb_to_grey, unwrap_module

__all__ = [
    "MOVEMENT_KEYS",
    "AssimilationMovement",
    "assimilation_distances",
    "assimilation_movement",
    "chroma",
    "grey",
    "grey_level_map",
]

#: what ``glcm`` may be in :class:`AssimilationMovement` besides a loss: take ``loss_glcm`` from the output
FROM_OUTPUT = "output"


def grey(rgb: torch.Tensor, luma: Sequence[float] = LUMA_BT601) -> torch.Tensor:
    r"""
    :math:`\mathrm{gray}(v) = 0.299\, v_R + 0.587\, v_G + 0.114\, v_B` (ITU-R BT.601, the weights the GLCM
    loss uses): ``(B, 3, H, W)`` -> ``(B, 1, H, W)``; a 1-channel input is returned as it is.
    """
    if rgb.ndim != 4 or rgb.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 3, H, W) or (B, 1, H, W), got {tuple(rgb.shape)}.")
    if rgb.shape[1] == 1:
        return rgb
    return rgb_to_grey(rgb, luma)


def chroma(rgb: torch.Tensor) -> torch.Tensor:
    r"""
    Per-pixel distance from grey, :math:`\chi(v) = \sqrt{\tfrac{1}{3}\sum_{c \in \{R,G,B\}} (v_c - \mathrm{gray}(v))^2}`,
    ``(B, 3, H, W)`` -> ``(B, 1, H, W)``: 0 exactly when ``R = G = B``, in the units of the image ([0, 1]);
    e.g. pure red ``(1, 0, 0)`` gives :math:`\sqrt{(0.701^2 + 0.299^2 + 0.299^2)/3} = 0.4951`.
    """
    return (rgb - grey(rgb)).pow(2).mean(1, keepdim=True).sqrt()


def grey_level_map(x: torch.Tensor, y: torch.Tensor, bins: int = 64) -> torch.Tensor:
    r"""
    The best global grey-level map from ``x`` to ``y`` on ``bins`` bins of ``x``: each pixel of ``x`` is
    replaced by the mean of ``y`` over the pixels of its image whose ``x`` falls in the same bin,
    :math:`m(x)`. ``y - m(x)`` is what no per-image grey-level map explains (texture); ``m(x) - x`` is
    the part of the change a monotone or any other grey-level map (the freedom the GLCM term leaves,
    see ``docs/networks.md``) accounts for. Shapes ``(B, 1, H, W)`` -> ``(B, 1, H, W)``.
    """
    b = x.shape[0]
    idx = (x.clamp(0, 1) * (bins - 1)).round().long().flatten(1)  # (B, N)
    flat = y.flatten(1).to(torch.float64)
    sums = torch.zeros(b, bins, dtype=torch.float64, device=x.device).scatter_add_(1, idx, flat)
    counts = torch.zeros(b, bins, dtype=torch.float64, device=x.device).scatter_add_(1, idx, torch.ones_like(flat))
    means = sums / counts.clamp_min(1)
    return means.gather(1, idx).to(y.dtype).view_as(x)


def assimilation_distances(
    rgb: torch.Tensor, x: torch.Tensor, glcm_loss: nn.Module | None = None, bins: int = 64
) -> dict[str, torch.Tensor]:
    r"""
    Per-image distances of the assimilated image ``rgb = C(T(x))`` ``(B, 3, H, W)`` from the grey input
    ``x`` ``(B, 1, H, W)``, both on [0, 1], each of shape ``(B,)``:

    - ``grey_shift``: mean over pixels of :math:`|\mathrm{gray}(\mathrm{rgb}) - x|` (see :func:`grey`);
    - ``chroma``: mean over pixels of :func:`chroma` (distance from grey);
    - ``map_shift``: mean of :math:`|m(x) - x|`, the part of the grey shift a global grey-level map
      explains, and ``texture_shift``: mean of :math:`|\mathrm{gray}(\mathrm{rgb}) - m(x)|`, the rest
      (:func:`grey_level_map` with ``bins`` bins);
    - ``glcm``: ``glcm_loss(rgb, x)`` per image, when a loss (a :class:`GLCMLoss`, or an
      ``AssimilationLoss`` whose GLCM term is used) is given; its ``target_std`` normalisation uses the
      batch.
    """
    if x.ndim != 4 or x.shape[1] != 1 or rgb.ndim != 4 or rgb.shape[0] != x.shape[0] or rgb.shape[2:] != x.shape[2:]:
        raise ValueError(
            f"expected rgb (B, 3, H, W) and x (B, 1, H, W) of one size, got {tuple(rgb.shape)}, {tuple(x.shape)}."
        )
    rgb, x = rgb.float(), x.float()
    g = grey(rgb)
    m = grey_level_map(x, g, bins)
    out = {
        "grey_shift": (g - x).abs().flatten(1).mean(1),
        "chroma": chroma(rgb).flatten(1).mean(1) if rgb.shape[1] == 3 else torch.zeros(x.shape[0], device=x.device),
        "map_shift": (m - x).abs().flatten(1).mean(1),
        "texture_shift": (g - m).abs().flatten(1).mean(1),
    }
    if glcm_loss is not None:
        loss = getattr(glcm_loss, "glcm", glcm_loss)  # AssimilationLoss -> its GLCMLoss
        if not isinstance(loss, GLCMLoss):
            raise TypeError(f"glcm_loss must be a GLCMLoss or an AssimilationLoss, got {type(glcm_loss).__name__}.")
        reduction, loss.reduction = loss.reduction, "none"
        try:
            out["glcm"] = loss(rgb.clamp(0, 1), x.clamp(0, 1)).reshape(-1)
        finally:
            loss.reduction = reduction
    return out


#: what :func:`assimilation_movement` reports (means over the images; intensities on [0, 1])
MOVEMENT_KEYS = ("grey_shift", "map_shift", "texture_shift", "chroma", "glcm", "grey_correlation")


def assimilation_movement(modules: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    r"""
    How far trained T and C move images, and whether they use the freedom the GLCM loss leaves.

    With ``y = gray(C(T(x)))`` (BT.601 luma, what the GLCM loss sees) on ``images`` ``(N, 1, H, W)``, the
    means over the images of (see :func:`monai_assim.metrics.assimilation_distances`): ``grey_shift``
    :math:`|y - x|`; ``map_shift`` :math:`|m(x) - x|`, the part a global grey-level map :math:`m`
    explains (an inversion, a gamma curve, a shift); ``texture_shift`` :math:`|y - m(x)|`, the rest;
    ``chroma``, the distance from grey, which the GLCM loss cannot see (it reads only the luma);
    ``glcm``, the GLCM term (``GLCMLoss()``, the bundles' settings, ``target_std`` over these images);
    ``grey_correlation``, the Pearson correlation of ``y`` and ``x`` (-1: inverted grey levels, which the
    five GLCM features do not see either, see :func:`monai_assim.metrics.glcm_invariance`). A trained
    T/C uses the freedom when ``map_shift`` or ``chroma`` is large while ``glcm`` stays small.

    Args:
        modules: anything with ``assimilate(x)`` (an AssimilationNet) or a module ``(N, 1, H, W) -> (N, 3, H, W)``.
        images: ``(N, 1, H, W)`` on [0, 1].
    """
    param = next(modules.parameters(), None)
    x = images.float().to(param.device if param is not None else images.device)
    with torch.no_grad():
        rgb = modules.assimilate(x) if hasattr(modules, "assimilate") else modules(x)
        d = assimilation_distances(rgb, x, GLCMLoss())
        y, xf = grey(rgb.float()).flatten(1), x.flatten(1)
        yc, xc = y - y.mean(1, keepdim=True), xf - xf.mean(1, keepdim=True)
        d["grey_correlation"] = (yc * xc).sum(1) / (yc.norm(dim=1) * xc.norm(dim=1)).clamp_min(1e-12)
    return {k: float(d[k].mean()) for k in MOVEMENT_KEYS}


class AssimilationMovement(Metric):
    r"""
    Epoch means of :func:`assimilation_distances` of ``network.assimilate(x)`` over the images ``x`` of
    an engine's outputs: how far the texture and colour modules moved the images. ``compute()`` returns
    a dict, which Ignite stores flat in ``engine.state.metrics`` (so ``StatsHandler`` and
    ``TensorBoardStatsHandler`` log each entry):

    - ``<prefix>grey_shift``: mean :math:`|\mathrm{gray}(C(T(x))) - x|`;
    - ``<prefix>chroma``: mean distance of :math:`C(T(x))` from grey (:func:`chroma`);
    - ``<prefix>saturation_texture``, ``<prefix>saturation_color``: the fraction of output values of T
      and C that their output map saturates (:func:`~monai_assim.networks.saturation`: outside [0, 1]
      before the clamp, or where the sigmoid's slope has all but vanished; 0 for a vanilla network);
    - ``<prefix>glcm``: the GLCM term (only when ``glcm`` is given).

    all on the [0, 1] intensity scale (multiply by 255 for grey levels). A vanilla network gives 0 for the
    first two. ``network.assimilate`` is called without gradients after the engine's iteration (for a
    trainer: on the training batch, after the optimiser step).

    Args:
        network: an :class:`~monai_assim.networks.AssimilationNet` (DDP / ``torch.compile`` wrappers are
            unwrapped) or anything with ``assimilate(x)``.
        glcm: ``None`` (no GLCM entry), a :class:`~monai_assim.losses.GLCMLoss` or
            :class:`~monai_assim.losses.AssimilationLoss` to compute it with (``target_std`` uses the
            batch), or ``"output"`` to average the ``loss_glcm`` the
            :class:`~monai_assim.engines.AssimilationTrainer` already put in its output (no extra cost).
        prefix: prepended to the names, e.g. ``"train_"``, ``"val_"``.
        image_key: key of the grey images in the engine output.
        output_transform: applied to ``engine.state.output`` first (default: identity).

    Shapes:
        the images ``(B, 1, H, W)`` on [0, 1] (a decollated list of ``(1, H, W)`` is stacked).
    """

    def __init__(
        self,
        network: nn.Module,
        glcm: nn.Module | str | None = None,
        prefix: str = "",
        image_key: str = "image",
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(glcm, str) and glcm != FROM_OUTPUT:
            raise ValueError(f"glcm must be None, a loss or {FROM_OUTPUT!r}, got {glcm!r}.")
        self.network = network
        self.glcm = glcm
        self.prefix = prefix
        self.image_key = image_key
        super().__init__(output_transform=output_transform, device=device)

    def _names(self) -> list[str]:
        return ["grey_shift", "chroma", "saturation_texture", "saturation_color"] + (
            ["glcm"] if self.glcm is not None else []
        )

    @reinit__is_reduced
    def reset(self) -> None:
        self._sums = torch.zeros(5, dtype=torch.float64, device=self._device)
        self._num_examples = torch.zeros((), dtype=torch.float64, device=self._device)
        self._glcm_examples = torch.zeros((), dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        x = output_tensor(output, self.image_key).float()
        net = unwrap_module(self.network)
        param = next(net.parameters(), None)
        if param is not None:
            x = x.to(param.device)
        loss = self.glcm if isinstance(self.glcm, nn.Module) else None
        with torch.no_grad():
            rgb = net.assimilate(x)
            d = assimilation_distances(rgb, x, loss)
            sat = saturation(net, x)
        n = x.shape[0]
        self._sums[0] += float(d["grey_shift"].sum())
        self._sums[1] += float(d["chroma"].sum())
        self._sums[3] += sat.get("texture", 0.0) * n
        self._sums[4] += sat.get("color", 0.0) * n
        self._num_examples += n
        if loss is not None:
            self._sums[2] += float(d["glcm"].sum())
            self._glcm_examples += n
        elif self.glcm == FROM_OUTPUT:
            value = first_item(output).get("loss_glcm") if isinstance(first_item(output), Mapping) else None
            if value is not None:
                self._sums[2] += float(torch.as_tensor(value).detach().float().mean()) * n
                self._glcm_examples += n

    def iteration_completed(self, engine: Any) -> None:
        """Pass the whole transformed output (a dict, or a decollated list of dicts) to :meth:`update`."""
        self.update(self._output_transform(engine.state.output))

    @sync_all_reduce("_sums", "_num_examples", "_glcm_examples")
    def compute(self) -> dict[str, float]:
        n = float(self._num_examples)
        if n == 0:
            raise RuntimeError("AssimilationMovement must have at least one example before it can be computed.")
        out = {
            f"{self.prefix}grey_shift": float(self._sums[0]) / n,
            f"{self.prefix}chroma": float(self._sums[1]) / n,
            f"{self.prefix}saturation_texture": float(self._sums[3]) / n,
            f"{self.prefix}saturation_color": float(self._sums[4]) / n,
        }
        if self.glcm is not None:
            m = float(self._glcm_examples)
            out[f"{self.prefix}glcm"] = float(self._sums[2]) / m if m > 0 else float("nan")
        return out
