"""
The catastrophic-overfitting guard: per epoch on scripted validation metrics (with robust selection's
checkpoint, and the run summary), and within the epoch on a real model whose robustness is switched off.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers.run_setup import setup
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator

from monai_assim.data import make_synthetic_dataset
from monai_assim.engines import CatastrophicOverfittingGuard, EpochSelection
from monai_assim.engines.overfitting_guard import overfitting_drop
from monai_assim.handlers import AtomicCheckpointSaver

SETTINGS = {
    "adversarial_training": "fgsm_rs",
    "at_eps": 8.0,
    "at_eps_warmup_epochs": 0,
    "lr_schedule": "none",
    "select_by": "robust",
    "val_robust_attack": "PGD",
    "val_robust_steps": 10,
    "val_robust_eps": 8.0,
}

#: epoch -> (val_acc, val_robust_acc): robust accuracy peaks at epoch 2, collapses at 4 while clean rises
SCRIPT = {
    1: (0.70, 0.30),
    2: (0.78, 0.42),  # the robust best
    3: (0.85, 0.40),
    4: (0.93, 0.03),  # catastrophic overfitting
    5: (0.96, 0.01),  # still
    6: (0.60, 0.02),  # clean accuracy fell too: not this failure (divergence)
}


def _train(tmp_path, script, guard):
    """A stand-in training (weight = epoch) validated each epoch with the scripted metrics, robust selection."""
    net = torch.nn.Linear(1, 2)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=[{"image": torch.zeros(1, 1), "label": torch.zeros(1)}], network=net
    )

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _scripted(engine):  # stands in for the metrics, which MONAI attaches before any handler
        clean, robust = script[engine.state.epoch]
        engine.state.metrics.update({"val_acc": clean, "val_robust_acc": robust, "val_pred_classes": 2})

    best = AtomicCheckpointSaver(tmp_path, {"network": net}, filename="best.pt", key_metric_name="val_select")
    for handler in (EpochSelection("robust"), guard, best):  # the bundles' order
        handler.attach(evaluator)

    def _step(engine, _):
        with torch.no_grad():
            net.weight.fill_(float(engine.state.epoch))

    trainer = Engine(_step)
    guard.set_trainer(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run(e.state.epoch))
    trainer.run([0], max_epochs=len(script))
    return torch.load(tmp_path / "best.pt", weights_only=True)


def test_a_robust_collapse_is_warned_and_the_robust_best_checkpoint_kept(tmp_path, caplog):
    got = []
    guard = CatastrophicOverfittingGuard(SETTINGS, on_warning=got.append)
    with caplog.at_level(logging.WARNING):
        best = _train(tmp_path, SCRIPT, guard)
    assert [(w["epoch"], w["kind"]) for w in got] == [(4, "catastrophic_overfitting"), (5, "catastrophic_overfitting")]
    first = got[0]
    assert first["robust_acc"] == 0.03 and first["best_robust_acc"] == 0.42 and first["best_at"] == "epoch 2"
    message = first["message"]
    assert "fell to 0.0300 from 0.4200 at epoch 2" in message and "PGD-10 at 8/255" in message
    assert "catastrophic overfitting of fgsm_rs training" in message
    assert "--adversarial_training n_fgsm" in message and "--at_eps_warmup_epochs" in message
    assert "--lr_schedule cosine" in message and "best.pt keeps the robust-best epoch" in message
    assert "CATASTROPHIC OVERFITTING" in caplog.text
    # the guard writes no metric: robust selection still keeps epoch 2 (its weights)
    assert best["epoch"] == 2 and float(best["network"]["weight"][0, 0]) == 2.0


def test_the_warning_goes_to_the_run_summary(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", "chest_xray", n_per_class=4, size=16, seed=0)
    run = setup(tmp_path / "run", data, adversarial_training="n_fgsm", at_eps=8)
    run.start()
    try:
        guard = CatastrophicOverfittingGuard(run.settings, on_warning=run.record_warning)
        _train(tmp_path, SCRIPT, guard)
    finally:
        run.release_folder()
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    warnings = summary["warnings"]
    assert [w["epoch"] for w in warnings] == [4, 5] and warnings[0]["kind"] == "catastrophic_overfitting"
    # N-FGSM's remedies: multi-step PGD, not N-FGSM again
    assert "--adversarial_training pgd" in warnings[0]["message"] and "n_fgsm (" not in warnings[0]["message"]
    assert summary["settings"]["co_probe_every"] == 0


def test_the_rule():
    assert overfitting_drop(0.03, 0.93, best_robust=0.42, best_clean=0.85)
    assert not overfitting_drop(0.25, 0.93, 0.42, 0.85)  # fell, but not to about 0
    assert not overfitting_drop(0.03, 0.70, 0.42, 0.85)  # clean accuracy fell too
    assert not overfitting_drop(0.01, 0.93, 0.05, 0.85)  # never robust: nothing to lose
    assert not overfitting_drop(0.03, 0.93, None, 0.0)  # the first epoch


def test_quiet_without_adversarial_training_on_a_healthy_run_and_after_resume(tmp_path):
    got = []
    plain = {**SETTINGS, "adversarial_training": "none"}
    _train(tmp_path, SCRIPT, CatastrophicOverfittingGuard(plain, on_warning=got.append))
    healthy = {e: (0.7 + 0.02 * e, 0.3 + 0.01 * e) for e in range(1, 6)}
    _train(tmp_path, healthy, CatastrophicOverfittingGuard(SETTINGS, on_warning=got.append))
    assert got == []
    # a resumed run replays the recorded epochs: a collapse right after the resume is still seen
    history = [{"epoch": 1, "val_acc": 0.78, "val_robust_acc": 0.42}]
    guard = CatastrophicOverfittingGuard(SETTINGS, on_warning=got.append, history=history)
    _train(tmp_path, {1: (0.9, 0.02)}, guard)
    assert len(got) == 1 and got[0]["best_at"] == "epoch 1"
    with pytest.raises(ValueError, match="drop_fraction"):
        CatastrophicOverfittingGuard(drop_fraction=0.0)


class Checkerboard(torch.nn.Module):
    """
    Class 1 for bright images; ``b`` adds a checkerboard detector, 0 on every constant image: clean accuracy
    does not depend on ``b``, robust accuracy does (b = 0: robust at 8/255; b large: fooled by a checkerboard).
    """

    num_classes = 2

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros(()))
        i = torch.arange(size)
        self.register_buffer("pattern", ((i[:, None] + i[None, :]) % 2 * 2 - 1).float())

    def forward(self, x):
        brightness = 8 * (x.mean(dim=(1, 2, 3)) - 0.5)
        checker = ((x - x.mean(dim=(2, 3), keepdim=True)) * self.pattern).mean(dim=(1, 2, 3))
        z = brightness + self.b * checker
        return torch.stack([-z, z], dim=1)


def test_the_probe_sees_a_collapse_within_the_epoch():
    """A real PGD probe on a held-out batch every 2 iterations; the model loses its robustness at iteration 5."""
    net = Checkerboard()
    images = torch.cat([torch.full((6, 1, 8, 8), 0.3), torch.full((6, 1, 8, 8), 0.7)])
    labels = torch.tensor([0] * 6 + [1] * 6)
    loader = [{"image": images[i : i + 4], "label": labels[i : i + 4]} for i in range(0, 12, 4)]

    def _step(engine, _):
        with torch.no_grad():
            net.b.fill_(0.0 if engine.state.iteration < 5 else 1000.0)

    trainer = Engine(_step)
    trainer.network = net
    got = []
    guard = CatastrophicOverfittingGuard(
        SETTINGS, on_warning=got.append, probe_loader=loader, probe_every=2, probe_per_class=3, probe_steps=3
    )
    guard.set_trainer(trainer)
    guard.set_trainer(trainer)  # once attached is enough
    torch.manual_seed(0)
    trainer.run([0] * 4, max_epochs=2)  # 8 iterations: probes at 2, 4, 6, 8
    after_training = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after_training)  # the probes left the random stream alone
    assert [(p["iteration"], p["robust"], p["clean"]) for p in guard.probes] == [
        (2, 1.0, 1.0),
        (4, 1.0, 1.0),
        (6, 0.0, 1.0),
        (8, 0.0, 1.0),
    ]
    assert [(w["epoch"], w["iteration"], w["kind"]) for w in got] == [
        (2, 6, "catastrophic_overfitting_probe"),
        (2, 8, "catastrophic_overfitting_probe"),
    ]
    assert "PGD-3 at 8/255 on 6 held-out images" in got[0]["message"] and got[0]["best_at"] == "iteration 2"
    assert guard.probe_batch(torch.device("cpu"))[1].tolist() == [0, 0, 0, 1, 1, 1]  # stratified, fixed
