"""AdversarialRobustnessHandler on ignite / MONAI engines, checked against torchattacks called directly."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torchattacks
from helpers.attack_checks import BATCH, direct_accuracy, tuple_loader
from helpers.tiny_nets import TinyNet, synthetic_data, trained_tiny_net
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import MetricsSaver, ValidationHandler

from monai_assim.handlers import RESULT_COLUMNS, AdversarialRobustnessHandler, robustness_metric_names


def plain_engine() -> Engine:
    return Engine(lambda engine, batch: None)


def test_handler_equals_torchattacks_and_writes_files(tmp_path):
    net = trained_tiny_net()
    loader, x, y = tuple_loader()
    eps = (0.0, 2 / 255, 8 / 255)
    attacks = {"FGSM": {}, "PGD": {"steps": 5}}
    handler = AdversarialRobustnessHandler(
        net, attacks=attacks, eps=eps, seed=11, output_dir=tmp_path, variant="vanilla", progress=True
    )
    engine = plain_engine()
    handler.attach(engine)
    engine.run(loader)
    m = engine.state.metrics

    assert list(m) == robustness_metric_names(attacks, eps)  # documented, stable names and order
    with torch.no_grad():
        clean = (net(x).argmax(1) == y).float().mean().item()
    assert m["adv_clean_acc"] == clean
    for a in attacks:
        assert m[f"adv_{a}_eps0_acc"] == clean
    for e in eps:
        k = f"{round(e * 255, 4):g}"
        assert m[f"adv_FGSM_eps{k}_acc"] == direct_accuracy(net, x, y, lambda e=e: torchattacks.FGSM(net, eps=e), 11)
        pgd = lambda e=e: torchattacks.PGD(net, eps=e, alpha=2.5 * e / 5, steps=5, random_start=True)  # noqa: E731
        assert m[f"adv_PGD_eps{k}_acc"] == direct_accuracy(net, x, y, pgd, 11)
    assert m["adv_PGD_eps8_acc"] < m["adv_PGD_eps2_acc"] <= clean
    assert m["adv_check_PGD_eps64_acc"] <= 0.1 and m["adv_gradient_masking"] == 0.0

    with open(tmp_path / "robustness.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == RESULT_COLUMNS
    assert len(rows) == 1 + len(attacks) * len(eps) + 1
    payload = json.loads((tmp_path / "robustness.json").read_text())
    assert payload["variant"] == "vanilla" and payload["seed"] == 11
    for r_csv, r_json in zip(rows, payload["rows"]):
        assert r_csv["attack"] == r_json["attack"] and float(r_csv["eps"]) == r_json["eps"]
        assert int(r_csv["n"]) == r_json["n"] == len(x)
        assert float(r_csv["accuracy"]) == r_json["accuracy"]
        assert r_json["variant"] == "vanilla" and r_json["seed"] == 11 and r_json["seconds"] >= 0
        if r_json["role"] == "attack":
            k = f"{r_json['eps_255']:g}"
            assert r_json["accuracy"] == m[f"adv_{r_json['attack']}_eps{k}_acc"]
            expected = r_json["n_success"] / r_json["n_clean_correct"]
            assert r_json["success_rate"] == m[f"adv_{r_json['attack']}_eps{k}_asr"] == expected
    assert any("check passed" in line for line in payload["report"])
    hint = next(line for line in payload["report"] if "Square (black-box) not run" in line)
    # why, and the settings that add it: the handler's and the bundles' override
    assert "include no black-box attack" in hint
    assert "attacks={'FGSM': {}, 'PGD': {'steps': 5}, 'Square': {'n_queries': 100}}" in hint
    assert "attack_eps={'Square': [8 / 255]}" in hint
    assert "evaluate.json --attacks \"{'FGSM': {}, 'PGD': {'steps': 5}, 'Square': {'n_queries': 100}}\"" in hint


def test_grouped_eps_matches_per_eps():
    net = trained_tiny_net()
    loader, _, _ = tuple_loader()
    results = []
    for group in (1, 3):
        engine = plain_engine()
        AdversarialRobustnessHandler(
            net,
            attacks={"FGSM": {}, "BIM": {"steps": 3}},
            eps=(1 / 255, 4 / 255, 6 / 255),
            check_eps=None,
            group_eps=group,
            progress=False,
        ).attach(engine)
        engine.run(loader)
        results.append(engine.state.metrics)
    assert results[0] == results[1]


@pytest.mark.parametrize("label_fn", [lambda y: y[:, None], lambda y: torch.nn.functional.one_hot(y, 2).float()])
def test_label_shapes_accepted(label_fn):
    net = trained_tiny_net()
    ref_loader, _, _ = tuple_loader()
    loader, _, _ = tuple_loader(label_fn=label_fn)
    metrics = []
    for data in (ref_loader, loader):
        engine = plain_engine()
        AdversarialRobustnessHandler(net, attacks=["FGSM"], eps=(4 / 255,), check_eps=None, progress=False).attach(
            engine
        )
        engine.run(data)
        metrics.append(engine.state.metrics)
    assert metrics[0] == metrics[1]


class RoundedNet(torch.nn.Module):
    """Quantises its input to 8 bits first: zero gradients everywhere, the textbook gradient masking."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 255) / 255)


