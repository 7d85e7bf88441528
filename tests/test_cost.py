"""The cost model of an adversarial evaluation (monai_assim.attack_cost) and the handler's cost, time and
progress log lines."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from ignite.engine import Engine
from torch.utils.data import DataLoader, TensorDataset

from monai_assim.attack_cost import attack_passes, estimate_cost, format_duration
from monai_assim.attacks import build_attack, run_attack
from monai_assim.handlers import AdversarialRobustnessHandler

SIZE = 8
HANDLER_LOG = "monai_assim.handlers.adversarial_robustness"


class NeverFooled(torch.nn.Module):
    """
    Predicts class 0 whatever the image (a large constant logit plus a small input-dependent part, so
    gradients exist), and counts the images it sees: in passes that will be differentiated w.r.t. the
    input (the input requires grad) and in forward-only passes. On label 0 no attack ever succeeds, so
    APGD and Square run to their full budget and the upper bounds of the cost model are reached.
    """

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = torch.nn.Linear(SIZE * SIZE, num_classes)
        self.register_buffer("bias", torch.tensor([50.0] + [0.0] * (num_classes - 1)))
        self.grads = self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            self.grads += x.shape[0]
        else:
            self.forwards += x.shape[0]
        return 1e-3 * self.linear(x.flatten(1)) + self.bias


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, SIZE, SIZE, generator=g), torch.zeros(n, dtype=torch.long)


@pytest.mark.parametrize(
    "name, kwargs, num_classes",
    [
        ("FGSM", {}, 2),
        ("BIM", {}, 2),  # the project's default: 10 steps
        ("BIM", {"steps": 0, "alpha": 1 / 255}, 2),  # torchattacks' rule: min(eps*255 + 4, 1.25 eps*255) steps
        ("MIFGSM", {"steps": 3}, 2),
        ("PGD", {"steps": 2}, 2),
        ("APGD", {"steps": 3, "n_restarts": 2}, 2),
        ("APGD", {"steps": 2, "eot_iter": 2}, 2),
        ("APGDMargin", {"steps": 2}, 2),
        ("APGDT", {"steps": 2}, 4),
        ("Square", {"n_queries": 5, "n_restarts": 2}, 2),
    ],
)
def test_attack_passes_equal_the_passes_torchattacks_makes(name, kwargs, num_classes):
    """Per image: the passes of the cost model are those the torchattacks object really makes (upper bounds
    reached on a model it never fools), with the steps/restarts/queries read from that object."""
    eps, n = 4 / 255, 3
    model = NeverFooled(num_classes)
    x, y = images(n)
    attack = build_attack(name, model, eps, num_classes, **kwargs)
    run_attack(attack, x, y, seed=0)
    grads, forwards, exact, detail = attack_passes(name, kwargs, eps, num_classes)
    assert (model.grads / n, model.forwards / n) == (grads, forwards), detail
    assert exact == (name in ("FGSM", "BIM", "MIFGSM", "PGD"))
    if hasattr(attack, "steps"):
        assert f"steps={attack.steps}" in detail  # the configured steps as torchattacks holds them
    if name == "BIM" and kwargs.get("steps") == 0:
        assert grads == attack.steps == 5  # int(min(4 + 4, 1.25 * 4))


def test_estimate_equals_the_handler_passes():
    """The estimate the handler logs equals the passes it then makes through the network, in total, for a
    plan with grouped eps, an own eps grid (Square), the large-eps check and the structure checks."""
    model = NeverFooled()
    x, y = images(6)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # 2 batches, the last one smaller
    handler = AdversarialRobustnessHandler(
        model,
        attacks={"FGSM": {}, "BIM": {"steps": 3}, "PGD": {"steps": 2}, "Square": {"n_queries": 4}},
        eps=(1 / 255, 2 / 255, 4 / 255),
        attack_eps={"Square": [4 / 255]},
        check_kwargs={"steps": 3},
        group_eps=2,
        structure_checks=True,  # no clamps: BPDA reuses the plain attacks (no passes); APGD runs
        structure_check_kwargs={"steps": 2, "n_restarts": 2},
        progress=False,
    )
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run(loader)
    cost = handler.cost
    assert cost is not None and cost.n_images == 6
    assert (model.grads, model.forwards) == (cost.total_grads, cost.total_forwards)
    # per image: FGSM 3x1, BIM 3x3, PGD 3x2, check PGD 1x3, APGD 3 eps x 2 restarts x (2 + 1) steps
    assert cost.grads_per_image == 3 + 9 + 6 + 3 + 18
    # clean 1; scoring 1 per (attack, eps): 3 + 3 + 3 + 1 + 1 + 3; Square 1 + (4 + 2); APGD 1 per eps
    assert cost.forwards_per_image == 1 + 14 + 7 + 3
    assert not cost.exact and [e.role for e in cost.entries].count("check_bpda") == 0


def test_estimate_cost_plan_forms():
    plan = [("FGSM", {}, [1 / 255, 2 / 255]), ("attack", "PGD", {"steps": 4}, [(1 / 255, 2 / 255)])]
    cost = estimate_cost(plan, n_images=10)
    assert cost.runs == 4 and cost.exact
    assert (cost.grads_per_image, cost.forwards_per_image) == (2 + 8, 1 + 4)
    assert (cost.total_grads, cost.total_forwards) == (100, 50)
    assert "per image 10 forward+backward" in cost.lines()[0] and "on 10 images" in cost.lines()[0]
    assert estimate_cost(plan).total_grads is None
    assert [format_duration(s) for s in (4.25, 42.4, 75.2, 3725)] == ["4.2 s", "42 s", "1 min 15 s", "1 h 2 min"]


def test_handler_logs_cost_first_then_time_estimate_and_progress(caplog):
    """Before the first attack the cost is logged; after batch 1 the estimated time of the whole evaluation;
    every attack and eps as it starts, with its place among the runs and the batch."""
    model = NeverFooled()
    x, y = images(6)
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    handler = AdversarialRobustnessHandler(
        model, attacks={"FGSM": {}, "PGD": {"steps": 2}}, eps=(2 / 255, 8 / 255), check_eps=None, progress=False
    )
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    with caplog.at_level(logging.INFO, logger=HANDLER_LOG):
        engine.run(loader)
    lines = [r.getMessage() for r in caplog.records if r.name == HANDLER_LOG]
    cost = next(i for i, m in enumerate(lines) if m.startswith("cost of the robustness evaluation"))
    assert "per image 6 forward+backward and 5 forward passes" in lines[cost]
    assert "on 6 images 36 forward+backward and 30 forward passes" in lines[cost] and "2 batches" in lines[cost]
    progress = [i for i, m in enumerate(lines) if re.fullmatch(r"attack \w+ eps [\d., ]+/255 \(\d+/4\), batch \d/2", m)]
    assert len(progress) == 2 * 4 and cost < progress[0]
    assert lines[progress[0]] == "attack FGSM eps 2/255 (1/4), batch 1/2"
    assert lines[progress[3]] == "attack PGD eps 8/255 (4/4), batch 1/2"
    assert lines[progress[6]] == "attack PGD eps 2/255 (3/4), batch 2/2"
    estimate = next(i for i, m in enumerate(lines) if "the first batch (3 images) took" in m)
    assert progress[3] < estimate < progress[4] and "2 batches will take about" in lines[estimate]


def test_cost_lines_say_which_counts_are_bounds():
    """Square bounds the forward passes only (its gradients are exactly none); APGD bounds both."""
    square = estimate_cost([("PGD", {"steps": 2}, [1 / 255]), ("Square", {"n_queries": 10}, [1 / 255])], 4)
    assert "per image 2 forward+backward and up to 16 forward passes" in square.lines()[0]
    assert (
        "  Square at eps 1/255 (n_queries=10): per image and eps no gradient, up to 14 forward passes" in square.lines()
    )
    apgd = estimate_cost([("APGD", {"steps": 2}, [1 / 255])])
    assert "per image up to 3 forward+backward and up to 3 forward passes" in apgd.lines()[0]
