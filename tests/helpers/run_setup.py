"""A RunSetup of the chest_xray bundle with tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

from monai_assim.bundle import RunSetup

REPO = Path(__file__).resolve().parents[2]

BUNDLE = REPO / "bundles" / "chest_xray"

#: the settings a tiny bundle run gives RunSetup (what train.json passes, with TINY's overrides).
TINY_SETTINGS = {
    "variant": "assimilated",
    "backbone": "mobilenet_v2",
    "pretrained": "none",
    "alpha": "auto",
    "image_size": 32,
    "epochs": 1,
    "batch_size": 8,
    "learning_rate": "auto",
    "assimilation_lr": "auto",
    "assimilation_init": "auto",
    "max_per_class": "auto",
    "patience": "auto",
    "mean": None,
    "std": None,
    "num_workers": 0,
    "adversarial_training": "auto",
    "at_eps": "auto",
    "at_steps": "auto",
    "at_ratio": "auto",
    "trades_beta": "auto",
}

DEFAULTS = json.loads((BUNDLE / "train.json").read_text())["real_data_defaults"]


def setup(out: Path, data: Path, resume: bool = False, resume_force: bool = False, **settings) -> RunSetup:
    return RunSetup(
        BUNDLE,
        "chest_xray",
        out,
        dataset_dir=data,
        settings={**TINY_SETTINGS, **settings},
        real_data_defaults=DEFAULTS,
        resume=resume,
        resume_force=resume_force,
    )
