"""The adversarial-training and robustness-report overrides of the bundles, through the CLI users type."""

from __future__ import annotations

import csv
import json

import pytest
from test_bundles import BUNDLES, TINY, bundle_cmd, run_ok, tiny_dataset

from monai_assim.robustness_results import PER_IMAGE_COLUMNS


@pytest.mark.slow
def test_pgd_at_bundle_run_and_worst_case_structure_checks(tmp_path):
    data, out = tiny_dataset(tmp_path, "chest_xray", n=4), tmp_path / "run"
    at = ["--adversarial_training", "pgd", "--at_eps", "2", "--at_steps", "2", "--at_ratio", "0.5"]
    log = run_ok(
        bundle_cmd("bundles/chest_xray/train.json", "--dataset_dir", str(data), "--output_dir", str(out), *TINY, *at)
    )
    for name in ("loss_adv", "acc_clean", "acc_adv"):
        assert f"{name}: " in log, name  # logged per iteration by StatsHandler
    settings = json.loads((out / "run_summary.json").read_text())["settings"]
    assert settings["adversarial_training"] == "pgd" and settings["at_eps"] == 2.0  # units of 1/255
    assert settings["at_steps"] == 2 and settings["at_ratio"] == 0.5 and settings["trades_beta"] == 6.0

    run_ok(
        bundle_cmd(
            "bundles/chest_xray/evaluate.json",
            "--output_dir",
            str(out),
            "--backbone",
            "mobilenet_v2",
            "--attacks",
            "['FGSM', 'PGD']",
            "--eps",
            "[0.03]",
            "--check_eps",
            "$None",
            "--worst_case",
            "True",
            "--structure_checks",
            "True",
            "--structure_check_kwargs",
            "{'steps': 2}",
        )
    )
    rows = list(csv.DictReader(open(out / "eval" / "robustness.csv")))
    roles = {(r["attack"], r["role"]) for r in rows}
    assert {("worst", "worst"), ("PGD", "check_bpda"), ("APGD", "check_apgd_strong"), ("worst", "check_worst")} <= roles
    with open(out / "eval" / "robustness_per_image.csv") as f:
        assert tuple(next(csv.reader(f))) == PER_IMAGE_COLUMNS
    assert "clamp_out_of_range" in json.loads((out / "eval" / "robustness.json").read_text())["structure"]


def test_default_settings_keep_todays_runs():
    """Without the overrides the trainer is built with adversarial_training 'none'."""
    template = json.loads(open(BUNDLES / "common" / "train.json").read())
    # "auto" (so that a resumed run takes the recorded value); a fresh run resolves it to "none"
    from monai_assim.bundle.run_setup import FIXED_DEFAULTS

    assert template["adversarial_training"] == "auto" and FIXED_DEFAULTS["adversarial_training"] == "none"
    assert template["train"]["trainer"]["at_eps"] == "$@settings['at_eps'] / 255"
    evaluate = json.loads(open(BUNDLES / "common" / "evaluate.json").read())
    assert evaluate["worst_case"] is False and evaluate["structure_checks"] is False
