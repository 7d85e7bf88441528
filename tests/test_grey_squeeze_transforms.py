"""
Unit tests of the loading steps MONAI lacks: :class:`ToGreyUnit` / :class:`ToGreyUnitd` (any image to
one grey channel on [0, 1]) and :class:`SqueezeTo2D` / :class:`SqueezeTo2Dd` (one-slice volumes and
their metadata to 2D).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate

from monai_assim.transforms import (
    SqueezeTo2D,
    SqueezeTo2DD,
    SqueezeTo2Dd,
    SqueezeTo2DDict,
    ToGreyUnit,
    ToGreyUnitD,
    ToGreyUnitd,
    ToGreyUnitDict,
)
from monai_assim.utils.image import LUMA_BT601

RNG = np.random.default_rng(0)
H, W = 5, 7


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.tensordot(np.asarray(LUMA_BT601), rgb[:3].astype(np.float64), axes=1)[None]


def _meta_image(array, **meta) -> MetaTensor:
    return MetaTensor(torch.as_tensor(array), meta={"filename_or_obj": "x.png", **meta})


# ---- ToGreyUnit ----------------------------------------------------------------------------------


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


# ---- SqueezeTo2D ---------------------------------------------------------------------------------


def test_squeeze_to_2d_shapes_and_types():
    """(C, X, Y, 1[, 1]) -> (C, X, Y); 2D unchanged; numpy stays numpy; a real volume is refused by name."""
    vol = RNG.random((1, 4, 6, 1, 1)).astype(np.float32)
    out = SqueezeTo2D()(vol)
    assert isinstance(out, np.ndarray) and out.shape == (1, 4, 6)
    np.testing.assert_array_equal(out, vol[..., 0, 0])
    two_d = torch.rand(3, 4, 6)
    assert torch.equal(SqueezeTo2D()(two_d), two_d)
    with pytest.raises(ValueError, match=r"scan\.nii\.gz: expected a 2D image.*\(1, 4, 6, 3\)"):
        SqueezeTo2D()(MetaTensor(torch.zeros(1, 4, 6, 3), meta={"filename_or_obj": "scan.nii.gz"}))
    with pytest.raises(ValueError, match="expected a 2D image"):
        SqueezeTo2D()(np.zeros((1, 4)))


def test_squeeze_to_2d_makes_meta_2d_and_collatable():
    """A DICOM-like one-slice volume gets 2-entry spatial_shape/spacing and batches with a PNG-like image."""
    dicom = MetaTensor(
        torch.rand(1, 4, 6, 1),
        affine=torch.diag(torch.tensor([-0.5, -0.7, 2.0, 1.0], dtype=torch.float64)),
        meta={"filename_or_obj": "x.dcm", "spatial_shape": np.array([4, 6, 1]), "spacing": np.array([0.5, 0.7, 2.0])},
    )
    png = MetaTensor(torch.rand(1, 4, 6), meta={"filename_or_obj": "x.png", "spatial_shape": np.array([4, 6])})
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        list_data_collate([{"image": dicom[..., 0]}, {"image": png}])  # a plain squeeze keeps the 3D meta

    out = SqueezeTo2D()(dicom)
    assert isinstance(out, MetaTensor) and tuple(out.shape) == (1, 4, 6)
    np.testing.assert_array_equal(out.meta["spatial_shape"], [4, 6])
    np.testing.assert_allclose(out.meta["spacing"], [0.5, 0.7])
    assert out.meta["filename_or_obj"] == "x.dcm" and torch.equal(out.affine, dicom.affine)
    assert len(dicom.meta["spatial_shape"]) == 3 and len(dicom.meta["spacing"]) == 3  # input untouched
    assert tuple(SqueezeTo2D()(dicom.clone()).pixdim.tolist()) == (0.5, 0.7)

    batch = list_data_collate([{"image": out}, {"image": png}])
    assert tuple(batch["image"].shape) == (2, 1, 4, 6)
    assert list(batch["image"].meta["filename_or_obj"]) == ["x.dcm", "x.png"]


def test_squeeze_to_2d_dict_and_aliases():
    """SqueezeTo2Dd squeezes the keys given and leaves the others; aliases are one class."""
    assert SqueezeTo2DD is SqueezeTo2Dd and SqueezeTo2DDict is SqueezeTo2Dd
    assert SqueezeTo2Dd.backend == SqueezeTo2D.backend
    d = SqueezeTo2Dd(["image", "mask"], allow_missing_keys=True)({"image": torch.zeros(1, 4, 6, 1), "label": 0})
    assert tuple(d["image"].shape) == (1, 4, 6) and d["label"] == 0 and "mask" not in d
