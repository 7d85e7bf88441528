"""The eps warm-up and the learning-rate schedules of (adversarial) training, per iteration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers.bundle_runs import train_workflow
from helpers.tiny_nets import TinyNet, synthetic_data
from ignite.engine import Events
from monai.handlers import LrScheduleHandler

from monai_assim.engines import AssimilationTrainer, EpsWarmup, lr_scheduler

EPS = 8 / 255
REPO = Path(__file__).resolve().parents[1]


def _trainer(mode: str, epochs: int, handlers=(), lr: float = 0.1, iterations: int = 3) -> AssimilationTrainer:
    """A TinyNet trainer over ``iterations`` batches of 4 per epoch; two parameter groups (lr and lr / 10)."""
    torch.manual_seed(0)
    net = TinyNet()
    x, y = synthetic_data(4 * iterations, seed=3)
    loader = [{"image": x[i : i + 4], "label": y[i : i + 4]} for i in range(0, 4 * iterations, 4)]
    params = list(net.parameters())
    optimizer = torch.optim.SGD([{"params": params[:2], "lr": lr}, {"params": params[2:], "lr": lr / 10}], lr=lr)
    trainer = AssimilationTrainer(
        device="cpu",
        max_epochs=epochs,
        train_data_loader=loader,
        network=net,
        loss_function=torch.nn.CrossEntropyLoss(),
        optimizer=optimizer,
        decollate=False,
        adversarial_training=mode,
        at_eps=EPS,
        train_handlers=list(handlers),
    )
    return trainer


def test_the_step_sees_eps_ramp_up_per_iteration():
    """Warm-up over 2 epochs of 3 iterations: eps_i = eps * min(1, i / 6), i = 1 ... 9; the crafting uses it."""
    trainer = _trainer("fgsm_rs", epochs=3, handlers=[EpsWarmup(warmup_epochs=2)])
    seen, reach = [], []
    perturb = trainer.step.perturb

    def recording(network, x, labels):
        seen.append(trainer.step.eps)
        adv = perturb(network, x, labels)
        reach.append(float((adv - x).abs().max()))
        return adv

    trainer.step.perturb = recording
    trainer.run()
    expected = [EPS * min(1.0, i / 6) for i in range(1, 10)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=0)
    assert all(r <= e + 1e-6 for r, e in zip(reach, expected)) and reach[0] > 0  # the examples use it
    assert trainer.state.at_eps == pytest.approx(EPS) and trainer.step.eps == pytest.approx(EPS)


def test_no_warm_up_and_no_attack_leave_the_step_alone():
    trainer = _trainer("n_fgsm", epochs=1, handlers=[EpsWarmup(warmup_epochs=0)])
    trainer.run()
    assert trainer.step.eps == EPS and not hasattr(trainer.state, "at_eps")
    _trainer("none", epochs=1, handlers=[EpsWarmup(warmup_epochs=2)]).run()  # nothing to warm up: no error
    with pytest.raises(ValueError, match="warmup_epochs"):
        EpsWarmup(-1)


def _lrs_per_iteration(schedule: str, epochs: int = 4, iterations: int = 3) -> list[list[float]]:
    """The learning rate of each parameter group at each iteration of a run with ``schedule``."""
    trainer = _trainer("none", epochs=epochs, iterations=iterations)
    scheduler = lr_scheduler(trainer.optimizer, schedule, epochs * iterations)
    if scheduler is not None:
        LrScheduleHandler(scheduler, print_lr=False, epoch_level=False).attach(trainer)
    lrs = []
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda e: lrs.append([g["lr"] for g in e.optimizer.param_groups])
    )
    trainer.run()
    return lrs


@pytest.mark.parametrize(
    "schedule, factor",
    [
        ("none", lambda t: 1.0),
        ("cosine", lambda t: 0.5 * (1 + math.cos(math.pi * t / 12))),
        ("step", lambda t: 1.0 if t < 6 else 0.1 if t < 9 else 0.01),  # drops at 50% and 75% of 12 iterations
    ],
)
def test_the_learning_rate_follows_the_schedule_per_iteration(schedule, factor):
    lrs = _lrs_per_iteration(schedule)
    expected = [[0.1 * factor(i - 1), 0.01 * factor(i - 1)] for i in range(1, 13)]  # iteration i: f(i - 1)
    assert len(lrs) == 12
    for got, want in zip(lrs, expected):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_a_resumed_schedule_continues_exactly():
    """Its state is checkpointed; resumed with the same length it continues the curve, with more epochs the longer one."""

    def fresh(total):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return optimizer, lr_scheduler(optimizer, "cosine", total)

    optimizer, scheduler = fresh(10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    saved = {"optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict()}
    for total in (10, 20):
        resumed_opt, resumed = fresh(total)
        resumed_opt.load_state_dict(saved["optimizer"])
        resumed.load_state_dict(saved["lr_scheduler"])
        resumed_opt.step()
        resumed.step()
        assert resumed_opt.param_groups[0]["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi * 5 / total)))
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_scheduler(optimizer, "linear", 10)


@pytest.mark.slow
def test_the_bundle_records_and_wires_the_schedules(tmp_path):
    """train.json with N-FGSM, eps warm-up, cosine schedule and the probe: settings, checkpoint, final lr and eps."""

    from monai_assim.data import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", "chest_xray", n_per_class=6, size=32, seed=1)
    workflow = train_workflow(
        data,
        tmp_path / "run",
        epochs=2,
        backbone="mobilenet_v2",
        variant="vanilla",
        val_fraction=0.3,
        adversarial_training="n_fgsm",
        at_eps=4,
        at_eps_warmup_epochs=1,
        lr_schedule="COSINE",
        co_probe_every=1,
        val_robust_steps=2,
    )
    workflow.initialize()
    seen = []
    trainer = workflow.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append((e.step.eps, e.optimizer.param_groups[0]["lr"]))
    )
    workflow.run()
    workflow.finalize()
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    settings = summary["settings"]
    assert settings["lr_schedule"] == "cosine" and settings["at_eps_warmup_epochs"] == 1.0
    assert settings["co_probe_every"] == 1 and settings["adversarial_training"] == "n_fgsm"
    n = len(seen) // 2  # iterations per epoch
    assert [e for e, _ in seen] == pytest.approx([4 / 255 * min(1, i / n) for i in range(1, 2 * n + 1)])
    assert seen[-1][1] == pytest.approx(0.0, abs=1e-12)  # cosine over the run: 0 after the last step
    guard = workflow.parser.get_parsed_content("validate#overfitting_guard")
    assert [p["iteration"] for p in guard.probes] == list(range(1, 2 * n + 1))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["lr_scheduler"]["last_epoch"] == 2 * n
