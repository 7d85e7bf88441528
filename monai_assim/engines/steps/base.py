"""What every training step shares: the objective (the one CE / GLCM choice) and the step's view of the engine."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from monai.utils.enums import StrEnum
from torch import nn

from monai_assim.losses.assimilation_loss import AssimilationLoss
from monai_assim.networks.assimilation_net import AssimilationNet
from monai_assim.utils import as_class_indices

__all__ = ["AssimilationKeys", "Objective", "StepContext", "StepResult", "accuracy", "class_indices"]

#: what a step returns: the prediction stored as ``pred``, the loss to back-propagate, the detached terms to log
StepResult = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


class AssimilationKeys(StrEnum):
    """Keys of the two loss terms that every step adds to ``engine.state.output``."""

    LOSS_CE = "loss_ce"
    LOSS_GLCM = "loss_glcm"


class Objective:
    r"""
    The trainer's loss on one batch, chosen once for every mode:

    - an :class:`~monai_assim.losses.AssimilationLoss` and an assimilated
      :class:`~monai_assim.networks.AssimilationNet`: :math:`\alpha\,\mathrm{CE} + (1-\alpha)\,\mathrm{GLCM}(C(T(x_{in})), x)`
      (``x`` the CLEAN image; :attr:`weight` is :math:`\alpha`);
    - an AssimilationLoss with any other network: the loss's own cross-entropy term alone;
    - any other ``loss_function(pred, label)``: that loss.

    Calling it returns ``(loss, {"loss_ce", "loss_glcm"})``, the terms detached (``loss_glcm`` is 0 without
    the GLCM term), computed in float32.
    """

    def __init__(self, loss_function: Any, network: nn.Module) -> None:
        self.loss_function = loss_function
        assimilation = isinstance(loss_function, AssimilationLoss)
        self.with_glcm = assimilation and isinstance(network, AssimilationNet) and network.variant == "assimilated"
        self.weight = float(loss_function.alpha) if self.with_glcm else 1.0
        self._ce = loss_function.cross_entropy if assimilation else loss_function

    def __call__(
        self, logits: torch.Tensor, y: torch.Tensor, rgb: torch.Tensor | None, x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = logits.float()
        if self.with_glcm:
            loss, terms = self.loss_function.terms(logits, y, rgb.float(), x)
            return loss.mean(), {AssimilationKeys.LOSS_CE: terms["ce"], AssimilationKeys.LOSS_GLCM: terms["glcm"]}
        loss = self._ce(logits, y).mean()
        ce = loss.detach()
        return loss, {AssimilationKeys.LOSS_CE: ce, AssimilationKeys.LOSS_GLCM: torch.zeros_like(ce)}


@dataclass(frozen=True)
class StepContext:
    """
    What a step may use of the engine, and nothing else.

    Attributes:
        network: the model itself (unwrapped from DDP / ``torch.compile``), the attacks' target.
        forward: the training forward of a batch through the engine's inferer (train mode):
            ``(logits, C(T(x)) or None)``, the assimilated image only when the objective needs it.
        objective: the :class:`Objective`.
        amp: a context manager for the forward passes (autocast, or nothing); the loss runs outside it.
    """

    network: nn.Module
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    objective: Objective
    amp: Callable[[], AbstractContextManager]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of ``argmax(logits) == labels``, detached."""
    return (logits.detach().argmax(1) == labels).float().mean()


def class_indices(network: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """
    Class-index labels of ``y`` (indices or one-hot) without a forward pass: the class count is the
    network's ``num_classes`` (an AssimilationNet), else a one-hot ``y``'s width, else one above the
    largest label.
    """
    classes = getattr(network, "num_classes", None)
    if classes is None:
        classes = int(y.shape[1]) if y.ndim == 2 and y.shape[1] > 1 else int(y.max()) + 1
    return as_class_indices(y, max(int(classes), 2))
