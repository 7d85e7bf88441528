"""The old import path of :mod:`monai_assim.robustness.cost`, kept for existing code (docs/architecture.md, "Changelog")."""

from monai_assim.robustness.cost import (
    AttackCost,
    EvaluationCost,
    attack_passes,
    estimate_cost,
    format_duration,
)

__all__ = ["attack_passes", "AttackCost", "estimate_cost", "EvaluationCost", "format_duration"]
