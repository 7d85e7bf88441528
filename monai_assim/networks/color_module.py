"""The colour module C of domain assimilation: a learned grey-to-RGB colour map."""

from __future__ import annotations

import torch
from torch import nn

from monai_assim.networks.residual import ResidualMap, check_init

__all__ = ["ColorModule", "RANDOM_INIT_STD"]

#: std of the last layer's weights with ``init="random"``
RANDOM_INIT_STD = 0.05


class ColorModule(ResidualMap):
    r"""
    Learnable colour module ``C``: a grey image in, an RGB image out.

    .. math::

        C(t)_c = \mathrm{map}\Big(t,\; b^{(2)}_c + \sum_{f=1}^{F} W^{(2)}_{c f}\,
        \mathrm{ReLU}\big(w^{(1)}_f t + b^{(1)}_f\big)\Big), \quad c \in \{R, G, B\}

    applied to every pixel ``t`` independently: ``C`` is a learned colour map (one RGB value per grey
    level, a continuous look-up table) and leaves the spatial texture to ``T``. It is the same function
    as two 1x1 convolutions, computed as two ``nn.Linear`` layers on the channel-last view, which is
    several times faster on CPU than 1x1 convolutions of a 1-channel image. The last layer is
    zero-initialised, so an untrained module replicates the grey image to the three channels exactly,
    which is what vanilla transfer learning feeds an ImageNet backbone (up to the sigmoid map's 0.1%
    margin). ``map`` is the output map, as for :class:`~monai_assim.networks.TextureModule`.

    With the default ``features=16`` the module has ``(16 + 16) + (3 * 16 + 3) = 83`` parameters.

    ``init="random"`` instead draws the last layer's weights :math:`W^{(2)}` from
    :math:`\mathcal{N}(0, \sigma_C^2)`, :math:`\sigma_C` = :data:`RANDOM_INIT_STD` (bias 0): the module
    starts as a random smooth colour map (grey levels tinted differently per channel, a mean chroma of
    the order of 0.05-0.1 on [0, 1]) instead of grey replication.

    Args:
        features: number of hidden units ``F``.
        init: ``"identity"`` (zero last layer, grey replication; the default) or ``"random"``; drawn from
            torch's global generator, so ``monai.utils.set_determinism`` fixes it.
        output_map: ``"sigmoid"`` (the default), ``"clamp"``, ``"clamp_st"`` or ``"clamp_return"``, see
            :mod:`monai_assim.networks.output_map`.

    Shapes:
        input ``(B, 1, H, W)`` on [0, 1]; output ``(B, 3, H, W)`` on [0, 1].
    """

    def __init__(self, features: int = 16, init: str = "identity", output_map: str = "sigmoid") -> None:
        super().__init__()
        self.init = check_init(init)
        if features < 1:
            raise ValueError(f"features must be a positive integer, got {features}.")
        self.residual = nn.Sequential(nn.Linear(1, features), nn.ReLU(inplace=True), nn.Linear(features, 3))
        self._setup(self.init, RANDOM_INIT_STD, output_map)

    label = "ColorModule"

    _channels = 3

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The residual of the colour map, ``(B, 1, H, W)`` -> ``(B, 3, H, W)``."""
        return self.residual(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
