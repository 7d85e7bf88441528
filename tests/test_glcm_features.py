"""
The transforms GLCMFeatures / GLCMFeaturesd (monai_assim/transforms/glcm_features.py): layout against
scikit-image, metadata, dictionary use, real X-rays. The features themselves (monai_assim/glcm/): test_glcm.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged
from skimage.feature import graycomatrix, graycoprops

from monai_assim.glcm import DEFAULT_ANGLES, PAPER_FEATURES, glcm_features
from monai_assim.transforms import GLCMFeatures, GLCMFeaturesD, GLCMFeaturesd, GLCMFeaturesDict


def skimage_feature(img: np.ndarray, levels: int, name: str, angle: float) -> float:
    q = np.minimum(np.floor(img * levels), levels - 1).astype(np.uint8)
    g = graycomatrix(q, [3], [np.deg2rad(angle)], levels=levels, normed=True)
    return float(graycoprops(g, name)[0, 0])


def test_layout_matches_skimage():
    img = np.random.default_rng(0).random((2, 45, 64))
    out = GLCMFeatures(levels=16)(img)
    f, a = len(PAPER_FEATURES), len(DEFAULT_ANGLES)
    assert isinstance(out, np.ndarray) and out.shape == (2 * f * a, 2, 3)
    c, fi, ai, i, j = 1, PAPER_FEATURES.index("contrast"), DEFAULT_ANGLES.index(90), 1, 2
    ref = skimage_feature(img[c, i * 20 : i * 20 + 20, j * 20 : j * 20 + 20], 16, "contrast", 90)
    assert abs(out[(c * f + fi) * a + ai, i, j] - ref) <= 1e-6
    torch.testing.assert_close(
        torch.as_tensor(out), glcm_features(torch.as_tensor(img)[None], levels=16).reshape(-1, 2, 3)
    )


def test_metatensor_in_metatensor_out():
    affine = torch.tensor([[0.5, 0, 0, 10.0], [0, 0.7, 0, -3.0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    img = MetaTensor(torch.rand(1, 64, 50), affine=affine, meta={"filename_or_obj": "x.png"})
    out = GLCMFeatures(window=16, stride=8)(img)
    assert isinstance(out, MetaTensor) and out.shape == (40, 7, 5)
    assert out.meta["filename_or_obj"] == "x.png"
    # feature pixel (i, j) sits at the centre of its window, in world coordinates
    i, j = 3, 2
    centre = torch.tensor([i * 8 + 7.5, j * 8 + 7.5, 0, 1], dtype=torch.float64)
    torch.testing.assert_close(out.affine @ torch.tensor([i, j, 0, 1.0], dtype=torch.float64), affine @ centre)


def test_dictionary_and_aliases():
    assert GLCMFeaturesD is GLCMFeaturesd and GLCMFeaturesDict is GLCMFeaturesd
    img = torch.rand(1, 40, 40)
    d = GLCMFeaturesd(keys="image", output_postfix="glcm", features=("entropy",))({"image": img, "label": 1})
    assert d["image"] is img and d["label"] == 1 and d["image_glcm"].shape == (8, 2, 2)
    d = GLCMFeaturesd(keys=["image", "missing"], allow_missing_keys=True)({"image": img})
    assert d["image"].shape == (40, 2, 2)


def test_compose_on_real_chest_xray(chest_xray_dir):
    path = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[0]
    pipeline = Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0, b_max=1, clip=True),
            GLCMFeaturesd("image", output_postfix="glcm", levels=32, features=("homogeneity", "correlation")),
        ]
    )
    d = pipeline({"image": str(path)})
    feats, img = d["image_glcm"], d["image"]
    assert isinstance(feats, MetaTensor) and feats.shape == (img.shape[0] * 2 * 8, 11, 11)
    # MONAI's loader gives (C, W, H) for 2D images: compare one window with scikit-image directly
    win = img[0, 100:120, 60:80].numpy()
    ref = skimage_feature(win, 32, "correlation", 45)
    assert abs(float(feats[1 * 8 + 1, 5, 3]) - ref) <= 1e-5


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        GLCMFeatures()(np.zeros((40, 40)))
    with pytest.raises(ValueError, match="unknown GLCM feature"):
        GLCMFeatures(features=("blur",))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        GLCMFeatures()(np.full((1, 40, 40), 3.0))


def test_metadata_records_the_resampling():
    """As MONAI's spatial transforms: affine of the output grid, earlier operations kept, this one pushed."""
    from monai.data import set_track_meta
    from monai.transforms import Flip

    affine = torch.diag(torch.tensor([0.5, 0.7, 1.0, 1.0], dtype=torch.float64))
    img = Flip(spatial_axis=0)(MetaTensor(torch.rand(1, 64, 50), affine=affine, meta={"filename_or_obj": "x.png"}))
    out = GLCMFeatures(window=16, stride=8, levels=8)(img)
    assert out.meta["filename_or_obj"] == "x.png"
    assert [op["class"] for op in out.applied_operations] == ["Flip", "GLCMFeatures"]
    op = out.applied_operations[-1]
    assert tuple(op["orig_size"]) == (64, 50)
    assert {k: op["extra_info"][k] for k in ("window", "stride", "levels")} == {"window": 16, "stride": 8, "levels": 8}
    assert list(op["extra_info"]["features"]) == list(PAPER_FEATURES)
    # the flip's affine is composed with the window grid's; the spacing grows by the stride
    torch.testing.assert_close(out.pixdim, torch.tensor([4.0, 5.6], dtype=torch.float64))
    centre = torch.tensor([3 * 8 + 7.5, 2 * 8 + 7.5, 0, 1], dtype=torch.float64)
    torch.testing.assert_close(out.affine @ torch.tensor([3, 2, 0, 1.0], dtype=torch.float64), img.affine @ centre)
    assert img.applied_operations[-1]["class"] == "Flip"  # the input is left as it was
    # without meta tracking a MetaTensor gives a plain tensor (as MONAI transforms do)
    set_track_meta(False)
    try:
        plain = GLCMFeatures(window=16, stride=8, levels=8)(img)
    finally:
        set_track_meta(True)
    assert type(plain) is torch.Tensor
    torch.testing.assert_close(plain, out.as_tensor())
