"""
:class:`SqueezeTo2D` / :class:`SqueezeTo2Dd` (monai_assim/transforms/squeeze_2d.py), a loading step MONAI
lacks: one-slice volumes and their metadata to 2D.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate

from monai_assim.transforms import SqueezeTo2D, SqueezeTo2DD, SqueezeTo2Dd, SqueezeTo2DDict

RNG = np.random.default_rng(0)


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
