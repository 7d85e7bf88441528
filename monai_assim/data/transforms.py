"""
The image-loading pipeline: a file path in, a grey ``(1, H, W)`` float32 MetaTensor on [0, 1] out.

MONAI's readers all return the first spatial axis as the image's x (column) axis: ``PILReader``
swaps PIL's row-major array by default (``reverse_indexing=True``), ``ITKReader`` transposes ITK's
array view and ``NibabelReader`` returns NIfTI's ``(i, j)`` voxel order. The pipeline therefore
keeps MONAI's suffix-based reader choice and transposes the two spatial axes once, so that axis 1
is the row (top to bottom) and axis 2 the column (left to right), exactly as PIL decodes a PNG/JPEG
(and as ITK's array view shows a DICOM slice).
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
    Lambdad,
    LoadImaged,
    RandRotated,
    RandZoomd,
    Resized,
    Transposed,
)
from monai.utils import convert_to_tensor

from monai_assim.utils.image import LUMA_BT601

__all__ = ["LUMA_WEIGHTS", "image_transforms", "squeeze_to_2d", "to_grey_unit"]

#: the ITU-R BT.601 luma weights of (R, G, B), the same as PIL's ``convert("L")``; an alias of
#: :data:`monai_assim.utils.LUMA_BT601`, kept for existing imports.
LUMA_WEIGHTS = LUMA_BT601


def squeeze_to_2d(img):
    """
    Drop trailing singleton spatial axes of a channel-first image, ``(C, X, Y, 1, ...)`` ->
    ``(C, X, Y)`` (ITK reads a 2D DICOM slice as a one-slice volume); ``ValueError`` unless the
    result is 2D.
    """
    img_t = convert_to_tensor(img, track_meta=True)
    while img_t.ndim > 3 and img_t.shape[-1] == 1:
        img_t = img_t[..., 0]
    if img_t.ndim != 3:
        name = img_t.meta.get("filename_or_obj", "image") if hasattr(img_t, "meta") else "image"
        raise ValueError(f"{name}: expected a 2D image, got channel-first shape {tuple(img_t.shape)}.")
    return img_t


def to_grey_unit(img):
    """
    Convert a channel-first image ``(C, H, W)`` of any dtype to one grey channel ``(1, H, W)``,
    float32 on [0, 1].

    Channels: ``C == 1`` is kept; ``C == 2`` (grey + alpha) keeps channel 0; ``C >= 3`` (RGB, RGBA)
    gives the luma :math:`Y = 0.299 R + 0.587 G + 0.114 B` of the first three channels, which is
    the grey value itself for the RGB-stored grey images of the public sets (R = G = B).

    Intensities: ``uint8`` is divided by 255; ``bool`` is cast; any other dtype (16-bit PNG, DICOM,
    NIfTI) is min-max scaled per image, :math:`(x - \\min x) / (\\max x - \\min x)`, and a constant
    image becomes all zeros.
    """
    img_t = convert_to_tensor(img, track_meta=True)
    if img_t.ndim != 3:
        raise ValueError(f"expected a channel-first 2D image (C, H, W), got shape {tuple(img_t.shape)}.")
    dtype = img_t.dtype
    x = img_t.to(torch.float32)
    n_channels = x.shape[0]
    if n_channels >= 3:
        w = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(3, 1, 1)
        x = (x[:3] * w).sum(dim=0, keepdim=True)
    elif n_channels in (1, 2):
        x = x[:1]
    else:
        raise ValueError(f"image has no channels: shape {tuple(img_t.shape)}.")
    if dtype == torch.uint8:
        x = x / 255.0
    elif dtype != torch.bool:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    return x.clamp_(0.0, 1.0)


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
    ``EnsureChannelFirstd`` -> :func:`squeeze_to_2d` -> ``Transposed`` (MONAI's (x, y) to (row, column), see the module
    docstring) -> :func:`to_grey_unit` -> ``Resized`` (bilinear, anti-aliased when shrinking) ->
    optionally a mild geometric augmentation (rotation up to 10 degrees and zoom 0.9-1.1, each with
    probability 0.5; no flips, as laterality is meaningful in medical images) -> ``EnsureTyped``.
    Other keys of the data dictionary (e.g. ``"label"``) are passed through untouched.

    Args:
        image_size: output size, an int for a square image or ``(H, W)``.
        keys: keys of the image paths.
        augment: add the random geometric augmentation (training only).
        allow_missing_keys: don't raise when a key is absent.
    """
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}.")
    size = tuple(int(s) for s in size)
    amk = allow_missing_keys
    xforms = [
        LoadImaged(keys, dtype=None, image_only=True, allow_missing_keys=amk),
        EnsureChannelFirstd(keys, allow_missing_keys=amk),
        Lambdad(keys, func=squeeze_to_2d, allow_missing_keys=amk),
        Transposed(keys, indices=(0, 2, 1), allow_missing_keys=amk),
        Lambdad(keys, func=to_grey_unit, allow_missing_keys=amk),
        Resized(keys, spatial_size=size, mode="bilinear", anti_aliasing=True, allow_missing_keys=amk),
    ]
    if augment:
        xforms += [
            RandRotated(keys, range_x=np.pi / 18, prob=0.5, padding_mode="border", allow_missing_keys=amk),
            RandZoomd(keys, min_zoom=0.9, max_zoom=1.1, prob=0.5, allow_missing_keys=amk),
        ]
    xforms.append(EnsureTyped(keys, dtype=torch.float32, track_meta=True, allow_missing_keys=amk))
    return Compose(xforms)
