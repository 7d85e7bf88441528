"""The old import path of :mod:`monai_assim.robustness.results`, kept for existing code (docs/architecture.md, "Changelog")."""

from monai_assim.robustness.results import (
    PER_IMAGE_COLUMNS,
    RESULT_COLUMNS,
    WORST,
    load_per_image_rows,
    load_robustness_rows,
    per_image_path,
    worst_case_correct,
    write_per_image,
    write_results,
)

__all__ = [
    "load_per_image_rows",
    "load_robustness_rows",
    "PER_IMAGE_COLUMNS",
    "per_image_path",
    "RESULT_COLUMNS",
    "WORST",
    "worst_case_correct",
    "write_per_image",
    "write_results",
]