def test_gradient_masking_is_reported(tmp_path):
    net = RoundedNet(trained_tiny_net())
    loader, _, _ = tuple_loader()
    engine = plain_engine()
    handler = AdversarialRobustnessHandler(
        net,
        attacks={"PGD": {"steps": 5}, "Square": {"n_queries": 100}},
        eps=(8 / 255,),
        output_dir=tmp_path,
        progress=False,
    )
    handler.attach(engine)
    engine.run(loader)
    report = json.loads((tmp_path / "robustness.json").read_text())["report"]
    masking = [line for line in report if line.startswith("possible gradient masking")]
    assert any("PGD at eps=64/255" in line for line in masking), report
    assert any("black-box Square" in line for line in masking), report
    assert engine.state.metrics["adv_gradient_masking"] == 1.0


def test_runs_under_validation_handler_in_supervised_trainer(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    x, y = synthetic_data(32, seed=1)
    data = [{"image": x[i : i + 8], "label": y[i : i + 8]} for i in range(0, 32, 8)]
    adv = AdversarialRobustnessHandler(
        attacks={"PGD": {"steps": 3}}, eps=(2 / 255,), output_dir=tmp_path, progress=False
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=data,
        network=net,
        val_handlers=[adv, MetricsSaver(save_dir=tmp_path, metrics="*", metric_details=None)],
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=2,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.05),
        loss_function=torch.nn.CrossEntropyLoss(),
    )
    seen = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def _before(engine):  # registered before ValidationHandler: runs right before the evaluator
        seen.append({"training": net.training, "bn": {k: v.clone() for k, v in net.state_dict().items()}})

    ValidationHandler(interval=1, validator=evaluator).attach(trainer)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _after(engine):
        before = seen[-1]
        assert before["training"] and net.training, "train mode must be restored after the evaluator"
        for k, v in net.state_dict().items():
            assert torch.equal(v, before["bn"][k]), f"{k} changed during adversarial evaluation"
        seen[-1]["checked"] = True

    trainer.run()
    assert len(seen) == 2 and all(s.get("checked") for s in seen)
    assert set(robustness_metric_names(["PGD"], (2 / 255,))) <= set(evaluator.state.metrics)
    saved = (tmp_path / "metrics.csv").read_text()
    assert "adv_PGD_eps2_acc" in saved and "adv_clean_acc" in saved
    assert json.loads((tmp_path / "robustness.json").read_text())["epoch"] == 2


def test_assimilation_net_end_to_end():
    networks = pytest.importorskip("monai_assim.networks")
    torch.manual_seed(0)
    x = torch.rand(8, 1, 32, 32)
    y = torch.tensor([0, 1] * 4)
    for variant in ("assimilated",):
        net = networks.AssimilationNet(backbone="mobilenet_v2", num_classes=2, pretrained=None, variant=variant)
        net.train()
        engine = plain_engine()
        handler = AdversarialRobustnessHandler(
            net, attacks={"PGD": {"steps": 2}}, eps=(8 / 255,), seed=5, check_eps=None, progress=False
        )
        handler.attach(engine)
        engine.run([(x[:4], y[:4]), (x[4:], y[4:])])
        assert net.training
        net.eval()
        correct = 0
        for i in (0, 1):
            torch.manual_seed(5 + i)
            atk = torchattacks.PGD(net, eps=8 / 255, alpha=2.5 * 8 / 255 / 2, steps=2, random_start=True)
            adv = atk(x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4])
            with torch.no_grad():
                correct += int((net(adv).argmax(1) == y[4 * i : 4 * i + 4]).sum())
        assert engine.state.metrics["adv_PGD_eps8_acc"] == correct / 8
        assert handler.rows[0]["variant"] == variant


