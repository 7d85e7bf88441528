"""
One training step per mode: ``step(ctx, x, y) -> (pred, loss, terms)``.

A new mode is one new file here with a class like :class:`StandardStep`, and one entry in :data:`STEPS`.
"""

from __future__ import annotations

from typing import Any

from monai_assim.engines.steps.base import AssimilationKeys, Objective, StepContext, StepResult, accuracy
from monai_assim.engines.steps.pgd import PGDStep
from monai_assim.engines.steps.standard import StandardStep
from monai_assim.engines.steps.trades import TradesStep

__all__ = [
    "STEPS",
    "AssimilationKeys",
    "Objective",
    "PGDStep",
    "StandardStep",
    "StepContext",
    "StepResult",
    "TradesStep",
    "accuracy",
    "make_step",
]

#: adversarial_training mode -> its step class
STEPS = {"none": StandardStep, "pgd": PGDStep, "trades": TradesStep}


def make_step(mode: str = "none", eps: float = 2 / 255, steps: int = 5, ratio: float = 1.0, beta: float = 6.0) -> Any:
    """The step of ``mode`` built from the trainer's settings (each step checks those it uses)."""
    mode = str(mode).lower()
    if mode not in STEPS:
        raise ValueError(f"adversarial_training must be one of {', '.join(STEPS)}, got {mode!r}.")
    pgd, trades = PGDStep(eps, steps, ratio), TradesStep(eps, steps, beta)  # every setting checked, whatever the mode
    return {"none": StandardStep(), "pgd": pgd, "trades": trades}[mode]
