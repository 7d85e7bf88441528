"""
SqueezeTo2D / SqueezeTo2Dd: make a channel-first image 2D by dropping trailing singleton spatial
axes, and make its metadata say so, so that a DICOM slice batches with PNG, JPEG and NIfTI images.

ITK reads a 2D DICOM slice as a one-slice volume ``(C, X, Y, 1)``, and its metadata as a 3D image's:
``spatial_shape`` and ``spacing`` have three entries where a PNG's have two. MONAI's collate keeps
the metadata keys all images of a batch share and stacks their values, so a batch holding a DICOM
and a PNG failed with "stack expects each tensor to be equal size, but got [3] at entry 0 and [2] at
entry 1". The per-axis entries of the dropped axes are removed here. The affine stays ``4 x 4``:
MONAI keeps 2D images' affines in that shape too (the third row and column are ignored for a 2D
image), so every format's affine already has the same shape.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor

__all__ = ["PER_AXIS_META_KEYS", "SqueezeTo2D", "SqueezeTo2Dd", "SqueezeTo2DD", "SqueezeTo2DDict"]

#: metadata entries with one value per spatial axis (as MONAI's readers write them): shortened to 2
#: entries when singleton axes are dropped.
PER_AXIS_META_KEYS = ("spatial_shape", "spacing")


def _first_two(value):
    """The first two entries of a per-axis metadata value, in its own type (tuple, list, array, tensor)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value[:2]
    if isinstance(value, (tuple, list)):
        return type(value)(value[:2])
    return value


class SqueezeTo2D(Transform):
    """
    Drop trailing singleton spatial axes of a channel-first image: ``(C, X, Y, 1, ...)`` ->
    ``(C, X, Y)``; an image that is already ``(C, X, Y)`` is returned unchanged.

    For a MetaTensor the metadata entries of :data:`PER_AXIS_META_KEYS` (``spatial_shape``,
    ``spacing``) are cut to their first two values and its number of spatial axes set to 2, so that
    its metadata can be collated with a PNG/JPEG's (see the module docstring) and its ``pixdim`` is
    2D; the input's metadata is not modified.
    Like MONAI's ``SqueezeDim``, a numpy array in gives a numpy array out and a tensor gives a
    tensor (a MetaTensor when meta tracking is on).

    Raises:
        ValueError: the result is not 2D (e.g. a real 3D volume, ``(C, X, Y, Z)`` with ``Z > 1``,
            or an image without spatial axes); the message names the file when the metadata has it.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: channel-first image ``(C, X, Y)`` or ``(C, X, Y, 1, ..., 1)``.

        Returns:
            the image ``(C, X, Y)``, the same array type as ``img``.
        """
        if isinstance(img, torch.Tensor):
            img = convert_to_tensor(img, track_meta=get_track_meta())
        out = img
        while out.ndim > 3 and out.shape[-1] == 1:
            out = out[..., 0]
        if out.ndim != 3:
            meta = getattr(img, "meta", {})
            name = meta.get("filename_or_obj", "image") if isinstance(meta, Mapping) else "image"
            raise ValueError(
                f"{name}: expected a 2D image, got channel-first shape {tuple(img.shape)}; "
                "a 3D volume must be sliced to 2D images first."
            )
        if isinstance(out, MetaTensor) and out.ndim < img.ndim:
            meta = dict(out.meta)
            for key in PER_AXIS_META_KEYS:
                if key in meta:
                    meta[key] = _first_two(meta[key])
            out.meta = meta
            if hasattr(out, "spatial_ndim"):  # MONAI >= 1.5 caches the number of spatial axes
                out.spatial_ndim = out.ndim - 1
        return out


class SqueezeTo2Dd(MapTransform):
    """
    Dictionary-based wrapper of :py:class:`SqueezeTo2D`: the channel-first images under ``keys``,
    ``(C, X, Y)`` or ``(C, X, Y, 1, ...)``, become ``(C, X, Y)`` with 2D metadata.

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = SqueezeTo2D.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.squeeze = SqueezeTo2D()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.squeeze(d[key])
        return d


SqueezeTo2DD = SqueezeTo2DDict = SqueezeTo2Dd
