"""What T and C share: a residual of the grey image, its start, and the output map onto [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

from monai_assim.networks.output_map import OUTPUT_MAPS, check_output_map, map_output, saturated

__all__ = ["INITS", "ResidualMap", "check_init"]

#: start of T and C: ``"identity"`` (zero last layer) or ``"random"`` (small random last layer)
INITS = ("identity", "random")


def check_init(init: str) -> str:
    """``init`` when it is one of :data:`INITS`, else a ``ValueError`` naming the choices."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}.")
    return init


class ResidualMap(nn.Module):
    r"""
    Base of the texture and colour modules:

    .. math::

        M(x) = \mathrm{map}\big(x, r(x)\big)

    where the subclass builds the residual ``r`` as ``self.residual`` and defines :meth:`delta`
    (``r(x)`` with its output channels), and ``map`` is the output map (``"sigmoid"``, the default,
    ``"clamp"``: :math:`\operatorname{clip}_{[0,1]}(x + r)`, ``"clamp_st"``: the clamp, whose gradient
    passes straight through while the module trains, or ``"clamp_return"``: the clamp, whose gradient
    pulls values pushed out back while the module trains; see :mod:`monai_assim.networks.output_map`).
    The last layer of ``r`` starts at zero (``init="identity"``: ``M`` is the identity, or grey
    replication, up to the sigmoid map's 0.1% margin) or with weights drawn from
    ``N(0, random_std^2)`` (``init="random"``; 4 ``random_std`` under the sigmoid map, whose slope at
    mid-grey is 1/4, so that mid-grey pixels move as far), its bias at zero. Inputs are ``(B, 1, H, W)``.

    The map is recorded in the state dict (buffer ``output_map_id``), so a checkpoint cannot be loaded
    into a module with another map by mistake; a checkpoint without the buffer was written before the
    maps were recorded and holds the clamp map.
    """

    #: the name used in error messages
    label: str = "module"
    #: pass the map's gradient straight through (BPDA check), see :func:`~monai_assim.networks.straight_through_maps`
    straight_through_map: bool = False

    def _setup(self, init: str, random_std: float, output_map: str) -> None:
        """Record the output map and initialise the last layer of ``self.residual`` as ``init`` asks."""
        self.output_map = check_output_map(output_map)
        self.register_buffer("output_map_id", torch.tensor(OUTPUT_MAPS.index(output_map)))
        last = self.residual[-1]
        if init == "random":
            # the sigmoid's slope at mid-grey is 1/4: a residual 4 times larger moves mid-grey pixels as far
            nn.init.normal_(last.weight, 0.0, random_std * (4.0 if output_map == "sigmoid" else 1.0))
        else:
            nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + "output_map_id"
        recorded = int(state_dict[key]) if key in state_dict else OUTPUT_MAPS.index("clamp")
        if recorded != OUTPUT_MAPS.index(self.output_map):
            written = OUTPUT_MAPS[recorded] if 0 <= recorded < len(OUTPUT_MAPS) else f"id {recorded}"
            error_msgs.append(
                f"{self.label} ({prefix.rstrip('.') or 'root'}): the checkpoint was trained with the {written!r} output map, "
                f"this module has {self.output_map!r}; build it with output_map={written!r} "
                f"(bundle setting --assimilation_map {written})."
            )
        state_dict = dict(state_dict)
        state_dict[key] = torch.tensor(recorded)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and (x.ndim != 4 or x.shape[1] != 1):
            raise ValueError(f"{self.label} expects a (B, 1, H, W) grey image, got shape {tuple(x.shape)}.")
        return map_output(x, self.delta(x), self.output_map, self.straight_through_map, self.training)

    def saturated(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the output values the map saturates (see :func:`~monai_assim.networks.saturation`)."""
        return saturated(x, self.delta(x), self.output_map).expand(-1, self._channels, -1, -1)

    _channels: int = 1

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The residual ``r(x)``, ``(B, 1, H, W)`` -> ``(B, channels, H, W)``."""
        raise NotImplementedError
