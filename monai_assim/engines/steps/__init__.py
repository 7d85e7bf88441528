"""
One training step per mode: ``step(ctx, x, y) -> (pred, loss, terms)``.

A new mode is one new file here with a class like :class:`StandardStep`, and one entry in :data:`STEPS`.
"""

from __future__ import annotations

from typing import Any

from monai_assim.engines.steps.base import AssimilationKeys, Objective, StepContext, StepResult, accuracy
from monai_assim.engines.steps.fgsm_rs import FGSMRSStep
from monai_assim.engines.steps.n_fgsm import NFGSMStep
from monai_assim.engines.steps.pgd import PGDStep
from monai_assim.engines.steps.standard import StandardStep
from monai_assim.engines.steps.trades import TradesStep

__all__ = [
    "STEPS",
    "AssimilationKeys",
    "FGSMRSStep",
    "NFGSMStep",
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
STEPS = {"none": StandardStep, "pgd": PGDStep, "trades": TradesStep, "fgsm_rs": FGSMRSStep, "n_fgsm": NFGSMStep}


def make_step(mode: str = "none", eps: float = 2 / 255, steps: int = 5, ratio: float = 1.0, beta: float = 6.0) -> Any:
    """The step of ``mode`` built from the trainer's settings (each step checks those it uses)."""
    mode = str(mode).lower()
    if mode not in STEPS:
        raise ValueError(f"adversarial_training must be one of {', '.join(STEPS)}, got {mode!r}.")
    built = {  # every setting checked, whatever the mode
        "none": StandardStep(),
        "pgd": PGDStep(eps, steps, ratio),
        "trades": TradesStep(eps, steps, beta),
        "fgsm_rs": FGSMRSStep(eps, ratio),
        "n_fgsm": NFGSMStep(eps, ratio),
    }
    return built[mode]
