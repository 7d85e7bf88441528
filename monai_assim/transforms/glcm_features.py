"""MONAI transforms that turn a channel-first image into windowed GLCM texture feature maps."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.data.meta_tensor import MetaTensor
from monai.transforms.inverse import TraceableTransform
from monai.transforms.transform import MapTransform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_assim.glcm import DEFAULT_ANGLES, PAPER_FEATURES, check_features, glcm_features

__all__ = ["GLCMFeatures", "GLCMFeaturesd", "GLCMFeaturesD", "GLCMFeaturesDict"]


class GLCMFeatures(TraceableTransform):
    """
    Windowed GLCM texture features of a channel-first 2D image, as channel-first feature maps.

    Input ``(C, H, W)`` with intensities on [0, 1]; output ``(C * F * A, nH, nW)`` with ``F`` features,
    ``A`` angles and ``nH = (H - window) // stride + 1`` (likewise ``nW``). Output channel
    ``(c * F + f) * A + a`` holds feature ``features[f]`` at angle ``angles[a]`` of input channel ``c``;
    pixel ``(i, j)`` is the window whose top-left corner is ``(i * stride, j * stride)``. Partial tiles
    at the bottom and right borders are dropped. See :func:`monai_assim.glcm.glcm_features` and
    ``docs/glcm.md``.

    Metadata, as MONAI's spatial transforms keep it: a ``MetaTensor`` input (with meta tracking on)
    gives a ``MetaTensor`` output carrying the input's metadata, its ``affine`` updated to the output
    grid (feature pixel ``(i, j)`` maps to the centre of its window in the input's world coordinates:
    ``affine_out = affine_in @ S`` with ``S`` scaling by ``stride`` and shifting by ``(window - 1) / 2``
    pixels; ``pixdim`` follows) and this transform recorded on ``applied_operations`` (its
    ``extra_info`` holds ``window``, ``stride``, ``features``, ``angles`` and ``levels``). The output is
    a feature map, not an image: the transform is not invertible. Numpy in gives numpy out, a tensor a
    tensor (a ``MetaTensor`` a plain tensor when meta tracking is off).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        levels: int = 32,
        distance: int = 3,
        angles: Sequence[float] = DEFAULT_ANGLES,
        window: int = 20,
        stride: int | None = None,
        features: Sequence[str] = PAPER_FEATURES,
        soft: bool = False,
        width: float = 1.0,
    ) -> None:
        """
        Args:
            levels: gray levels (>= 2).
            distance: pixel distance of the pairs.
            angles: angles in degrees (scikit-image's offset convention; default the paper's eight).
            window: side of the square windows; ``stride``: step between them (``None``: ``window``).
            features: names from :data:`monai_assim.glcm.SUPPORTED_FEATURES` (default the paper's five).
            soft: soft (differentiable) instead of hard quantisation; ``width``: its kernel width.
        """
        self.features = check_features(features)
        self.angles = tuple(angles)
        self.window = window
        self.stride = window if stride is None else stride
        self.kwargs = {"levels": levels, "distance": distance, "soft": soft, "width": width}

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: ``(C, H, W)`` on [0, 1] (numpy array, tensor or MetaTensor).
        """
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim != 3:
            raise ValueError(f"GLCMFeatures expects a channel-first 2D image (C, H, W), got shape {tuple(x.shape)}.")
        if not x.is_floating_point():
            x = x.float()
        feats = glcm_features(
            x.unsqueeze(0),
            angles=self.angles,
            window=self.window,
            stride=self.stride,
            features=self.features,
            **self.kwargs,
        )
        out = feats.reshape(-1, *feats.shape[-2:])
        if not (isinstance(img, MetaTensor) and get_track_meta()):
            return convert_to_dst_type(out, dst=x if isinstance(img, MetaTensor) else img)[0]
        # feature pixel (i, j) -> input pixel (i * stride + (window - 1) / 2, likewise j)
        step = torch.eye(3, dtype=torch.float64)
        for d in range(2):
            step[d, d] = self.stride
            step[d, -1] = (self.window - 1) / 2.0
        extra_info = {
            "window": self.window,
            "stride": self.stride,
            "features": list(self.features),
            "angles": list(self.angles),
            "levels": self.kwargs["levels"],
        }
        meta_info = self.track_transform_meta(
            img,
            sp_size=tuple(out.shape[1:]),
            affine=step,
            extra_info=extra_info,
            orig_size=tuple(x.shape[1:]),
            transform_info=self.get_transform_info(),
        )
        return MetaTensor(out).copy_meta_from(meta_info)


class GLCMFeaturesd(MapTransform):
    """
    Dictionary-based wrapper of :class:`GLCMFeatures`: each ``(C, H, W)`` item becomes its
    ``(C * F * A, nH, nW)`` feature maps, written over the key, or to ``f"{key}_{output_postfix}"`` (keeping
    the image) when ``output_postfix`` is given.
    """

    backend = GLCMFeatures.backend

    def __init__(
        self,
        keys: KeysCollection,
        levels: int = 32,
        distance: int = 3,
        angles: Sequence[float] = DEFAULT_ANGLES,
        window: int = 20,
        stride: int | None = None,
        features: Sequence[str] = PAPER_FEATURES,
        soft: bool = False,
        width: float = 1.0,
        output_postfix: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: keys of the items to transform. See also: ``monai.transforms.MapTransform``.
            levels, distance, angles, window, stride, features, soft, width: see :class:`GLCMFeatures`.
            output_postfix: if given, store the features under ``f"{key}_{output_postfix}"``.
            allow_missing_keys: don't raise an exception if a key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.extractor = GLCMFeatures(levels, distance, angles, window, stride, features, soft, width)
        self.output_postfix = output_postfix

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            out_key = key if self.output_postfix is None else f"{key}_{self.output_postfix}"
            d[out_key] = self.extractor(d[key])
        return d


GLCMFeaturesD = GLCMFeaturesDict = GLCMFeaturesd
