"""AssimilationTrainer under MONAI's real engine machinery, checked against SupervisedTrainer itself."""

from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers.textured import OUTPUT_KEYS, SIZE, textured_dataset, textured_net
from ignite.engine import Events
from monai.bundle import ckpt_export
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler
from monai.utils.enums import CommonKeys as Keys

from monai_assim.engines import AssimilationTrainer, assimilation_output_transform
from monai_assim.losses import AssimilationLoss, GLCMLoss
from monai_assim.networks import AssimilationNet


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train an assimilated net for 5 epochs x 4 iterations with StatsHandler, TensorBoard and a checkpoint."""
    tmp = tmp_path_factory.mktemp("train")
    net = textured_net()
    loss = AssimilationLoss(alpha=0.5)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    loader = DataLoader(textured_dataset(32), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    logger = logging.getLogger("assimilation_trainer_test")
    records: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger.addHandler(_Keep())
    trainer = AssimilationTrainer(
        device="cpu",
        max_epochs=5,
        train_data_loader=loader,
        network=net,
        optimizer=optimizer,
        loss_function=loss,
        train_handlers=[
            StatsHandler(name="assimilation_trainer_test", output_transform=assimilation_output_transform),
            TensorBoardStatsHandler(log_dir=str(tmp / "tb"), output_transform=assimilation_output_transform),
            CheckpointSaver(save_dir=str(tmp / "ckpt"), save_dict={"network": net}, save_final=True),
        ],
    )
    fired = (
        IterationEvents.FORWARD_COMPLETED,
        IterationEvents.LOSS_COMPLETED,
        IterationEvents.BACKWARD_COMPLETED,
        IterationEvents.MODEL_COMPLETED,
    )  # the events SupervisedTrainer fires in each iteration
    history, events, checks = [], {e: 0 for e in fired}, []
    for event in fired:
        trainer.add_event_handler(event, lambda e, ev=event: events.__setitem__(ev, events[ev] + 1))

    @trainer.on(IterationEvents.LOSS_COMPLETED)
    def _oracle(engine):
        # recompute the objective independently from what the iteration stored (before decollation)
        out = engine.state.output
        x, y = out[Keys.IMAGE], out[Keys.LABEL]
        with torch.no_grad():
            rgb = engine.network.assimilate(x)
            glcm = GLCMLoss()(rgb, x)
        ce = F.cross_entropy(out[Keys.PRED].detach(), y.long())
        total = float(out["loss"].detach())
        checks.append((float(out["loss_ce"]), float(ce), float(out["loss_glcm"]), float(glcm), total))

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        history.append(assimilation_output_transform(engine.state.output))
        checks[-1] += (set(engine.state.output[0]),)

    logger.setLevel(logging.INFO)
    trainer.run()
    return {
        "net": net,
        "trainer": trainer,
        "history": history,
        "events": events,
        "checks": checks,
        "log": records,
        "tmp": tmp,
    }


def test_training_reduces_loss_and_glcm_term(trained):
    history = trained["history"]
    assert len(history) == 20
    first, last = history[:4], history[-4:]  # first and last epoch

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    assert mean(last, "loss") < 0.7 * mean(first, "loss")
    assert mean(last, "loss_ce") < mean(first, "loss_ce")
    assert mean(first, "loss_glcm") > 0.05  # T starts away from the identity
    assert mean(last, "loss_glcm") < 0.8 * mean(first, "loss_glcm")  # alpha < 1: texture is pulled back


def test_output_holds_the_terms_of_the_objective(trained):
    for ce, ce_oracle, glcm, glcm_oracle, total, keys in trained["checks"]:
        assert keys == OUTPUT_KEYS
        assert ce == pytest.approx(ce_oracle, rel=1e-5)
        assert glcm == pytest.approx(glcm_oracle, rel=1e-4, abs=1e-6)
        assert total == pytest.approx(0.5 * ce + 0.5 * glcm, rel=1e-5)


def test_events_and_handlers_of_the_monai_machinery(trained, tmp_path):
    assert all(count == 20 for count in trained["events"].values()), trained["events"]
    iteration_logs = [m for m in trained["log"] if "Iter:" in m]
    assert len(iteration_logs) == 20
    assert all("loss:" in m and "loss_ce:" in m and "loss_glcm:" in m for m in iteration_logs)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained["tmp"] / "tb"))
    events.Reload()
    assert {"loss", "loss_ce", "loss_glcm"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("loss_glcm")) == 20
    assert [s.value for s in events.Scalars("loss_ce")] == pytest.approx([h["loss_ce"] for h in trained["history"]])


def _run(trainer_cls, net, loss, accumulation_steps, iterations=3):
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(textured_dataset(16, seed=1), batch_size=4, shuffle=False)
    trainer = trainer_cls(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=optimizer,
        loss_function=loss,
        accumulation_steps=accumulation_steps,
        epoch_length=iterations,
    )
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output[0]))
    trainer.run()
    return losses, net


@pytest.mark.parametrize("case, accumulation_steps", [("vanilla net", 1), ("vanilla net", 2), ("plain loss", 1)])
def test_reduces_to_supervised_trainer_without_the_glcm_term(case, accumulation_steps):
    """A vanilla net (or a plain CE loss) trains exactly as MONAI's SupervisedTrainer with CE does."""
    torch.manual_seed(0)
    net = AssimilationNet("resnet18", 2, variant="vanilla" if case == "vanilla net" else "assimilated")
    reference = copy.deepcopy(net)
    ours = AssimilationLoss(alpha=0.3) if case == "vanilla net" else torch.nn.CrossEntropyLoss()
    losses, net = _run(AssimilationTrainer, net, ours, accumulation_steps)
    expected, reference = _run(SupervisedTrainer, reference, torch.nn.CrossEntropyLoss(), accumulation_steps)
    assert [float(o["loss"]) for o in losses] == pytest.approx([float(o["loss"]) for o in expected], rel=1e-5)
    assert all(float(o["loss_glcm"]) == 0.0 for o in losses)
    assert all(float(o["loss_ce"]) == float(o["loss"]) for o in losses)
    for (name, p), q in zip(net.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_amp_flag_is_device_agnostic():
    """amp=True on this CPU: bfloat16 autocast for the forward, no GradScaler, float32 loss."""
    net = textured_net(1)
    loader = DataLoader(textured_dataset(8), batch_size=4)
    trainer = AssimilationTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=AssimilationLoss(alpha=0.5),
        amp=True,
        decollate=False,
    )
    dtypes = []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: dtypes.append(e.state.output["pred"].dtype))
    trainer.run()
    assert trainer.scaler is None
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    out = trainer.state.output
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert float(out["loss_glcm"]) > 0


