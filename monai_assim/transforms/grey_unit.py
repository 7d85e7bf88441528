"""
ToGreyUnit / ToGreyUnitd: any 2D medical or photographic image (grey, grey + alpha, RGB, RGBA;
8-bit, 16-bit, DICOM/NIfTI integers or floats) to the one grey float channel on [0, 1] that the
networks of this package take.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_assim.utils.image import rgb_to_grey

__all__ = ["ToGreyUnit", "ToGreyUnitd", "ToGreyUnitD", "ToGreyUnitDict"]


class ToGreyUnit(Transform):
    """
    Convert a channel-first 2D image ``(C, H, W)`` of any dtype to one grey channel ``(1, H, W)``,
    float32 on [0, 1].

    Channels: ``C == 1`` is kept; ``C == 2`` (grey + alpha) keeps channel 0; ``C >= 3`` (RGB, RGBA)
    gives the ITU-R BT.601 luma :math:`Y = 0.299 R + 0.587 G + 0.114 B` of the first three channels
    (PIL's ``convert("L")`` weights, :data:`monai_assim.utils.LUMA_BT601`), which is the grey value
    itself for RGB-stored grey images (R = G = B).

    Intensities: ``uint8`` is divided by 255; ``bool`` is cast; any other dtype (16-bit PNG, DICOM,
    NIfTI, floats) is min-max scaled per image, :math:`(x - \\min x) / (\\max x - \\min x)`, and a
    constant image becomes all zeros.

    A numpy array in gives a numpy array out, a tensor a tensor (a MetaTensor with the input's
    metadata when meta tracking is on), on the input's device.

    Raises:
        ValueError: the image is not ``(C, H, W)`` with ``C >= 1``.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: channel-first image ``(C, H, W)``, any dtype.

        Returns:
            the grey image ``(1, H, W)``, float32 on [0, 1].
        """
        if isinstance(img, torch.Tensor):  # a MetaTensor (with meta tracking on) keeps its metadata
            img = convert_to_tensor(img, track_meta=get_track_meta())
        img_t = convert_to_tensor(img, track_meta=False)
        if img_t.ndim != 3 or img_t.shape[0] < 1:
            raise ValueError(
                f"ToGreyUnit expects a channel-first 2D image (C, H, W) with C >= 1, got shape {tuple(img_t.shape)}."
            )
        dtype = img_t.dtype
        x = img_t.to(torch.float32)
        if x.shape[0] >= 3:
            x = rgb_to_grey(x, dim=0)
        else:
            x = x[:1]
        if dtype == torch.uint8:
            x = x / 255.0
        elif dtype != torch.bool:
            lo, hi = x.min(), x.max()
            x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
        x = x.clamp(0.0, 1.0)
        return convert_to_dst_type(x, dst=img, dtype=torch.float32)[0]


class ToGreyUnitd(MapTransform):
    """
    Dictionary-based wrapper of :py:class:`ToGreyUnit`: the channel-first images ``(C, H, W)`` under
    ``keys`` become grey float32 images ``(1, H, W)`` on [0, 1].

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = ToGreyUnit.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.to_grey = ToGreyUnit()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.to_grey(d[key])
        return d


ToGreyUnitD = ToGreyUnitDict = ToGreyUnitd
