"""The standard training step: one forward on the batch, the trainer's objective."""

from __future__ import annotations

import torch

from monai_assim.engines.steps.base import StepContext, StepResult

__all__ = ["StandardStep"]


class StandardStep:
    """Plain (or domain-assimilation) training: ``pred`` = the logits of ``x``, loss = the objective."""

    mode = "none"

    def __call__(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        with ctx.amp():
            logits, rgb = ctx.forward(x)
        loss, terms = ctx.objective(logits, y, rgb, x)
        return logits, loss, terms
