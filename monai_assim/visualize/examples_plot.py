"""The paper's "intermediate result" panel: test images as they are and as trained T and C assimilate them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["plot_examples"]


def _assimilate(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    fn = getattr(net, "assimilate", None)
    return fn(x) if fn is not None else net(x)


def plot_examples(
    images: torch.Tensor,
    networks: Mapping[str, nn.Module],
    output_path: str | Path,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    notes: Mapping[str, str] | None = None,
) -> Path:
    """
    Save a grid of example images: the originals on the first row, then one row per network showing its
    assimilated RGB image ``C(T(x))``.

    Args:
        images: ``(N, 1, H, W)`` on [0, 1].
        networks: row title -> an :class:`~monai_assim.networks.AssimilationNet` (its ``assimilate``), or a
            module mapping ``(N, 1, H, W)`` to ``(N, 3, H, W)`` such as
            :func:`~monai_assim.transforms.load_assimilation_modules`'s ``T, C`` pair.
        output_path: the PNG to write.
        labels: optional column titles (e.g. the class of each image).
        title: optional figure title.
        notes: optional row title -> a second line under the row title (e.g. how far the row moved).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}.")
    rows = [("original", images.repeat(1, 3, 1, 1))]
    with torch.no_grad():
        for name, net in networks.items():
            param = next(net.parameters(), None)
            device = param.device if param is not None else images.device
            rows.append((name, _assimilate(net, images.to(device)).float().cpu().clamp(0, 1)))
    n = images.shape[0]
    fig, axes = plt.subplots(
        len(rows), n, figsize=(2.2 * n + 1.0, 2.3 * len(rows) + (0.4 if title else 0)), squeeze=False
    )
    for i, (name, batch) in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            ax.imshow(batch[j].permute(1, 2, 0).numpy(), vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                note = (notes or {}).get(name)
                ax.set_ylabel(name + (f"\n{note}" if note else ""), fontsize=8)
            if i == 0 and labels is not None:
                ax.set_title(labels[j], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    output_path = Path(output_path)
    fig.savefig(output_path, dpi=100)
    plt.close(fig)
    return output_path
