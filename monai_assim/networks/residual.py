"""What T and C share: a residual map of the grey image, its start, and the [0, 1] clamp at its end."""

from __future__ import annotations

import torch
from torch import nn

from monai_assim.networks.clamp import unit_clamp

__all__ = ["INITS", "ClampedResidual", "check_init"]

#: start of T and C: ``"identity"`` (zero last layer) or ``"random"`` (small random last layer)
INITS = ("identity", "random")


def check_init(init: str) -> str:
    """``init`` when it is one of :data:`INITS`, else a ``ValueError`` naming the choices."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}.")
    return init


class ClampedResidual(nn.Module):
    r"""
    Base of the texture and colour modules:

    .. math::

        M(x) = \operatorname{clip}_{[0, 1]}\big(x + r(x)\big)

    where the subclass builds the residual ``r`` as ``self.residual`` and defines :meth:`unclamped`
    (``x + r(x)``, broadcast to its output channels). The last layer of ``r`` starts at zero
    (``init="identity"``: ``M`` is the identity, or grey replication) or with weights drawn from
    ``N(0, random_std^2)`` (``init="random"``), its bias at zero. Inputs are ``(B, 1, H, W)``.
    """

    #: the name used in error messages
    label: str = "module"
    #: pass the clamp's gradient as the identity (BPDA check), see :func:`~monai_assim.networks.straight_through_clamps`
    straight_through_clamp: bool = False

    def _start(self, init: str, random_std: float) -> None:
        """Initialise the last layer of ``self.residual`` as ``init`` asks."""
        last = self.residual[-1]
        if init == "random":
            nn.init.normal_(last.weight, 0.0, random_std)
        else:
            nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and (x.ndim != 4 or x.shape[1] != 1):
            raise ValueError(f"{self.label} expects a (B, 1, H, W) grey image, got shape {tuple(x.shape)}.")
        return unit_clamp(self.unclamped(x), self.straight_through_clamp)

    def unclamped(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
