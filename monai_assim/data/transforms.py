"""
The image-loading pipeline: a file path in, a grey ``(1, H, W)`` float32 MetaTensor on [0, 1] out.

MONAI's readers all return the first spatial axis as the image's x (column) axis: ``PILReader``
swaps PIL's row-major array by default (``reverse_indexing=True``), ``ITKReader`` transposes ITK's
array view and ``NibabelReader`` returns NIfTI's ``(i, j)`` voxel order. The pipeline therefore
keeps MONAI's suffix-based reader choice and transposes the two spatial axes once, so that axis 1
is the row (top to bottom) and axis 2 the column (left to right), exactly as PIL decodes a PNG/JPEG
(and as ITK's array view shows a DICOM slice).

The bundles' configs (``bundles/common/*.json``, ``"preprocessing"``) spell out the same list of
transform classes in JSON, so that a user can read and edit it there; :func:`image_transforms` builds
it in Python for scripts and the study, and a test checks that both give identical tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    RandRotated,
    RandZoomd,
    Resized,
    Transposed,
)

from monai_assim.transforms.grey_unit import ToGreyUnit, ToGreyUnitd
from monai_assim.transforms.squeeze_2d import SqueezeTo2D, SqueezeTo2Dd

__all__ = ["image_transforms", "spatial_size", "squeeze_to_2d", "to_grey_unit"]


def squeeze_to_2d(img):
    """:class:`monai_assim.transforms.SqueezeTo2D` as a function: ``(C, X, Y, 1, ...)`` -> ``(C, X, Y)``."""
    return SqueezeTo2D()(img)


def to_grey_unit(img):
    """:class:`monai_assim.transforms.ToGreyUnit` as a function: ``(C, H, W)`` -> ``(1, H, W)`` float32 on [0, 1]."""
    return ToGreyUnit()(img)


def spatial_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """
    ``(H, W)`` of an image size given as an int (square) or a pair, the ``spatial_size`` of the
    pipeline's ``Resized``; ``ValueError`` naming the value unless both are positive ints.
    """
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}.")
    return int(size[0]), int(size[1])


def image_transforms(
    image_size: int | Sequence[int] = 224,
    keys: KeysCollection = ("image",),
    augment: bool = False,
    allow_missing_keys: bool = False,
) -> Compose:
    """
    The dictionary pipeline that reads each image of ``keys`` (a file path) and gives a float32
    MetaTensor ``(1, H, W)`` on [0, 1] with ``(H, W) = image_size``, the right way up.

    Steps: ``LoadImaged`` (native dtype; PNG/JPEG via PIL, DICOM via ITK, NIfTI via nibabel) ->
    ``EnsureChannelFirstd`` -> :class:`~monai_assim.transforms.SqueezeTo2Dd` (a DICOM slice's
    one-slice volume and 3D metadata to 2D) -> ``Transposed`` (MONAI's (x, y) to (row, column), see
    the module docstring) -> :class:`~monai_assim.transforms.ToGreyUnitd` -> ``Resized`` (bilinear,
    anti-aliased when shrinking) -> optionally a mild geometric augmentation (rotation up to 10
    degrees and zoom 0.9-1.1, each with probability 0.5; no flips, as laterality is meaningful in
    medical images) -> ``EnsureTyped``. Other keys of the data dictionary (e.g. ``"label"``) are
    passed through untouched. The bundles' ``"preprocessing"`` sections are this list in JSON.

    Args:
        image_size: output size, an int for a square image or ``(H, W)``.
        keys: keys of the image paths.
        augment: add the random geometric augmentation (training only).
        allow_missing_keys: don't raise when a key is absent.
    """
    size = spatial_size(image_size)
    amk = allow_missing_keys
    xforms = [
        LoadImaged(keys, dtype=None, image_only=True, allow_missing_keys=amk),
        EnsureChannelFirstd(keys, allow_missing_keys=amk),
        SqueezeTo2Dd(keys, allow_missing_keys=amk),
        Transposed(keys, indices=(0, 2, 1), allow_missing_keys=amk),
        ToGreyUnitd(keys, allow_missing_keys=amk),
        Resized(keys, spatial_size=size, mode="bilinear", anti_aliasing=True, allow_missing_keys=amk),
    ]
    if augment:
        xforms += [
            RandRotated(keys, range_x=np.pi / 18, prob=0.5, padding_mode="border", allow_missing_keys=amk),
            RandZoomd(keys, min_zoom=0.9, max_zoom=1.1, prob=0.5, allow_missing_keys=amk),
        ]
    xforms.append(EnsureTyped(keys, dtype=torch.float32, track_meta=True, allow_missing_keys=amk))
    return Compose(xforms)
