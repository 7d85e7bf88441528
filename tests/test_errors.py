"""
Errors a user causes in evaluate.json and inference.json end stderr with the project's message and hint,
as train.json's do (tests/test_run_setup.py): a missing --input, an unknown attack, an eps out of range. The run folder is a stand-in (summary and an untrained checkpoint): the errors come
before any image is classified.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from monai_assim.data import make_synthetic_dataset
    from monai_assim.networks import AssimilationNet

    root = tmp_path_factory.mktemp("user_errors")
    data = make_synthetic_dataset(root / "data", "chest_xray", n_per_class=2, size=32, seed=0)
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "datalists").mkdir()
    images = sorted(str(p) for p in data.rglob("*.jpeg"))
    (run / "datalists" / "splits.json").write_text(
        json.dumps(
            {"train": [], "validation": [], "test": [{"image": f, "label": i % 2} for i, f in enumerate(images)]}
        )
    )
    settings = {"image_size": 32, "mean": None, "std": None, "variant": "assimilated", "backbone": "mobilenet_v2"}
    (run / "run_summary.json").write_text(json.dumps({"settings": settings, "class_names": ["normal", "pneumonia"]}))
    net = AssimilationNet("mobilenet_v2", 2, pretrained="none")
    torch.save({"network": net.state_dict()}, run / "checkpoints" / "best.pt")
    return run


def _run(config: str, args: list[str], tmp_path: Path, debug: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MONAI_ASSIM_DEBUG"}
    env.update(OMP_NUM_THREADS="1", MONAI_ASSIM_LOG_DIR=str(tmp_path / "logs"))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"bundles/chest_xray/{config}", *args]
    if debug:
        cmd += ["--debug", "True"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _tail(text: str, n: int = 4) -> str:
    return "\n".join([line for line in text.splitlines() if line.strip()][-n:])


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, extra, expected",
    [
        (
            "inference.json",
            ["--input", "/no/such/folder"],
            ["input /no/such/folder does not exist", "Hint: pass --input"],
        ),
        ("evaluate.json", ["--attacks", "['FGSMX']"], ["unknown attack 'FGSMX'", "Hint: supported attacks:"]),
        ("evaluate.json", ["--attacks", "['FGSM']", "--eps", "[4]"], ["eps must lie in [0, 1]", "Hint: give eps"]),
    ],
)
def test_evaluate_and_inference_user_errors_end_stderr(run_dir, tmp_path, config, extra, expected):
    args = ["--output_dir", str(run_dir), "--backbone", "mobilenet_v2", *extra]
    proc = _run(config, args, tmp_path)
    tail = _tail(proc.stderr)
    assert proc.returncode != 0
    assert "Failed to " not in tail and "Traceback" not in proc.stderr, tail
    for text in expected:
        assert text in tail, tail
    assert list((tmp_path / "logs").glob("error_*.log")), "the full traceback was not written to the log folder"


@pytest.mark.slow
def test_debug_option_in_inference(run_dir, tmp_path):
    """--debug True in inference.json prints the traceback too, and still ends with the message."""
    proc = _run("inference.json", ["--output_dir", str(run_dir), "--input", "/no/such/folder"], tmp_path, debug=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "input /no/such/folder does not exist" in _tail(proc.stderr)


@pytest.mark.slow
def test_truncated_checkpoint_ends_stderr(run_dir, tmp_path):
    """evaluate.json with best.pt cut to 5 kB ends with the file, 'unreadable' and the hint."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:5000])
    proc = _run("evaluate.json", ["--output_dir", str(run), "--backbone", "mobilenet_v2"], tmp_path)
    tail = _tail(proc.stderr)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"checkpoint {best} is unreadable (truncated or corrupt?)" in tail, tail
    assert "Hint: pass --checkpoint last" in tail and "retrain" in tail


def test_import_leaves_excepthook_alone():
    """Importing the package (bundle support included) leaves sys.excepthook as it was."""
    code = "import sys, monai_assim, monai_assim.bundle, monai_assim.study; assert sys.excepthook is sys.__excepthook__"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("config", ["train.json", "evaluate.json", "inference.json", "multi_gpu_train.json"])
def test_bundle_configs_install_the_hook_first(config):
    """Every bundle config installs the user-error hook as its first initialize step."""
    for path in sorted((REPO / "bundles").glob(f"*/{config}")):
        assert json.loads(path.read_text())["initialize"][0] == "$monai_assim.errors.install_excepthook()", path
