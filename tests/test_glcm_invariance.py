"""What the GLCM loss does not constrain, measured on real images (skips without ../shared)."""

import glob

import pytest
import torch
from conftest import SHARED_DIR

from monai_assim.data import image_transforms
from monai_assim.metrics import glcm_invariance


def _images(pattern, n=4, size=96):
    files = sorted(glob.glob(str(pattern)))[::50][:n]
    if not files:
        pytest.skip(f"no real images at {pattern} (set MONAI_ASSIM_SHARED)")
    load = image_transforms(size, keys=["image"], augment=False)
    return torch.stack([torch.as_tensor(load({"image": f})["image"]) for f in files]).float()


@pytest.mark.parametrize("pattern", ["chest_xray/test/*/*.jpeg", "chest_ct/*/*.jpg"])
def test_inversion_is_invisible_to_glcm_features_gamma_is_not(pattern):
    x = _images(SHARED_DIR / "data" / pattern)
    r = glcm_invariance(x)
    inv = r["inversion 1-x"]
    assert inv["grey_shift"] > 0.2  # a large change of the image ...
    assert inv["max_feature_change"] < 1e-6  # ... that none of the five hard GLCM features sees
    for name in ("gamma 0.5", "gamma 2"):  # a monotone but non-affine map is seen
        assert r[name]["max_feature_change"] > 0.1 and r[name]["glcm_loss"] > 10 * inv["glcm_loss"] + 1
