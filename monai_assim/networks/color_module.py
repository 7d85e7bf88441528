"""The colour module C of domain assimilation: a learned grey-to-RGB colour map."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ColorModule"]


class ColorModule(nn.Module):
    r"""
    Learnable colour module ``C``: a grey image in, an RGB image out.

    .. math::

        C(t)_c = \operatorname{clip}_{[0, 1]}\big(t + g_c(t)\big), \quad c \in \{R, G, B\}, \qquad
        g = \mathrm{conv}^{F \to 3} \circ \mathrm{ReLU} \circ \mathrm{conv}^{1 \to F}

    With the default ``kernel_size=1`` both convolutions are pointwise, so ``C`` is a learned colour
    map (one RGB value per grey level, like a look-up table) and leaves the spatial texture to ``T``.
    The last convolution is zero-initialised, so an untrained module replicates the grey image to the
    three channels exactly, which is what vanilla transfer learning feeds an ImageNet backbone.

    With the defaults (``features=16``, ``kernel_size=1``) the module has
    ``(16 + 16) + (3 * 16 + 3) = 83`` parameters.

    Args:
        features: number of hidden channels.
        kernel_size: odd spatial size of the first convolution (1: a pure colour map).

    Shapes:
        input ``(B, 1, H, W)`` on [0, 1]; output ``(B, 3, H, W)`` on [0, 1].
    """

    def __init__(self, features: int = 16, kernel_size: int = 1) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be a positive integer, got {features}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        self.residual = nn.Sequential(
            nn.Conv2d(1, features, kernel_size, padding=kernel_size // 2, padding_mode="replicate"),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, 3, 1),
        )
        last = self.residual[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and (x.ndim != 4 or x.shape[1] != 1):
            raise ValueError(f"ColorModule expects a (B, 1, H, W) grey image, got shape {tuple(x.shape)}.")
        return torch.clamp(x + self.residual(x), 0.0, 1.0)