@pytest.mark.parametrize(
    "device, amp_kwargs, scaler",
    [("cuda", None, True), ("cuda", {"dtype": torch.float16}, True), ("cuda", {"dtype": torch.bfloat16}, False),
     ("cpu", None, False)],
)  # fmt: skip
def test_grad_scaler_only_for_float16_on_cuda(monkeypatch, device, amp_kwargs, scaler):
    """run() creates a GradScaler for float16 AMP on CUDA only (the decision alone: no step is run here)."""
    from monai.engines.workflow import Workflow

    monkeypatch.setattr(Workflow, "run", lambda self: None)
    net = AssimilationNet("mobilenet_v2", num_classes=2, pretrained="none")
    trainer = AssimilationTrainer(
        device=torch.device(device), max_epochs=1, train_data_loader=[], network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=AssimilationLoss(), amp=True,
        amp_kwargs=amp_kwargs,
    )  # fmt: skip
    with warnings.catch_warnings():  # GradScaler warns and disables itself where CUDA is absent
        warnings.simplefilter("ignore")
        trainer.run()
    assert isinstance(trainer.scaler, torch.amp.GradScaler) is scaler


def test_trace_and_ckpt_export_of_the_trained_net(trained, tmp_path):
    net = trained["net"].eval()
    x = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = net(x)
        traced = torch.jit.trace(net, torch.rand(1, 1, SIZE, SIZE))
        torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)

    checkpoints = sorted((trained["tmp"] / "ckpt").glob("*.pt"))  # written by MONAI's CheckpointSaver
    assert checkpoints
    config = tmp_path / "inference.json"
    config.write_text(
        '{"network_def": {"_target_": "monai_assim.networks.AssimilationNet", '
        '"backbone": "resnet18", "num_classes": 2, "variant": "assimilated"}}'
    )
    exported = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(exported),
        ckpt_file=str(checkpoints[-1]),
        config_file=str(config),
        meta_file=str(tmp_path / "absent_metadata.json"),
        use_trace=True,
        input_shape=[1, 1, SIZE, SIZE],
    )
    module = torch.jit.load(str(exported))
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
