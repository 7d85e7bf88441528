"""
Which epoch a run keeps: ``EpochSelection`` with the bundles' "best" savers and early stopping, driven by
scripted per-epoch validation metrics through a MONAI evaluator called from a trainer, as
``ValidationHandler`` calls it.
"""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator
from monai.handlers import EarlyStopHandler, stopping_fn_from_metric

from monai_assim.engines import EpochSelection, selection_score
from monai_assim.handlers import AtomicCheckpointSaver

#: epoch -> (val_acc, val_robust_acc, val_pred_classes)
SCRIPT = {
    1: (0.90, 0.10, 2),
    2: (0.99, 0.20, 2),  # clean best
    3: (0.95, 0.50, 1),  # one class predicted: its robust accuracy is the class share
    4: (0.93, 0.40, 2),
    5: (0.97, 0.40, 2),  # ties epoch 4 on robust accuracy, higher clean: the robust best
    6: (0.98, 0.30, 2),
}


def _run(tmp_path, script, select_by="robust", patience=None, old_clean_config=False, robust=True):
    """
    Train a stand-in network for ``len(script)`` epochs (its weight is set to the epoch number), validating
    each epoch with the scripted metrics; returns the savers, the selection records and the last epoch run.
    """
    net = torch.nn.Linear(1, 2)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=[{"image": torch.zeros(1, 1), "label": torch.zeros(1)}], network=net
    )

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _scripted(engine):  # stands in for the metrics, which MONAI attaches before any handler
        clean, rob, classes = script[engine.state.epoch]
        engine.state.metrics.update({"val_acc": clean, "val_pred_classes": classes})
        if robust:
            engine.state.metrics["val_robust_acc"] = rob

    records = []
    if old_clean_config:  # the bundles before selection: saver and early stopping on val_acc itself
        key, handlers = "val_acc", []
    else:
        key, handlers = "val_select", [EpochSelection(select_by, on_epoch=records.append)]
    best = AtomicCheckpointSaver(tmp_path, {"network": net}, filename="best.pt", key_metric_name=key)
    other_key = "val_acc" if select_by == "robust" else "val_select_robust"
    other = AtomicCheckpointSaver(
        tmp_path, {"network": net}, filename="best_other.pt", key_metric_name=other_key, require_metric=False
    )
    for h in [*handlers, best, other]:
        h.attach(evaluator)

    def _step(engine, _):
        with torch.no_grad():
            net.weight.fill_(float(engine.state.epoch))

    trainer = Engine(_step)
    if patience is not None:
        EarlyStopHandler(patience=patience, score_function=stopping_fn_from_metric(key), trainer=trainer).attach(
            evaluator
        )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run(e.state.epoch))
    trainer.run([0], max_epochs=len(script))
    return best, other, records, trainer.state.epoch


def _saved_epoch(path) -> int:
    ckpt = torch.load(path, weights_only=True)
    assert float(ckpt["network"]["weight"][0, 0]) == ckpt["epoch"]  # the weights of that epoch
    return int(ckpt["epoch"])


def test_robust_selection_follows_robust_accuracy_and_the_single_class_rule(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        best, other, records, _ = _run(tmp_path, SCRIPT, "robust")
    assert _saved_epoch(tmp_path / "best.pt") == best.best_epoch == 5
    assert _saved_epoch(tmp_path / "best_other.pt") == other.best_epoch == 2  # the clean rule's choice
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["single_class"] for r in records] == [False, False, True, False, False, False]
    assert records[2]["val_select"] < 0 <= min(r["val_select"] for i, r in enumerate(records) if i != 2)
    assert "epoch 3: the model predicts a single class" in caplog.text and "ranked below" in caplog.text


def test_single_class_epoch_never_wins_even_alone_at_the_top(tmp_path):
    script = {1: (0.60, 0.05, 2), 2: (0.50, 0.50, 1), 3: (0.55, 0.00, 2)}
    best, *_ = _run(tmp_path, script, "robust")
    assert best.best_epoch == 1


def test_clean_selection_behaves_as_the_clean_config_did(tmp_path):
    """select_by clean: the same best epoch and the same early stop as a saver and EarlyStopHandler on val_acc."""
    script = {**SCRIPT, 7: (0.80, 0.9, 2), 8: (0.97, 0.9, 2), 9: (0.999, 0.9, 2)}
    new = _run(tmp_path / "new", script, "clean", patience=4)
    old = _run(tmp_path / "old", script, "clean", patience=4, old_clean_config=True)
    assert (new[0].best_epoch, new[3]) == (old[0].best_epoch, old[3]) == (2, 6)
    assert new[0].best_metric == old[0].best_metric == 0.99  # the score is val_acc itself
    assert _saved_epoch(tmp_path / "new" / "best_other.pt") == 5  # best_robust.pt: the robust rule's choice


def test_clean_selection_without_robust_validation_saves_no_robust_checkpoint(tmp_path):
    best, other, records, _ = _run(tmp_path, SCRIPT, "clean", robust=False)
    assert best.best_epoch == 2 and other.best_epoch is None and not (tmp_path / "best_other.pt").exists()
    assert "val_robust_acc" not in records[0]


def test_robust_early_stopping_follows_the_robust_score(tmp_path):
    # robust accuracy peaks at epoch 2 while clean accuracy keeps rising (robust overfitting)
    script = {1: (0.8, 0.3, 2), 2: (0.85, 0.5, 2), 3: (0.9, 0.45, 2), 4: (0.95, 0.4, 2), 5: (0.99, 0.35, 2)}
    best, _, _, stopped = _run(tmp_path, script, "robust", patience=2)
    assert best.best_epoch == 2 and stopped == 4


def test_robust_selection_needs_the_robust_metric(tmp_path):
    with pytest.raises(KeyError, match="val_robust_acc"):
        _run(tmp_path, SCRIPT, "robust", robust=False)


def test_selection_score():
    assert selection_score("clean", 0.9, 0.1, 1) == 0.9
    assert selection_score("robust", 0.9, 0.5, 2) > selection_score("robust", 0.8, 0.5, 2) > 0.5
    assert selection_score("robust", 1.0, 0.5, 2) < selection_score("robust", 0.0, 0.5 + 1e-4, 2)
    assert selection_score("robust", 1.0, 1.0, 1) < selection_score("robust", 0.0, 0.0, 2)
    with pytest.raises(ValueError):
        selection_score("robust", 0.9)
    with pytest.raises(ValueError):
        EpochSelection("clean_acc")


def test_saver_state_of_another_metric_starts_afresh(tmp_path, caplog):
    net = torch.nn.Linear(1, 1)
    saver = AtomicCheckpointSaver(tmp_path, {"network": net}, filename="best.pt", key_metric_name="val_select")
    saver.load_state_dict({"best_metric": 0.98, "best_epoch": 2})  # written by a saver on val_acc
    assert saver.best_metric is None and "starts afresh" in caplog.text
    saver.load_state_dict({"best_metric": 0.4, "best_epoch": 3, "key_metric_name": "val_select"})
    assert (saver.best_metric, saver.best_epoch) == (0.4, 3)
