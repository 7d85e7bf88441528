"""The texture module T of domain assimilation: a light residual filter on the grey image."""

from __future__ import annotations

import torch
from torch import nn

from monai_assim.networks.residual import INITS, ResidualMap, check_init

__all__ = ["TextureModule", "INITS", "RANDOM_INIT_STD"]

#: std of the last convolution's weights with ``init="random"``
RANDOM_INIT_STD = 0.02


class TextureModule(ResidualMap):
    r"""
    Learnable texture module ``T``: a grey image in, a re-textured grey image out.

    .. math::

        T(x) = \mathrm{map}\big(x, f(x)\big), \qquad
        f = \mathrm{conv}_{L} \circ \mathrm{ReLU} \circ \cdots \circ \mathrm{ReLU} \circ \mathrm{conv}_{1}

    where every :math:`\mathrm{conv}_l` is a 3x3 convolution (``features`` channels between them,
    replicate padding so that the borders are not darkened). The last convolution is zero-initialised,
    so an untrained module is exactly the identity on [0, 1] images: training starts from plain
    transfer learning and moves away from it only where the loss asks for it.

    With the defaults (``features=8``, ``num_layers=3``) the module has
    ``(9 * 8 + 8) + (9 * 8 * 8 + 8) + (9 * 8 + 1) = 737`` parameters and costs 720 multiply-adds per
    pixel (about 2% of a ResNet18 forward at 224 x 224); it runs at full resolution, so the hidden width
    is kept small (``features=16``: 2,625 parameters, a measurably slower training step, see
    ``benchmarks/assimilation_overhead.py``).

    ``map`` is the output map (:mod:`monai_assim.networks.output_map`): by default
    :math:`\sigma(\operatorname{logit}(\tilde x) + f(x))`, smooth, with a gradient that is never exactly 0,
    so pixels pushed towards 0 or 1 are pulled back by training; ``output_map="clamp"`` is
    :math:`\operatorname{clip}_{[0, 1]}(x + f(x))`, whose gradient is 0 for every pixel pushed outside
    [0, 1] (the map of runs before the maps were recorded); ``output_map="clamp_st"`` is that clip whose
    gradient passes straight through while the module trains, ``output_map="clamp_return"`` that clip
    whose training gradient pulls pixels pushed outside [0, 1] back.

    ``init="random"`` instead draws the last convolution's weights from
    :math:`\mathcal{N}(0, \sigma_T^2)`, :math:`\sigma_T` = :data:`RANDOM_INIT_STD` (bias 0): the module then
    starts as a mild random filter (on chest X-rays a mean :math:`|T(x) - x|` of a few grey levels in 255)
    instead of the identity, as the paper's pictures of visibly re-textured images suggest.

    Args:
        features: number of channels of the hidden convolutions.
        num_layers: number of 3x3 convolutions (at least 2).
        init: ``"identity"`` (zero last layer, the default) or ``"random"`` (see above); drawn from
            torch's global generator, so ``monai.utils.set_determinism`` fixes it.
        output_map: ``"sigmoid"`` (the default), ``"clamp"``, ``"clamp_st"`` or ``"clamp_return"``, see above.

    Shapes:
        input ``(B, 1, H, W)`` on [0, 1]; output ``(B, 1, H, W)`` on [0, 1].
    """

    def __init__(
        self, features: int = 8, num_layers: int = 3, init: str = "identity", output_map: str = "sigmoid"
    ) -> None:
        super().__init__()
        self.init = check_init(init)
        if features < 1:
            raise ValueError(f"features must be a positive integer, got {features}.")
        if num_layers < 2:
            raise ValueError(f"num_layers must be at least 2, got {num_layers}.")
        channels = [1] + [features] * (num_layers - 1) + [1]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Conv2d(channels[i], channels[i + 1], 3, padding=1, padding_mode="replicate"))
            if i < num_layers - 1:
                layers.append(nn.ReLU(inplace=True))
        self.residual = nn.Sequential(*layers)
        self._setup(self.init, RANDOM_INIT_STD, output_map)

    label = "TextureModule"

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The residual :math:`f(x)`, ``(B, 1, H, W)``."""
        return self.residual(x)
