"""Ignite/MONAI engines for domain assimilation."""

from monai_assim.engines.adversarial_training import (
    ADVERSARIAL_TRAINING_MODES,
    ONE_STEP_MODES,
    AdversarialKeys,
    fgsm_perturb,
    pgd_perturb,
    trades_kl,
)
from monai_assim.engines.assimilation_trainer import (
    AssimilationKeys,
    AssimilationTrainer,
    assimilation_output_transform,
)
from monai_assim.engines.collapse_guard import CollapseGuard
from monai_assim.engines.overfitting_guard import CatastrophicOverfittingGuard
from monai_assim.engines.schedules import LR_SCHEDULES, EpsWarmup, lr_scheduler
from monai_assim.engines.selection import SELECT_BY, EpochSelection, selection_score
from monai_assim.engines.steps import STEPS, make_step

__all__ = [
    "AssimilationTrainer",
    "AssimilationKeys",
    "assimilation_output_transform",
    "ADVERSARIAL_TRAINING_MODES",
    "ONE_STEP_MODES",
    "AdversarialKeys",
    "STEPS",
    "make_step",
    "fgsm_perturb",
    "pgd_perturb",
    "trades_kl",
    "SELECT_BY",
    "EpochSelection",
    "selection_score",
    "CollapseGuard",
    "CatastrophicOverfittingGuard",
    "LR_SCHEDULES",
    "EpsWarmup",
    "lr_scheduler",
]
