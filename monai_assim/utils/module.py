"""Reaching the user's ``nn.Module`` through the wrappers that training puts around it."""

from __future__ import annotations

from torch import nn

__all__ = ["unwrap_module"]


def unwrap_module(network: nn.Module, compiled: bool = True) -> nn.Module:
    """
    The user's module inside any nesting of ``nn.DataParallel``, ``DistributedDataParallel`` (their
    ``.module``) and ``torch.compile`` (its ``._orig_mod``) wrappers; ``network`` itself when it is not
    wrapped. Use it to read attributes of the user's class (``num_classes``, ``variant``) or to call it
    without the wrappers.

    Args:
        network: the module, wrapped or not.
        compiled: also look through ``torch.compile``. ``False`` stops at a compiled module, as
            ignite's ``Checkpoint`` (and MONAI's ``CheckpointLoader``) do, so that a state dict saved
            from the result loads back into the same compiled network.
    """
    while True:
        if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            network = network.module
        elif compiled and isinstance(network, nn.Module) and isinstance(getattr(network, "_orig_mod", None), nn.Module):
            network = network._orig_mod
        else:
            return network
