"""The collapse guard in training and the single-class line of the robustness report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from helpers.bundle_runs import train_workflow
from ignite.engine import Engine

from monai_assim.data import make_synthetic_dataset
from monai_assim.engines import CollapseGuard
from monai_assim.handlers import AdversarialRobustnessHandler
from monai_assim.study import _tables_note

REPO = Path(__file__).resolve().parents[1]


def _engine(metrics: dict, epoch: int = 3) -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.metrics = dict(metrics)
    engine.state.epoch = epoch
    return engine


def test_the_guard_names_a_single_class_and_its_cause(caplog):
    got = []
    guard = CollapseGuard({"assimilation_map": "clamp", "assimilation_lr": 0.01}, on_warning=got.append)
    metrics = {"val_acc": 0.5, "val_pred_classes": 1, "val_saturation_texture": 0.93, "val_saturation_color": 0.1}
    with caplog.at_level(logging.WARNING):
        guard(_engine(metrics))
    assert len(got) == 1 and got[0]["kind"] == "single_class" and got[0]["epoch"] == 3
    message = got[0]["message"]
    assert "single class" in message and "T 93.0%" in message and "--assimilation_map sigmoid" in message
    assert "--assimilation_lr" in message and "0.01" in message
    assert "COLLAPSE GUARD" in caplog.text


def test_a_single_class_without_saturation_must_persist():
    """A first epoch that predicts one class is common in a healthy run: the guard waits for a second in a row."""
    got = []
    guard = CollapseGuard({}, on_warning=got.append)
    one = {"val_pred_classes": 1, "val_saturation_texture": 0.0, "val_saturation_color": 0.0}
    two = {**one, "val_pred_classes": 2}
    for epoch, metrics in enumerate([one, two, one, one, one], start=1):
        guard(_engine(metrics, epoch=epoch))
    assert [(w["epoch"], w["kind"]) for w in got] == [(4, "single_class"), (5, "single_class")]
    assert "2 epochs in a row" in got[0]["message"] and "diverged" in got[0]["message"]


def test_the_guard_warns_on_saturation_from_training_metrics_too():
    got = []
    guard = CollapseGuard({"assimilation_map": "sigmoid", "adversarial_training": "pgd", "at_eps": 2.0})
    guard.on_warning = got.append
    trainer = _engine({"train_saturation_texture": 0.2, "train_saturation_color": 0.7}, epoch=5)
    guard.set_trainer(trainer)
    guard(_engine({"val_pred_classes": 2, "val_saturation_texture": 0.1, "val_saturation_color": 0.3}))
    assert [w["kind"] for w in got] == ["saturation"] and got[0]["epoch"] == 5
    assert got[0]["saturation"] == {"texture": 0.2, "color": 0.7}
    assert "--at_eps" in got[0]["message"] and "--assimilation_map" not in got[0]["message"]


def test_the_guard_is_quiet_on_a_healthy_run():
    got = []
    guard = CollapseGuard({}, on_warning=got.append)
    guard(_engine({"val_pred_classes": 2, "val_saturation_texture": 0.4, "val_saturation_color": 0.0}))
    guard(_engine({"val_acc": 0.9}))  # a vanilla network: no saturation metrics
    assert got == [] and guard.warnings == []
    with pytest.raises(ValueError, match="saturation_threshold"):
        CollapseGuard(saturation_threshold=0)


class _Constant(torch.nn.Module):
    """Predicts class 0 for every image, whatever the input (a collapsed model); with ``w`` > 0, bright images
    go to class 1."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        score = x.mean(dim=(1, 2, 3)) * self.w
        return torch.stack([1.0 - score, score - 1.0], dim=1)


def test_the_report_says_single_class(tmp_path):
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1] * 4)
    handler = AdversarialRobustnessHandler(
        _Constant(), attacks={"FGSM": {}}, eps=(2 / 255,), check_eps=None, progress=False, output_dir=tmp_path
    )
    engine = Engine(lambda e, b: {"image": b[0], "label": b[1]})
    handler.attach(engine)
    engine.run([(x, y)], max_epochs=1)
    single = [line for line in handler.report if line.startswith("SINGLE CLASS")]
    assert len(single) == 1 and "class 0 for all 8" in single[0] and "0.5000" in single[0]
    doc = json.loads((tmp_path / "robustness.json").read_text())
    assert doc["single_class"] is True and doc["predicted_classes"] == {"0": 8, "1": 0}


def test_a_two_class_model_has_no_single_class_line(tmp_path):
    net = _Constant()
    with torch.no_grad():
        net.w.fill_(8.0)
    x = torch.cat([torch.full((4, 1, 8, 8), 0.05), torch.full((4, 1, 8, 8), 0.95)])
    handler = AdversarialRobustnessHandler(
        net, attacks={"FGSM": {}}, eps=(2 / 255,), check_eps=None, progress=False, output_dir=tmp_path
    )
    engine = Engine(lambda e, b: {"image": b[0], "label": b[1]})
    handler.attach(engine)
    engine.run([(x, torch.tensor([0] * 4 + [1] * 4))], max_epochs=1)
    assert not any(line.startswith("SINGLE CLASS") for line in handler.report)
    assert json.loads((tmp_path / "robustness.json").read_text())["single_class"] is False


def test_the_study_tables_say_single_class():  # the exported README: test_bundle_export.py
    note = _tables_note({}, ["seed0/assimilated_pgdat"])
    assert "SINGLE CLASS" in note and "seed0/assimilated_pgdat" in note
    assert _tables_note({}, []) == ""


@pytest.mark.slow
def test_a_run_that_saturates_is_warned_and_recorded(tmp_path):
    """A tiny real training whose T and C are driven out of range (clamp map, absurd assimilation lr)."""
    data = make_synthetic_dataset(tmp_path / "data", "chest_xray", n_per_class=6, size=32, seed=1)
    workflow = train_workflow(data, tmp_path / "run", seed=0, assimilation_map="clamp", assimilation_lr=100.0)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert summary["settings"]["assimilation_map"] == "clamp"
    warnings = summary["warnings"]
    assert warnings and warnings[0]["epoch"] == 1 and warnings[0]["kind"] in ("saturation", "single_class")
    assert "--assimilation_map sigmoid" in warnings[0]["message"]
    assert summary["epochs"][0]["val_saturation_texture"] > 0.5 or summary["epochs"][0]["val_saturation_color"] > 0.5


def test_the_end_of_run_line_says_when_the_kept_checkpoint_recovered(tmp_path):
    from monai_assim.bundle.run_summary import _guard_line

    found, summary = [{"epoch": 1, "kind": "single_class"}, {"epoch": 2, "kind": "single_class"}], tmp_path / "s.json"
    recovered = _guard_line("COLLAPSE GUARD", found, {"epoch": 3, "val_pred_classes": 2}, summary)
    assert recovered.startswith("COLLAPSE GUARD: 2 warning(s) in epoch(s) 1, 2; ")
    assert "the kept checkpoint is epoch 3" in recovered and "recovered" in recovered
    for best in ({"epoch": 2, "val_pred_classes": 2}, {"epoch": 3, "val_pred_classes": 1}, {"epoch": 3}, None):
        assert _guard_line("COLLAPSE GUARD", found, best, summary).endswith("before trusting this run.")
    assert "before trusting" in _guard_line(
        "CATASTROPHIC OVERFITTING", found, {"epoch": 3, "val_pred_classes": 2}, summary
    )
