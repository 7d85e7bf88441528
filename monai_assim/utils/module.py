"""Reaching the user's ``nn.Module`` through the wrappers that training puts around it, and its mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode", "unwrap_module"]


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


@contextmanager
def eval_mode(network: nn.Module) -> Iterator[nn.Module]:
    """
    Every submodule of ``network`` in eval mode; afterwards each submodule's ``training`` flag is restored
    as it was (not ``network.train()``, which would also unfreeze a BatchNorm the user froze). Unlike
    ``monai.networks.eval_mode`` it leaves gradients as they are, so attacks can run inside it.
    """
    flags = [(m, m.training) for m in network.modules()]
    network.eval()
    try:
        yield network
    finally:
        for m, flag in flags:
            m.training = flag
