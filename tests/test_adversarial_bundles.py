"""The adversarial-training and robustness-report overrides of the bundles, through the CLI users type."""

from __future__ import annotations

import csv
import json

import pytest
from helpers.bundle_runs import BUNDLES, TINY, bundle_cmd, run_ok, tiny_dataset, train_workflow

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
            "--attack_budget",
            "none",
        )
    )
    rows = list(csv.DictReader(open(out / "eval" / "robustness.csv")))
    roles = {(r["attack"], r["role"]) for r in rows}
    assert {("worst", "worst"), ("PGD", "check_bpda"), ("APGD", "check_apgd_strong"), ("worst", "check_worst")} <= roles
    with open(out / "eval" / "robustness_per_image.csv") as f:
        assert tuple(next(csv.reader(f))) == PER_IMAGE_COLUMNS
    assert "saturation" in json.loads((out / "eval" / "robustness.json").read_text())["structure"]


def test_default_settings_keep_todays_runs():
    """Without the overrides the trainer is built with adversarial_training 'none'."""
    from monai_assim.bundle.generate import with_settings

    template = with_settings(json.loads(open(BUNDLES / "common" / "train.json").read()))  # the settings from the table
    # "auto" (so that a resumed run takes the recorded value); a fresh run resolves it to "none"
    from monai_assim.bundle.run_setup import FIXED_DEFAULTS

    assert template["adversarial_training"] == "auto" and FIXED_DEFAULTS["adversarial_training"] == "none"
    assert template["train"]["trainer"]["at_eps"] == "$@settings['at_eps'] / 255"
    evaluate = json.loads(open(BUNDLES / "common" / "evaluate.json").read())
    assert evaluate["worst_case"] is False and evaluate["structure_checks"] is False


def _train_in_process(data, out, **overrides):
    """train.json in-process (``monai.bundle.ConfigWorkflow``, what ``monai.bundle run`` drives); its run summary."""
    settings = {"epochs": 3, "batch_size": 8, "variant": "vanilla", "learning_rate": 1e-3, "val_fraction": 0.3}
    workflow = train_workflow(data, out, seed=5, **{**settings, **overrides})
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return json.loads((out / "run_summary.json").read_text())


def _ckpt(out, name):
    import torch

    return torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)


def _argmax_epoch(epochs, key):
    best = max(e[key] for e in epochs)
    return next(e["epoch"] for e in epochs if e[key] == best)  # the first epoch reaching it, as the saver keeps


@pytest.mark.slow
def test_checkpoint_selection_in_the_bundle(tmp_path, capfd):
    """
    Under adversarial training best.pt follows the robust score logged per epoch, best_clean.pt the clean
    accuracy; the robust validation does not change what the run learns (select_by clean trains the same
    weights and keeps best_clean.pt's epoch as best.pt); without adversarial training nothing changes.
    """
    import torch

    from monai_assim.bundle import checkpoint_path, load_datalist
    from monai_assim.errors import MissingInputError

    data = tiny_dataset(tmp_path, "chest_xray", n=16)
    at = {"adversarial_training": "pgd", "at_eps": 8, "at_steps": 1, "val_robust_steps": 2}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-reproducible: the two runs below are compared exactly
    try:
        capfd.readouterr()
        robust = _train_in_process(data, tmp_path / "robust", **at)
        robust_console = "".join(capfd.readouterr())
        clean = _train_in_process(data, tmp_path / "clean", select_by="clean", **at)
        plain = _train_in_process(data, tmp_path / "plain")
    finally:
        torch.set_num_threads(threads)

    sel = robust["selection"]
    assert robust["settings"]["select_by"] == "robust" and robust["settings"]["val_robust_eps"] == 8.0
    assert sel["metric"] == robust["best_metric_name"] == "val_robust_acc"
    n_val = len(load_datalist(tmp_path / "robust", "validation"))
    assert sel["robust_validation"]["description"] == "PGD-2 at 8/255" and sel["robust_validation"]["images"] == n_val
    epochs = robust["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(
        {"val_acc", "val_robust_acc", "val_robust_acc_seconds", "val_pred_classes", "val_select"} <= set(e)
        for e in epochs
    )
    assert _ckpt(tmp_path / "robust", "best.pt")["epoch"] == robust["best_epoch"] == _argmax_epoch(epochs, "val_select")
    assert robust["best_metric"] == robust["best_validation"]["val_robust_acc"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "robust" / "tensorboard"))
    events.Reload()  # TensorBoard holds the robust validation accuracy of every epoch, as the summary does
    assert [s.value for s in events.Scalars("val_robust_acc")] == pytest.approx([e["val_robust_acc"] for e in epochs])
    console = [line for line in robust_console.splitlines() if "Metrics --" in line and "val_robust_acc:" in line]
    assert len(console) == 3  # and so does the console, once an epoch
    assert _ckpt(tmp_path / "robust", "best_clean.pt")["epoch"] == _argmax_epoch(epochs, "val_acc")
    assert sel["other_checkpoint"] == {"file": "best_clean.pt", "epoch": _argmax_epoch(epochs, "val_acc")}

    # same training whatever the rule: identical last weights and per-epoch metrics
    last = {name: _ckpt(tmp_path / name, "last.pt")["network"] for name in ("robust", "clean")}
    assert all(torch.equal(last["robust"][k], last["clean"][k]) for k in last["robust"])
    assert [e["val_robust_acc"] for e in clean["epochs"]] == [e["val_robust_acc"] for e in epochs]
    assert clean["settings"]["select_by"] == "clean" and clean["best_metric_name"] == "val_acc"
    best_clean, best = _ckpt(tmp_path / "robust", "best_clean.pt"), _ckpt(tmp_path / "clean", "best.pt")
    assert best_clean["epoch"] == best["epoch"] and all(
        torch.equal(best_clean["network"][k], best["network"][k]) for k in best["network"]
    )
    assert _ckpt(tmp_path / "clean", "best_robust.pt")["epoch"] == robust["best_epoch"]
    assert checkpoint_path(tmp_path / "robust", "best_clean").endswith("best_clean.pt")

    # no adversarial training: clean selection, no robust validation, no second checkpoint
    assert plain["settings"]["select_by"] == "clean" and "robust_validation" not in plain["selection"]
    assert "val_robust_acc" not in plain["epochs"][0]
    assert _ckpt(tmp_path / "plain", "best.pt")["epoch"] == _argmax_epoch(plain["epochs"], "val_acc")
    with pytest.raises(MissingInputError, match="best_robust.pt"):
        checkpoint_path(tmp_path / "plain", "best_robust")