def test_bad_input():
    net = trained_tiny_net()
    with pytest.raises(ValueError, match="supported attacks: FGSM, BIM, MIFGSM, PGD"):
        AdversarialRobustnessHandler(net, attacks=["PGD", "CarliniWagnerXYZ"])
    for bad in ((1.2,), (-1 / 255,), (float("nan"),)):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            AdversarialRobustnessHandler(net, eps=bad)
    with pytest.raises(ValueError, match=r"DLR loss, which needs >= 3 classes.*has 2"):
        AdversarialRobustnessHandler(net, attacks={"APGD": {"loss": "dlr"}}).attach(plain_engine())
    # a model without `num_classes`: refused at the first batch, from the logits
    anonymous = torch.nn.Sequential(*trained_tiny_net().features)
    engine = plain_engine()
    AdversarialRobustnessHandler(anonymous, attacks=["APGDT"], progress=False).attach(engine)
    with pytest.raises(ValueError, match=r"DLR loss, which needs >= 4 classes.*has 2"):
        engine.run(tuple_loader()[0])
    engine = plain_engine()
    AdversarialRobustnessHandler(net, attacks=["FGSM"], progress=False).attach(engine)
    with pytest.raises(ValueError, match=r"images must be on \[0, 1\]"):
        engine.run([(torch.full((2, 1, 16, 16), 2.0), torch.tensor([0, 1]))])
    engine = plain_engine()
    AdversarialRobustnessHandler(attacks=["FGSM"], progress=False).attach(engine)
    with pytest.raises(ValueError, match="pass network="):
        engine.run(tuple_loader()[0])


def test_attack_eps_restricts_one_attack_grid():
    net = trained_tiny_net()
    loader, x, y = tuple_loader()
    eps = (2 / 255, 8 / 255)
    handler = AdversarialRobustnessHandler(
        net,
        attacks={"FGSM": {}, "Square": {"n_queries": 5}},
        eps=eps,
        attack_eps={"square": [8 / 255]},
        seed=3,
        check_eps=None,
        progress=False,
    )
    engine = plain_engine()
    handler.attach(engine)
    engine.run(loader)
    keys = {(r["attack"], r["eps"]) for r in handler.rows if r["role"] == "attack"}
    assert keys == {("FGSM", 2 / 255), ("FGSM", 8 / 255), ("Square", 8 / 255)}
    row = next(r for r in handler.rows if r["attack"] == "Square")
    assert row["accuracy"] == direct_accuracy_seeded_square(net, x, y, 3)
    # a grid for an attack that is not run is ignored (the bundles' default grid for Square stays valid when
    # --attacks leaves Square out); an unknown name is still an error
    assert AdversarialRobustnessHandler(net, attacks=["FGSM"], attack_eps={"PGD": [1 / 255]}).attack_eps == {}
    with pytest.raises(ValueError, match="unknown attack"):
        AdversarialRobustnessHandler(net, attacks=["FGSM"], attack_eps={"Sqare": [1 / 255]})
    with pytest.raises(ValueError, match=r"eps"):
        AdversarialRobustnessHandler(net, attacks=["FGSM"], attack_eps={"FGSM": [2.0]})


def direct_accuracy_seeded_square(net, x, y, seed: int) -> float:
    correct = 0
    for i in range(0, len(x), BATCH):
        s = seed + i // BATCH
        torch.manual_seed(s)
        adv = torchattacks.Square(net, eps=8 / 255, n_queries=5, seed=s)(x[i : i + BATCH], y[i : i + BATCH])
        with torch.no_grad():
            correct += int((net(adv).argmax(1) == y[i : i + BATCH]).sum())
    return correct / len(x)


