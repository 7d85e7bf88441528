"""
:class:`ToGreyUnit` / :class:`ToGreyUnitd` (monai_assim/transforms/grey_unit.py), a loading step MONAI
lacks: any image to one grey channel on [0, 1].
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_assim.transforms import ToGreyUnit, ToGreyUnitD, ToGreyUnitd, ToGreyUnitDict
from monai_assim.utils.image import LUMA_BT601

RNG = np.random.default_rng(0)
H, W = 5, 7


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.tensordot(np.asarray(LUMA_BT601), rgb[:3].astype(np.float64), axes=1)[None]


def _meta_image(array, **meta) -> MetaTensor:
    return MetaTensor(torch.as_tensor(array), meta={"filename_or_obj": "x.png", **meta})


GREY8 = RNG.integers(0, 256, (1, H, W)).astype(np.uint8)
RGB8 = RNG.integers(0, 256, (3, H, W)).astype(np.uint8)
RGBA8 = np.concatenate([RGB8, np.full((1, H, W), 17, np.uint8)])
GREY_ALPHA8 = np.concatenate([GREY8, np.full((1, H, W), 255, np.uint8)])


@pytest.mark.parametrize(
    "name, image, expected",
    [
        ("grey uint8", GREY8, GREY8 / 255.0),
        ("RGB uint8", RGB8, _luma(RGB8) / 255.0),
        ("RGBA uint8", RGBA8, _luma(RGB8) / 255.0),
        ("grey + alpha uint8", GREY_ALPHA8, GREY8 / 255.0),
    ],
)
def test_to_grey_unit_channels(name, image, expected):
    """Grey kept, RGB and RGBA to luma (alpha ignored), grey + alpha to the grey channel; uint8 / 255."""
    out = ToGreyUnit()(image)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (1, H, W), name
    np.testing.assert_allclose(out, expected, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int32, np.float32, np.float64])
def test_to_grey_unit_minmax_for_other_dtypes(dtype):
    """16-bit PNG, DICOM/NIfTI integers (also negative) and floats: min-max scaled per image onto [0, 1]."""
    lo, hi = (-1024, 3071) if dtype in (np.int16, np.int32) else (0, 4095)
    pic = RNG.integers(lo, hi + 1, (1, H, W)).astype(dtype)
    pic.flat[0], pic.flat[1] = lo, hi
    out = ToGreyUnit()(torch.as_tensor(pic))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and tuple(out.shape) == (1, H, W)
    np.testing.assert_allclose(out.numpy(), (pic.astype(np.float64) - lo) / (hi - lo), atol=1e-6)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0


def test_to_grey_unit_rgb_16bit_and_bool():
    """A 16-bit RGB image is converted to luma, then min-max scaled; a bool mask is cast to 0/1."""
    rgb = RNG.integers(0, 65536, (3, H, W)).astype(np.uint16)
    y = _luma(rgb)
    np.testing.assert_allclose(ToGreyUnit()(rgb), (y - y.min()) / (y.max() - y.min()), atol=1e-5)
    mask = RNG.integers(0, 2, (1, H, W)).astype(bool)
    np.testing.assert_array_equal(ToGreyUnit()(mask), mask.astype(np.float32))


@pytest.mark.parametrize("value, dtype", [(0, np.uint16), (1234, np.uint16), (0.5, np.float32), (200, np.uint8)])
def test_to_grey_unit_constant_image(value, dtype):
    """A constant image has no range to scale: zeros for min-max dtypes, value / 255 for uint8; never NaN."""
    out = ToGreyUnit()(np.full((1, H, W), value, dtype=dtype))
    expected = value / 255.0 if dtype == np.uint8 else 0.0
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np.full((1, H, W), expected), atol=1e-6)


def test_to_grey_unit_keeps_meta_and_rejects_bad_shapes():
    """The MetaTensor's metadata survive; a non-(C, H, W) input is refused with its shape in the message."""
    img = _meta_image(RNG.integers(0, 256, (3, H, W)).astype(np.uint8), spacing=(0.5, 0.7))
    out = ToGreyUnit()(img)
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32
    assert out.meta["filename_or_obj"] == "x.png" and tuple(out.meta["spacing"]) == (0.5, 0.7)
    assert torch.equal(out.affine, img.affine)
    assert img.dtype == torch.uint8 and img.shape[0] == 3  # the input is not modified
    with pytest.raises(ValueError, match=r"\(C, H, W\).*\(5, 7\)"):
        ToGreyUnit()(np.zeros((H, W)))
    with pytest.raises(ValueError, match="C >= 1"):
        ToGreyUnit()(np.zeros((0, H, W)))


def test_to_grey_unit_dict_and_aliases():
    """ToGreyUnitd converts the keys given, leaves the others, honours allow_missing_keys; aliases are one class."""
    assert ToGreyUnitD is ToGreyUnitd and ToGreyUnitDict is ToGreyUnitd
    assert ToGreyUnitd.backend == ToGreyUnit.backend
    rgb = RNG.integers(0, 256, (3, H, W)).astype(np.uint8)
    d = ToGreyUnitd(["image", "other"], allow_missing_keys=True)({"image": rgb, "label": 1})
    assert d["label"] == 1 and "other" not in d
    np.testing.assert_allclose(d["image"], _luma(rgb) / 255.0, atol=1e-6)
    with pytest.raises(KeyError):
        ToGreyUnitd("other")({"image": rgb})
