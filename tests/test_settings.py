"""The settings table: each setting's default and check in one place (monai_assim.bundle.settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_assim.bundle.generate import with_settings
from monai_assim.bundle.settings import FIXED_DEFAULTS, SETTING_KEYS, check_settings
from monai_assim.errors import UserInputError

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
GOOD = {
    **FIXED_DEFAULTS,
    "pretrained": "none",
    "image_size": 32,
    "epochs": 2,
    "batch_size": 4,
    "learning_rate": 1e-3,
    "max_per_class": None,
    "patience": 3,
    "mean": None,
    "std": None,
    "num_workers": 0,
    "select_by": "auto",
    "val_robust_eps": "auto",
}


def test_good_settings_are_normalised():
    out = dict(GOOD, adversarial_training="PGD", at_steps=3)
    check_settings(out)
    assert out["adversarial_training"] == "pgd" and out["select_by"] == "robust" and out["val_robust_eps"] == 2.0
    assert isinstance(out["at_ratio"], float) and set(out) == set(SETTING_KEYS)


@pytest.mark.parametrize(
    "key, value",
    [
        ("at_ratio", 0.0),
        ("at_ratio", 1.5),
        ("at_eps", 256.0),
        ("at_steps", 0),
        ("trades_beta", -1.0),
        ("alpha", 1.5),
        ("learning_rate", 0.0),
        ("epochs", 0),
        ("num_workers", -1),
        ("adversarial_training", "fgsm"),
        ("select_by", "best"),
        ("val_robust_attack", "cw"),
        ("assimilation_lr", 0.0),
        ("lr_schedule", "linear"),
        ("at_eps_warmup_epochs", -1),
        ("co_probe_every", -5),
        ("co_probe_every", 2.5),
    ],
)
def test_bad_values_are_user_errors(key, value):
    with pytest.raises(UserInputError, match=key):
        check_settings(dict(GOOD, **{key: value}))


def test_the_training_config_lists_every_setting():
    config = with_settings(json.loads((BUNDLES / "common" / "train.json").read_text()))
    assert all(config[k] == (None if k in ("mean", "std") else "auto") for k in SETTING_KEYS)
    assert config["run_setup"]["settings"] == {k: f"@{k}" for k in SETTING_KEYS}


@pytest.mark.parametrize("mode", ["fgsm_rs", "N_FGSM"])
def test_one_step_modes_are_adversarial_training(mode):
    """The one-step modes are choices of the table and select by robust accuracy, as pgd and trades."""
    out = dict(GOOD, adversarial_training=mode)
    check_settings(out)
    assert out["adversarial_training"] == mode.lower() and out["select_by"] == "robust"
    assert out["val_robust_eps"] == out["at_eps"]


def test_schedule_settings_default_to_todays_training():
    out = dict(GOOD)
    check_settings(out)
    assert (out["lr_schedule"], out["at_eps_warmup_epochs"], out["co_probe_every"]) == ("none", 0.0, 0)
    out = dict(GOOD, lr_schedule="Cosine", at_eps_warmup_epochs=2, co_probe_every=50)
    check_settings(out)
    assert (out["lr_schedule"], out["at_eps_warmup_epochs"], out["co_probe_every"]) == ("cosine", 2.0, 50)
