"""How many classes a classifier predicts over an epoch: 1 means a constant classifier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from monai_assim.utils import output_tensor

__all__ = ["PredictedClassCount"]


class PredictedClassCount(Metric):
    """
    The number of distinct classes among the argmax predictions of an epoch (under DDP, over all
    processes). A model that predicts one class for every image scores 1: its accuracy, clean or
    adversarial, is the share of that class, not skill and not robustness.

    Args:
        num_classes: width of the logits.
        pred_key: key of the logits ``(B, num_classes)`` in the engine output (batched or decollated).
        output_transform: applied to ``engine.state.output`` first (default: identity).
    """

    def __init__(
        self,
        num_classes: int = 2,
        pred_key: str = "pred",
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(num_classes, bool) or int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.pred_key = pred_key
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._counts = torch.zeros(self.num_classes, dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        logits = output_tensor(output, self.pred_key)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected logits (B, {self.num_classes}), got {tuple(logits.shape)}.")
        pred = logits.argmax(dim=1).to(self._device)
        self._counts += torch.bincount(pred, minlength=self.num_classes).to(self._counts.dtype)

    def iteration_completed(self, engine: Any) -> None:
        """Pass the whole transformed output (a dict, or a decollated list of dicts) to :meth:`update`."""
        self.update(self._output_transform(engine.state.output))

    @sync_all_reduce("_counts")
    def compute(self) -> int:
        if float(self._counts.sum()) == 0:
            raise NotComputableError("PredictedClassCount must have at least one example before it can be computed.")
        return int((self._counts > 0).sum())