class Recorder(torch.nn.Module):
    """``net`` itself, keeping the inputs of the calls made without gradients: the handler's evaluations
    of the clean and of each adversarial batch (the attacks call the model with gradients enabled)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.num_classes = net.num_classes
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        if not torch.is_grad_enabled():
            self.inputs.append(x.detach().clone())
        return self.net(x)


def mislabelled_data(n: int = 2 * BATCH):
    """The usual synthetic batches with every fifth label flipped, so the model gets those clean samples wrong."""
    x, y = synthetic_data(n, seed=2)
    y = y.clone()
    y[::5] = 1 - y[::5]
    return x, y


def test_adversarial_images_and_success_counts_equal_torchattacks_per_sample():
    """Per batch and per sample: the handler's adversarial images are torchattacks' own (PGD, ratio 2.5, random
    start, batch i seeded with seed + i), and its counts follow from them, success over clean-correct samples."""
    base = trained_tiny_net()
    net = Recorder(base)
    x, y = mislabelled_data()
    seed, eps = 11, (2 / 255, 8 / 255)
    handler = AdversarialRobustnessHandler(net, attacks={"PGD": {"steps": 5}}, eps=eps, seed=seed, progress=False)
    engine = plain_engine()
    handler.attach(engine)
    engine.run([(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)])

    runs = [("attack", e, 5) for e in eps] + [("check", 64 / 255, 20)]  # the masking check: 20 steps by default
    assert len(net.inputs) == 2 * (1 + len(runs))  # per batch: the clean batch, then one batch per run
    expected = {(role, e): [0, 0] for role, e, _ in runs}  # -> [n_correct, n_success]
    n_clean_correct = 0
    for b in range(2):
        xb, yb = x[b * BATCH : (b + 1) * BATCH], y[b * BATCH : (b + 1) * BATCH]
        seen = net.inputs[b * (1 + len(runs)) : (b + 1) * (1 + len(runs))]
        assert torch.equal(seen[0], xb)
        with torch.no_grad():
            clean_ok = base(xb).argmax(1) == yb
        n_clean_correct += int(clean_ok.sum())
        for (role, e, steps), adv in zip(runs, seen[1:]):
            torch.manual_seed(seed + b)
            direct = torchattacks.PGD(base, eps=e, alpha=2.5 * e / steps, steps=steps, random_start=True)(xb, yb)
            assert torch.equal(adv, direct), f"{role} PGD eps={e * 255:g}/255, batch {b}"
            with torch.no_grad():
                adv_ok = base(direct).argmax(1) == yb
            expected[(role, e)][0] += int(adv_ok.sum())
            expected[(role, e)][1] += int((clean_ok & ~adv_ok).sum())
    assert 0 < n_clean_correct < len(x)  # some clean samples are wrong, so the success rate's base matters
    rows = {(r["role"], r["eps"]): r for r in handler.rows}
    assert rows[("clean", 0.0)]["n_clean_correct"] == n_clean_correct
    for key, (n_correct, n_success) in expected.items():
        r = rows[key]
        assert (r["n_correct"], r["n_success"]) == (n_correct, n_success), key
        assert r["success_rate"] == n_success / n_clean_correct and r["accuracy"] == n_correct / len(x)
    # the clean-wrong samples stay wrong under attack: counting over all samples would give more successes
    assert any(n_success < len(x) - n_correct for n_correct, n_success in expected.values())


def test_grouped_pgd_images_equal_torchattacks_per_eps():
    """PGD without random start crafted for several eps in one pass: each part is torchattacks' PGD at that eps."""
    base = trained_tiny_net()
    net = Recorder(base)
    x, y = mislabelled_data(BATCH)
    eps = (2 / 255, 6 / 255)
    handler = AdversarialRobustnessHandler(
        net,
        attacks={"PGD": {"steps": 3, "random_start": False}},
        eps=eps,
        seed=4,
        check_eps=None,
        group_eps=2,
        progress=False,
    )
    engine = plain_engine()
    handler.attach(engine)
    engine.run([(x, y)])
    assert len(net.inputs) == 2 and net.inputs[1].shape[0] == 2 * BATCH
    for g, e in enumerate(eps):
        direct = torchattacks.PGD(base, eps=e, alpha=2.5 * e / 3, steps=3, random_start=False)(x, y)
        torch.testing.assert_close(net.inputs[1][g * BATCH : (g + 1) * BATCH], direct, atol=1e-5, rtol=0)
