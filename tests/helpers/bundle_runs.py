"""Running the bundles in tests: tiny command-line overrides, a subprocess that must succeed, tiny data sets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from monai_assim.data import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[2]

BUNDLES = REPO / "bundles"

PYTHON = sys.executable

#: command-line overrides that make a bundle run tiny: 32x32 images, one epoch, no weights to download.
TINY = [
    "--image_size",
    "32",
    "--epochs",
    "1",
    "--batch_size",
    "8",
    "--backbone",
    "mobilenet_v2",
    "--pretrained",
    "none",
]

#: one cheap attack and eps for evaluate.json, no ensemble (the default is the paper's 4 attacks x 8 eps and
#: the standard ensemble, tested in test_evaluate_bundle.py).
TINY_EVAL = [
    "--backbone",
    "mobilenet_v2",
    "--attacks",
    "['FGSM']",
    "--eps",
    "[0.03]",
    "--check_eps",
    "$None",
    "--attack_budget",
    "none",
]

#: the same as keyword arguments of ``monai.bundle.run``.
TINY_KW = {"image_size": 32, "epochs": 1, "batch_size": 8, "backbone": "mobilenet_v2", "pretrained": "none"}

TINY_EVAL_KW = {
    "backbone": "mobilenet_v2",
    "attacks": ["FGSM"],
    "eps": [0.03],
    "check_eps": "$None",
    "attack_budget": "none",
}


def bundle_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def bundle_cmd(config: str | list[str], *args: str) -> list[str]:
    files = config if isinstance(config, str) else "[" + ",".join(f"'{c}'" for c in config) + "]"
    return [PYTHON, "-m", "monai.bundle", "run", "--config_file", files, *args]


def run_ok(cmd: list[str], cwd: Path = REPO, timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=bundle_env(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-6000:]}"
    return out


def run_in_process(config: str, **overrides) -> None:
    """
    ``monai.bundle.run`` (what ``python -m monai.bundle run`` calls) of ``bundles/<config>`` in this process, with
    the bundle's folder as bundle_root and without its logging.conf (which would reconfigure pytest's logging).
    """
    from monai.bundle import run

    bundle = (BUNDLES / config).parent
    run(
        config_file=str(BUNDLES / config),
        meta_file=str(bundle / "metadata.json"),
        logging_file=False,
        bundle_root=str(bundle),
        **overrides,
    )


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of the run folder ``run`` at ``dest``, without its evaluation and inference outputs."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("eval", "inference"))
    return dest


def tiny_dataset(root: Path, modality: str, n: int = 6) -> Path:
    """A synthetic data set in ``modality``'s real layout, ``n`` images of 32 px per class folder."""
    return make_synthetic_dataset(root / modality, modality, n_per_class=n, size=32, seed=1)


def train_workflow(data: Path, out: Path, bundle: str = "chest_xray", **overrides):
    """
    The ``train.json`` of ``bundle`` (default chest X-ray) as an in-process ``monai.bundle.ConfigWorkflow`` (what
    ``monai.bundle run`` drives), not yet initialised: tiny settings (32 px, ResNet18 without weights, batch 4,
    1 epoch, no workers), ``overrides`` on top.
    """
    from monai.bundle import ConfigWorkflow

    settings = {"image_size": 32, "epochs": 1, "batch_size": 4, "backbone": "resnet18", "pretrained": "none"}
    settings.update(num_workers=0, **overrides)
    return ConfigWorkflow(
        config_file=str(BUNDLES / bundle / "train.json"),
        logging_file=False,
        workflow_type="train",
        bundle_root=str(BUNDLES / bundle),
        dataset_dir=str(data),
        output_dir=str(out),
        **settings,
    )
