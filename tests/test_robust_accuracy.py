"""
``RobustAccuracy`` (the robust validation metric) against torchattacks itself, its stratified subset,
seeding, mode handling and logged cost; ``PredictedClassCount``.
"""

from __future__ import annotations

import pytest
import torch
import torchattacks
from monai.engines import SupervisedEvaluator

from monai_assim.metrics import PredictedClassCount, RobustAccuracy, robust_accuracy as robust_module, stratified_mask


class SmallNet(torch.nn.Module):
    num_classes = 2

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 64, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _data(n=12, seed=0):
    """Images the model (seed 0) classifies correctly, half of each class, labels in the given order."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(400, 1, 8, 8, generator=g)
    with torch.no_grad():
        pred = _net()(x).argmax(1)
    zeros, ones = x[pred == 0][: n // 2], x[pred == 1][: n // 2]
    return torch.stack([t for pair in zip(zeros, ones) for t in pair]), torch.tensor([0, 1] * (n // 2))


def _net(seed=0):
    torch.manual_seed(seed)
    return SmallNet().eval()


def _batches(x, y, size=4):
    return [{"image": x[i : i + size], "label": y[i : i + size]} for i in range(0, len(x), size)]


def _direct(net, batches, make_attack, seed):
    """The torchattacks oracle with the metric's seeding rule: batch i with seed + i."""
    correct = n = 0
    for i, b in enumerate(batches):
        torch.manual_seed(seed + i)
        adv = make_attack(net, seed + i)(b["image"], b["label"])
        with torch.no_grad():
            correct += int((net(adv).argmax(1) == b["label"]).sum())
        n += len(b["label"])
    return correct / n


@pytest.mark.parametrize(
    "kwargs, make_attack",
    [
        (
            {"attack": "PGD", "steps": 5},
            lambda m, s: torchattacks.PGD(m, eps=8 / 255, alpha=2.5 * 8 / 255 / 5, steps=5),
        ),
        (
            {"attack": "APGD", "steps": 5, "restarts": 2},
            lambda m, s: torchattacks.APGD(m, eps=8 / 255, steps=5, n_restarts=2, loss="ce", seed=s),
        ),
    ],
)
def test_equals_torchattacks(kwargs, make_attack):
    net, (x, y) = _net(), _data()
    batches = _batches(x, y)
    metric = RobustAccuracy(net, eps=8 / 255, seed=7, **kwargs)
    for b in batches:
        metric.update(b)
    expected = _direct(net, batches, make_attack, seed=7)
    assert metric.compute() == pytest.approx(expected)
    with torch.no_grad():
        clean = float((net(x).argmax(1) == y).float().mean())
    assert clean == 1.0 and expected < 1.0  # the attack does something on this model


def test_stratified_subset_is_the_first_per_class_images():
    taken: dict[int, int] = {}
    masks = [stratified_mask(torch.tensor(b), taken, 2) for b in ([0, 0, 0, 1], [1, 1, 0], [0, 1])]
    assert [m.tolist() for m in masks] == [[True, True, False, True], [True, False, False], [False, False]]
    net, (x, y) = _net(), _data(12)
    metric = RobustAccuracy(net, eps=2 / 255, steps=2, per_class=3)
    for b in _batches(x, y):
        metric.update(b)
    assert float(metric._num_examples) == 6


def test_seeded_repeatable_and_leaves_the_callers_random_state():
    net, (x, y) = _net(), _data()
    values = []
    for _ in range(2):
        metric = RobustAccuracy(net, eps=16 / 255, steps=3, seed=1)
        state = torch.get_rng_state()
        for b in _batches(x, y):
            metric.update(b)
        assert torch.equal(torch.get_rng_state(), state)
        values.append(metric.compute())
    assert values[0] == values[1]


def test_restores_train_mode_and_leaves_batchnorm_statistics():
    net, (x, y) = _net(), _data()
    net.train()
    net.bn.eval()  # a user's frozen BatchNorm stays frozen
    stats = net.bn.running_mean.clone()
    metric = RobustAccuracy(net, eps=4 / 255, steps=2)
    metric.update({"image": x, "label": y})
    assert net.training and net.conv.training and not net.bn.training
    assert torch.equal(net.bn.running_mean, stats)


def test_decollated_output_and_one_hot_labels():
    net, (x, y) = _net(), _data(4)
    a = RobustAccuracy(net, eps=4 / 255, steps=2)
    a.update({"image": x, "label": y})
    b = RobustAccuracy(net, eps=4 / 255, steps=2)
    b.update([{"image": xi, "label": torch.nn.functional.one_hot(yi, 2)} for xi, yi in zip(x, y)])
    assert a.compute() == b.compute()


def test_logged_seconds_are_the_time_spent_attacking(monkeypatch):
    """In an evaluator: ``<name>_seconds`` is the time the metric spent (a fake clock that the attack advances)."""
    clock = [100.0]
    real_run_attack = robust_module.run_attack

    def run_attack(*args, **kwargs):
        clock[0] += 1.5
        return real_run_attack(*args, **kwargs)

    monkeypatch.setattr(robust_module, "run_attack", run_attack)
    monkeypatch.setattr(robust_module.time, "perf_counter", lambda: clock[0])
    net, (x, y) = _net(), _data(12)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=_batches(x, y),
        network=net,
        key_val_metric={"val_robust_acc": RobustAccuracy(net, eps=2 / 255, steps=2)},
        decollate=False,
    )
    evaluator.run()
    assert evaluator.state.metrics["val_robust_acc_seconds"] == pytest.approx(3 * 1.5)
    assert 0.0 <= evaluator.state.metrics["val_robust_acc"] <= 1.0


def test_bad_arguments():
    net = _net()
    for kwargs in ({"attack": "FGSM"}, {"steps": 0}, {"attack": "PGD", "restarts": 2}, {"per_class": 0}):
        with pytest.raises(ValueError):
            RobustAccuracy(net, **kwargs)
    assert RobustAccuracy(net, attack="apgd", steps=50, restarts=3).describe() == "APGD-CE-50 x 3 restarts at 2/255"


def test_predicted_class_count():
    metric = PredictedClassCount(num_classes=2)
    metric.update({"pred": torch.tensor([[2.0, 1.0], [3.0, 0.0]])})
    assert metric.compute() == 1
    metric.update([{"pred": torch.tensor([0.0, 1.0])}])
    assert metric.compute() == 2
    with pytest.raises(ValueError):
        metric.update({"pred": torch.zeros(2, 3)})
