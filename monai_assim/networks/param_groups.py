"""Optimiser parameter groups that give the texture and colour modules their own learning rate."""

from __future__ import annotations

from torch import nn

from monai_assim.utils import unwrap_module

__all__ = ["ASSIMILATION_PREFIXES", "param_groups"]

#: state-dict prefixes of the assimilation modules T and C inside an AssimilationNet
ASSIMILATION_PREFIXES = ("texture.", "color.")


def param_groups(network: nn.Module, lr: float, assimilation_lr: float | None = None) -> list[dict]:
    """
    Parameter groups for a ``torch.optim`` optimiser:

    - ``{"name": "backbone", "params": <every other parameter>, "lr": lr}`` (backbone and head);
    - ``{"name": "assimilation", "params": <the parameters of T and C>, "lr": assimilation_lr}``,
      ``assimilation_lr = lr`` when ``None`` (then the optimiser behaves as with ``network.parameters()``).

    The group of T and C is left out when the network has none (a vanilla
    :class:`~monai_assim.networks.AssimilationNet`, or any other network). ``network`` may be wrapped in
    ``DataParallel`` / ``DistributedDataParallel`` or ``torch.compile``. Frozen parameters stay in their
    group, as with ``network.parameters()`` (an optimiser skips parameters without gradients).

    Why: T and C start at (or near) the identity and are 820 parameters among millions; at the backbone's
    fine-tuning learning rate (1e-4) a few hundred Adam steps move them by about one grey level, see
    ``docs/networks.md``.

    Example:
        ``torch.optim.Adam(param_groups(net, 1e-4, 1e-2))``
    """
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    if assimilation_lr is not None and assimilation_lr <= 0:
        raise ValueError(f"assimilation_lr must be > 0 or None, got {assimilation_lr}.")
    backbone, assimilation = [], []
    for name, param in unwrap_module(network).named_parameters():
        (assimilation if name.startswith(ASSIMILATION_PREFIXES) else backbone).append(param)
    groups = [{"name": "backbone", "params": backbone, "lr": float(lr)}]
    if assimilation:
        groups.append(
            {
                "name": "assimilation",
                "params": assimilation,
                "lr": float(lr if assimilation_lr is None else assimilation_lr),
            }
        )
    return groups
