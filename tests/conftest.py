"""
Shared pytest fixtures: where the read-only ``../shared`` folder lies, with clear skips; the ``cuda``
marker: tests marked ``@pytest.mark.cuda`` skip without a CUDA device, and ``pytest --require-cuda``
(or ``MONAI_ASSIM_REQUIRE_CUDA=1``) turns that into an error, so that a GPU run cannot skip them
silently (``benchmarks/gpu_check.py`` runs the suite so).
"""

import os
from pathlib import Path

import pytest
import torch

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


@pytest.fixture
def tiny_chest_xray(tmp_path) -> Path:
    """A synthetic chest X-ray set in the Kermany layout (4 images per class and split, 16 px) in ``tmp_path/data``."""
    from monai_assim.data import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path / "data", "chest_xray", n_per_class=4, size=16, seed=0)


@pytest.fixture(scope="session")
def chest_xray_cli_run(tmp_path_factory) -> tuple[Path, str]:
    """
    A tiny chest_xray run trained once per session through the literal command line (``python -m monai.bundle
    run``, ``helpers.bundle_runs.TINY``: 32 px, 1 epoch, MobileNetV2 without weights, 4 synthetic images per
    class and split), and its console log. Shared: copy it (``helpers.bundle_runs.copy_run``) before writing
    into it.
    """
    from helpers.bundle_runs import TINY, bundle_cmd, run_ok, tiny_dataset

    root = tmp_path_factory.mktemp("chest_xray_cli_run")
    data, out = tiny_dataset(root, "chest_xray", n=4), root / "run"
    log = run_ok(
        bundle_cmd("bundles/chest_xray/train.json", "--dataset_dir", str(data), "--output_dir", str(out), *TINY)
    )
    return out, log


@pytest.fixture(scope="session")
def mobilenet_v2_weights() -> Path:
    """The real ImageNet MobileNetV2 state dict (inputs normalised with mean 0.5, std 0.5)."""
    if not MOBILENET_V2_WEIGHTS.is_file():
        pytest.skip(f"ImageNet MobileNetV2 weights not found at {MOBILENET_V2_WEIGHTS}")
    return MOBILENET_V2_WEIGHTS.resolve()


def pytest_addoption(parser):
    parser.addoption(
        "--require-cuda",
        action="store_true",
        default=False,
        help="run the tests marked cuda and stop with an error when no CUDA device is visible (default: skip them)",
    )


def _cuda_required(config) -> bool:
    return bool(config.getoption("--require-cuda")) or os.environ.get("MONAI_ASSIM_REQUIRE_CUDA", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda``: skipped without a CUDA device, unless CUDA is required (then an error)."""
    if torch.cuda.is_available():
        return
    if _cuda_required(config):
        raise pytest.UsageError("--require-cuda (or MONAI_ASSIM_REQUIRE_CUDA) given, but torch sees no CUDA device")
    skip = pytest.mark.skip(reason="no CUDA device (tests marked cuda run where torch.cuda.is_available())")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
