"""The old import path of :mod:`monai_assim.robustness.stats` and the paired tests of :mod:`monai_assim.robustness.compare`, kept for existing code (docs/architecture.md, "Changelog")."""

from monai_assim.robustness.compare import PER_IMAGE_COLUMNS, paired_flips, read_per_image
from monai_assim.robustness.stats import aggregate_over_seeds, mcnemar_exact

__all__ = ["aggregate_over_seeds", "mcnemar_exact", "paired_flips", "PER_IMAGE_COLUMNS", "read_per_image"]
