"""
Wiring of train.json that a bundle run must show, checked on tiny in-process
trainings of the real config (``monai.bundle.ConfigWorkflow``, the object ``python -m monai.bundle run``
drives):

- the loss the trainer optimises is ``alpha * loss_ce + (1 - alpha) * loss_glcm`` for the configured alpha;
- the optimiser steps: the trained weights differ from the initial ones;
- ``--resume True`` restores network, optimiser and trainer from ``last.pt``, and 1 epoch + resume to 2
  gives the same weights as 2 epochs in one go.

Three trainings of a ResNet18 (no dropout) on 32 px images, 2 + 1 + 1 epochs of 3 iterations, shared
by the tests. The data order and augmentation are fixed by overrides (no shuffling, rotation and zoom
with probability 0), so that the resumed run can be compared with the uninterrupted one exactly: with
shuffling the resumed run would draw a different order for epoch 2 from the freshly seeded generator.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from monai_assim.data import make_synthetic_dataset
from monai_assim.engines import assimilation_output_transform

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "chest_xray"
ALPHA = 0.5


def _overrides(data: Path, output_dir: Path, epochs: int, **extra) -> dict:
    return {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(data),
        "output_dir": str(output_dir),
        "image_size": 32,
        "epochs": epochs,
        "batch_size": 4,
        "backbone": "resnet18",
        "pretrained": "none",
        "alpha": ALPHA,
        "learning_rate": 1e-3,
        "num_workers": 0,
        "seed": 3,
        "train#dataloader#shuffle": False,
        "train#preprocessing#transforms#6#prob": 0.0,  # RandRotated
        "train#preprocessing#transforms#7#prob": 0.0,  # RandZoomd
        **extra,
    }


def _params(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.named_parameters()}


def train(data: Path, output_dir: Path, epochs: int, **extra) -> dict:
    """
    Run train.json in-process; return the initial and final parameters, each iteration's logged loss terms
    and, at the start of the first epoch run (after a resume: right after the checkpoint was loaded), the
    network, optimiser and trainer state.
    """
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "train.json"),
        logging_file=False,
        workflow_type="train",
        **_overrides(data, output_dir, epochs, **extra),
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    network = workflow.parser.get_parsed_content("network")
    optimizer = workflow.parser.get_parsed_content("optimizer")
    record: dict = {"initial": _params(network), "terms": []}

    @trainer.on(Events.EPOCH_STARTED(once=1) | Events.EPOCH_STARTED(once=epochs))
    def _at_first_epoch(engine):  # EPOCH_STARTED fires after the resume loader's STARTED handler
        record.setdefault(
            "at_start",
            {
                "network": {k: v.detach().clone() for k, v in network.state_dict().items()},
                "optimizer": copy.deepcopy(optimizer.state_dict()),  # state_dict() holds the live tensors
                "epoch": engine.state.epoch,
                "iteration": engine.state.iteration,
            },
        )

    @trainer.on(Events.ITERATION_COMPLETED)
    def _log_terms(engine):  # the values StatsHandler logs (same output_transform)
        record["terms"].append(assimilation_output_transform(engine.state.output))

    workflow.run()
    workflow.finalize()
    record["final"] = _params(network)
    record["state"] = (trainer.state.epoch, trainer.state.iteration)
    record["loss_alpha"] = workflow.parser.get_parsed_content("loss").alpha
    return record


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """2 epochs in one go; 1 epoch; the 1-epoch run resumed to 2 epochs (same seed, same data order)."""
    root = tmp_path_factory.mktemp("wiring")
    data = make_synthetic_dataset(root / "data", "chest_xray", n_per_class=6, size=32, seed=1)
    full = train(data, root / "full", epochs=2)
    first = train(data, root / "resumed", epochs=1)
    last_pt = torch.load(root / "resumed" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    resumed = train(data, root / "resumed", epochs=2, resume=True)
    return {"full": full, "first": first, "resumed": resumed, "last_pt": last_pt}


@pytest.mark.slow
def test_loss_is_alpha_weighted_sum_of_logged_terms(runs):
    """Every iteration: loss == alpha * loss_ce + (1 - alpha) * loss_glcm for the configured alpha (0.5)."""
    terms = runs["full"]["terms"]
    assert runs["full"]["loss_alpha"] == ALPHA and len(terms) == 6
    for t in terms:
        assert t["loss"] == pytest.approx(ALPHA * t["loss_ce"] + (1 - ALPHA) * t["loss_glcm"], rel=1e-5, abs=1e-7), t
    # the GLCM term is really there (T and C move after the first step), so a dropped term would show
    assert max(abs(t["loss_glcm"] - t["loss_ce"]) for t in terms) > 1e-2
    assert max(t["loss_glcm"] for t in terms[1:]) > 1e-4


@pytest.mark.slow
def test_trainer_steps_the_optimizer(runs):
    """The trained weights differ from the initial ones: backbone, texture and colour modules all move."""
    initial, final = runs["full"]["initial"], runs["full"]["final"]
    moved = {k for k in initial if not torch.equal(initial[k], final[k])}
    for part in ("backbone.", "texture.", "color."):
        names = [k for k in initial if k.startswith(part)]
        assert names and any(k in moved for k in names), f"no {part}* parameter changed in training"
    assert len(moved) > 0.5 * len(initial), f"only {len(moved)} of {len(initial)} parameters changed"


@pytest.mark.slow
def test_resume_restores_network_optimizer_and_trainer(runs):
    """Right after --resume True loads last.pt, network, optimiser and trainer are the checkpoint's."""
    ckpt, start = runs["last_pt"], runs["resumed"]["at_start"]
    assert (start["epoch"], start["iteration"]) == (2, 3)  # starts the 2nd epoch, after 3 iterations
    assert ckpt["trainer"]["iteration"] == 3
    assert start["network"].keys() == ckpt["network"].keys()
    for k, v in ckpt["network"].items():
        assert torch.equal(start["network"][k], v), f"network {k} not restored"
    # the fresh network of the resumed process would have started from the (seeded) initial weights
    assert any(not torch.equal(runs["resumed"]["initial"][k], ckpt["network"][k]) for k in runs["resumed"]["initial"])
    opt, opt_ckpt = start["optimizer"]["state"], ckpt["optimizer"]["state"]
    assert opt.keys() == opt_ckpt.keys() and len(opt) > 0, "optimizer state not restored"
    for i, state in opt_ckpt.items():
        assert int(opt[i]["step"]) == int(state["step"]) == 3
        assert torch.equal(opt[i]["exp_avg"], state["exp_avg"]) and torch.equal(
            opt[i]["exp_avg_sq"], state["exp_avg_sq"]
        )


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(runs):
    """1 epoch, then --resume True to 2 epochs: the same weights as 2 epochs in one go, and only epoch 2 was run."""
    full, resumed = runs["full"], runs["resumed"]
    assert full["state"] == resumed["state"] == (2, 6)
    assert len(resumed["terms"]) == 3  # only the 2nd epoch's iterations
    for a, b in zip(full["terms"][3:], resumed["terms"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for k, v in full["final"].items():
        torch.testing.assert_close(resumed["final"][k], v, rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
    # and the first run's weights after epoch 1 are not those after epoch 2 (the comparison is not vacuous)
    assert any(not torch.equal(runs["first"]["final"][k], full["final"][k]) for k in full["final"])
