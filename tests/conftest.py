"""Shared pytest fixtures: where the read-only ``../shared`` folder lies, with clear skips."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("MONAI_ASSIM_SHARED", REPO_ROOT.parent / "shared"))
CHEST_XRAY_DIR = SHARED_DIR / "data" / "chest_xray"
MOBILENET_V2_WEIGHTS = SHARED_DIR / "weights" / "mobilenet_v2_imagenet_from_tflite.pt"


@pytest.fixture(scope="session")
def chest_xray_dir() -> Path:
    """The real Kermany chest X-ray set (``../shared/data/chest_xray``); skips where absent."""
    if not (CHEST_XRAY_DIR / "train").is_dir():
        pytest.skip(f"real chest X-rays not found at {CHEST_XRAY_DIR} (set MONAI_ASSIM_SHARED)")
    return CHEST_XRAY_DIR.resolve()


@pytest.fixture(scope="session")
def mobilenet_v2_weights() -> Path:
    """The real ImageNet MobileNetV2 state dict (inputs normalised with mean 0.5, std 0.5)."""
    if not MOBILENET_V2_WEIGHTS.is_file():
        pytest.skip(f"ImageNet MobileNetV2 weights not found at {MOBILENET_V2_WEIGHTS}")
    return MOBILENET_V2_WEIGHTS.resolve()
