"""The old import path of :mod:`monai_assim.robustness.stats`, kept for existing code (docs/architecture.md, "Changelog")."""

from monai_assim.robustness.stats import (
    PER_IMAGE_COLUMNS,
    aggregate_over_seeds,
    mcnemar_exact,
    paired_flips,
    read_per_image,
)

__all__ = ["aggregate_over_seeds", "mcnemar_exact", "paired_flips", "PER_IMAGE_COLUMNS", "read_per_image"]
