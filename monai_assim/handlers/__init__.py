"""Ignite handlers of monai_assim."""

from monai_assim.handlers.adversarial_robustness import (
    DEFAULT_ATTACKS,
    RESULT_COLUMNS,
    AdversarialRobustnessHandler,
    eps_tag,
    robustness_metric_names,
)
from monai_assim.handlers.checkpoint import AtomicCheckpointSaver, atomic_torch_save

__all__ = [
    "AdversarialRobustnessHandler",
    "AtomicCheckpointSaver",
    "atomic_torch_save",
    "DEFAULT_ATTACKS",
    "RESULT_COLUMNS",
    "eps_tag",
    "robustness_metric_names",
]
