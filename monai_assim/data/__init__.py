"""Data: public data set layouts, discovery and splits, synthetic demo sets, the loading pipeline."""

from .layouts import IMAGE_SUFFIXES, LAYOUTS, MODALITIES, DatasetLayout, get_layout
from .readable import ERROR_KEY, SOURCE_KEY, ReadableDataset, require_readable, split_readable
from .splits import (
    SPLITS,
    DatalistPlan,
    build_datalists,
    check_image,
    class_counts,
    discover_images,
    is_image_file,
    is_mask,
    plan_datalists,
    write_datalists,
)
from .synthetic import make_synthetic_dataset
from .transforms import image_transforms, spatial_size, squeeze_to_2d, to_grey_unit

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "MODALITIES",
    "SPLITS",
    "DatalistPlan",
    "DatasetLayout",
    "ERROR_KEY",
    "ReadableDataset",
    "SOURCE_KEY",
    "build_datalists",
    "check_image",
    "class_counts",
    "discover_images",
    "get_layout",
    "image_transforms",
    "is_image_file",
    "is_mask",
    "make_synthetic_dataset",
    "plan_datalists",
    "spatial_size",
    "squeeze_to_2d",
    "require_readable",
    "split_readable",
    "to_grey_unit",
    "write_datalists",
]
