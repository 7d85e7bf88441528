"""
The evaluation (monai_assim/robustness/evaluation.py): without Ignite, evaluate(model, loader, plan) equals
the handler, the plan is built once and read by the cost model and the metric names, and the old import
paths still work; the strong ensemble of an attack budget (AutoAttack's cascade on the survivors), the
convergence check, the quick budget's upper-bound notice, Square's catch as a masking check and
``check_eps=0``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.tiny_nets import synthetic_data, trained_tiny_net
from ignite.engine import Engine
from monai.data import DataLoader

from monai_assim.handlers import AdversarialRobustnessHandler
from monai_assim.robustness import (
    WORST,
    EvaluationPlan,
    build_plan,
    estimate_cost,
    evaluate,
    evaluation as handler_module,
    load_per_image_rows,
    robustness_metric_names,
    row_key,
)

PACKAGE = Path(__file__).resolve().parents[1] / "monai_assim"


def _without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_evaluate_equals_the_handler_and_writes_the_same_files(tmp_path):
    net = trained_tiny_net()
    x, y = synthetic_data(24, seed=4)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
    plan = build_plan({"FGSM": {}, "PGD": {"steps": 2}}, eps=(2 / 255, 8 / 255), check_eps=None, worst_case=True)
    results = evaluate(net, batches, plan, seed=3, output_dir=tmp_path / "core")

    handler = AdversarialRobustnessHandler(net, plan=plan, seed=3, output_dir=tmp_path / "handler", progress=False)
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run(batches)
    assert _without_seconds(results.rows) == _without_seconds(handler.rows)
    assert results.metrics() == engine.state.metrics
    assert list(results.metrics()) == plan.metric_names()
    assert results.report[1:] == handler.report[1:] and results.report[0].startswith("clean accuracy")
    core = load_per_image_rows(tmp_path / "core" / "robustness_per_image.csv")
    assert core == load_per_image_rows(tmp_path / "handler" / "robustness_per_image.csv")
    assert json.loads((tmp_path / "core" / "robustness.json").read_text())["seed"] == 3
    # MONAI dict batches (a DataLoader of {"image", "label"} items) give the same table
    items = [{"image": x[i], "label": y[i]} for i in range(24)]
    again = evaluate(net, DataLoader(items, batch_size=8), plan, seed=3)
    assert _without_seconds(again.rows) == _without_seconds(results.rows)


def test_the_plan_is_built_once_and_read_by_cost_and_names():
    plan = build_plan(
        {"FGSM": {}, "BIM": {"steps": 3}, "Square": {"n_queries": 4}},
        eps=(1 / 255, 2 / 255, 4 / 255),
        attack_eps={"Square": [4 / 255]},
        group_eps=2,
        attack_budget="quick",
        ensemble_eps=[4 / 255],
        structure_checks=True,
    )
    assert isinstance(plan, EvaluationPlan)
    with pytest.raises(AttributeError):
        plan.eps = (1 / 255,)  # frozen
    runs = {(r.role, r.attack): r.eps_groups for r in plan.runs}
    assert runs[("attack", "FGSM")] == ((1 / 255, 2 / 255), (4 / 255,)) and runs[("attack", "Square")] == ((4 / 255,),)
    assert ("check_bpda", "Square") not in runs and ("check_bpda", "BIM") in runs  # no BPDA for a black-box attack
    # the headline worst case at 4/255: every grid attack and every ensemble member at that eps
    members = plan.worst_members[("worst", "worst", 4 / 255)]
    assert {(r, a) for r, a, _ in members} == {("attack", a) for a in ("FGSM", "BIM", "Square")} | {
        ("ensemble", m) for m in ("APGD", "APGDMargin", "Square")
    }
    # the cascade: APGDMargin attacks what the grid and APGD left; the convergence check follows the ensemble
    assert plan.cascade_before[("ensemble", "APGDMargin", 4 / 255)][-1] == ("ensemble", "APGD", 4 / 255)
    assert ("ensemble", "Square", 4 / 255) in plan.cascade_before[("check_convergence", "APGD", 4 / 255)]
    # the cost model reads the same plan: BPDA costs nothing on a network without output maps
    with_maps, without = estimate_cost(plan, 1), estimate_cost(plan, 1, has_output_maps=False)
    assert with_maps.grads_per_image > without.grads_per_image
    assert {e.role for e in without.entries} == {r.role for r in plan.runs} - {"check_bpda"}
    names = robustness_metric_names(
        ["FGSM", "BIM"], (2 / 255,), check_eps=None, attack_budget="quick", structure_checks=True
    )
    assert (
        names
        == build_plan(
            ["FGSM", "BIM"], (2 / 255,), check_eps=None, attack_budget="quick", structure_checks=True
        ).metric_names()
    )


def test_one_row_key():
    assert row_key({"attack": "PGD", "eps": 2 / 255}) == ("PGD", 2.0, "attack")
    assert row_key({"attack": "worst", "eps_255": "2", "role": "worst"}) == ("worst", 2.0, "worst")


def test_the_handler_takes_monai_output_transform_and_refuses_plan_and_settings():
    from monai.handlers import from_engine

    net = trained_tiny_net()
    x, y = synthetic_data(8, seed=1)
    plan = build_plan(["FGSM"], (4 / 255,), check_eps=None)
    engine = Engine(lambda e, b: {"img": b[0], "target": b[1]})
    handler = AdversarialRobustnessHandler(
        net, plan=plan, output_transform=from_engine(["img", "target"]), progress=False
    )
    handler.attach(engine)
    engine.run([(x, y)])
    assert handler.rows[0]["n"] == 8 and handler.eps == plan.eps  # the plan's settings read through the handler
    with pytest.raises(ValueError, match="not both"):
        AdversarialRobustnessHandler(net, plan=plan, eps=(1 / 255,))


def test_old_import_paths_and_one_distributed_api():
    from monai_assim import attack_cost, attacks, robustness_results, stats
    from monai_assim.handlers import DEFAULT_ATTACKS, RESULT_COLUMNS, eps_tag
    from monai_assim.visualize import COMPARE_COLUMNS, comparison_rows

    assert attacks.build_attack and attack_cost.estimate_cost and robustness_results.write_results
    assert stats.paired_flips and stats.aggregate_over_seeds and DEFAULT_ATTACKS and RESULT_COLUMNS
    assert eps_tag(8 / 255) == "8" and COMPARE_COLUMNS and comparison_rows
    for path in [*(PACKAGE / "robustness").glob("*.py"), PACKAGE / "handlers" / "adversarial_robustness.py"]:
        text = path.read_text()
        assert "idist" not in text and "ignite.distributed" not in text, path  # torch.distributed only
        if path.parent.name == "robustness":
            assert "import ignite" not in text and "from ignite" not in text, path  # usable without Ignite


def test_evaluate_seeds_batch_i_with_seed_plus_i(monkeypatch):
    """The documented seeding rule, without an engine: batch i (one process) is attacked with seed + i."""
    from monai_assim.robustness import evaluation

    seeds = []
    real = evaluation.run_attack

    def spy(attack, images, labels, seed):
        seeds.append(seed)
        return real(attack, images, labels, seed)

    monkeypatch.setattr(evaluation, "run_attack", spy)
    x, y = synthetic_data(12, seed=2)
    plan = build_plan({"PGD": {"steps": 1}}, eps=(2 / 255,), check_eps=None)
    evaluate(trained_tiny_net(), [(x[i : i + 4], y[i : i + 4]) for i in range(0, 12, 4)], plan, seed=7)
    assert seeds == [7, 8, 9]


def _evaluate(handler, x, y, batch=8):
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)])
    return {(r["role"], r["attack"], round(r["eps_255"], 4)): r for r in handler.rows}


class MeanNet(torch.nn.Module):
    """Class 1 when the mean intensity exceeds 0.5: an attack must move every pixel to flip it."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(100.0))

    def forward(self, x):
        s = (x.mean(dim=(1, 2, 3)) - 0.5) * self.scale
        return torch.stack([-s, s], dim=1)


class FakeAttack:
    """Stands in for a torchattacks attack: shifts the mean towards the boundary by ``shift`` (0: no effect)."""

    calls: list[tuple[str, int]] = []

    def __init__(self, name, eps, shift):
        self.name, self.eps, self.shift = name, eps, shift

    def __call__(self, images, labels):
        FakeAttack.calls.append((self.name, images.shape[0]))
        sign = torch.where(labels == 1, -1.0, 1.0).view(-1, 1, 1, 1)
        return (images + sign * self.shift * self.eps).clamp(0, 1)


def _fake_build(strong_from_steps=100, square_works=False):
    """Gradient attacks with fewer than ``strong_from_steps`` steps do nothing; the others move by eps."""

    def build(name, network, eps, num_classes=None, **kwargs):
        if name == "Square":
            return FakeAttack(name, eps, 1.0 if square_works else 0.0)
        steps = kwargs.get("steps", 10)
        return FakeAttack(name, eps, 1.0 if steps >= strong_from_steps else 0.0)

    return build


def _mean_data(n=16):
    """Images of mean 0.5 +- 1.5/255 (half each side) and labels = the class MeanNet gives them."""
    offsets = torch.tensor([1.5, -1.5] * (n // 2)) / 255
    x = (0.5 + offsets).view(-1, 1, 1, 1).expand(n, 1, 4, 4).clone()
    return x, (offsets > 0).long()


def test_ensemble_cascades_on_survivors_and_is_the_worst_case(monkeypatch):
    """Each member attacks only the images every earlier attack left correct; rows are cumulative."""
    net = trained_tiny_net()
    x, y = synthetic_data(16, seed=2)
    sizes = []
    real_run_attack = handler_module.run_attack

    def spy(attack, images, labels, seed):
        sizes.append((type(attack).__name__, images.shape[0]))
        return real_run_attack(attack, images, labels, seed)

    monkeypatch.setattr(handler_module, "run_attack", spy)
    handler = AdversarialRobustnessHandler(
        net, attacks=["FGSM"], eps=[5 / 255], attack_budget="quick", check_eps=None, progress=False
    )
    rows = _evaluate(handler, x, y, batch=16)
    fgsm = rows[("attack", "FGSM", 5.0)]["n_correct"]
    chain = [rows[("ensemble", m, 5.0)]["n_correct"] for m in ("APGD", "APGDMargin", "Square")]
    assert 16 > fgsm >= chain[0] >= chain[1] >= chain[2] == rows[(WORST, WORST, 5.0)]["n_correct"]
    # FGSM on the whole batch, APGD on FGSM's survivors (clean-correct ones), and so on
    assert sizes[0] == ("FGSM", 16) and sizes[1] == ("APGD", fgsm)
    assert [n for _, n in sizes[2:4]] == chain[:2]
    assert handler.headline()["budget"] == "quick" and handler.headline()["upper_bound"] is True
    assert any(line.startswith("QUICK attack budget") and "UPPER BOUNDS" in line for line in handler.report)


def test_convergence_check_fires_when_a_larger_budget_breaks_more(monkeypatch):
    """A recorded small case: 10-step attacks fail on MeanNet where 100-step ones succeed (FakeAttack)."""
    monkeypatch.setattr(handler_module, "build_attack", _fake_build(strong_from_steps=100))
    x, y = _mean_data()
    handler = AdversarialRobustnessHandler(
        MeanNet(), attacks=["FGSM"], eps=[2 / 255], attack_budget="quick", check_eps=None, progress=False
    )
    rows = _evaluate(handler, x, y)
    assert rows[(WORST, WORST, 2.0)]["accuracy"] == 1.0  # the quick ensemble fooled nothing
    assert rows[("check_convergence", "APGD", 2.0)]["accuracy"] == 0.0  # 100 steps fool every image
    line = next(line for line in handler.report if line.startswith("NOT CONVERGED at eps=2/255"))
    assert "from 1.0000 to 0.0000" in line and "use --attack_budget standard" in line
    assert line.startswith("NOT CONVERGED at eps=2/255: a larger budget (APGD-CE 100 steps x 2 restarts, ")


def test_convergence_check_passes_when_the_budget_suffices(monkeypatch):
    monkeypatch.setattr(handler_module, "build_attack", _fake_build(strong_from_steps=10))
    x, y = _mean_data()
    handler = AdversarialRobustnessHandler(
        MeanNet(), attacks=["FGSM"], eps=[2 / 255], attack_budget="quick", check_eps=None, progress=False
    )
    _evaluate(handler, x, y)
    assert not any(line.startswith("NOT CONVERGED") for line in handler.report)
    assert any(line.startswith("converged at eps=2/255: a larger budget (") for line in handler.report)


def test_convergence_check_with_its_own_members(monkeypatch):
    """A cheaper check of one's own: its members run (cascaded) instead of the next budget's and are named."""
    from monai_assim.robustness import build_plan

    monkeypatch.setattr(handler_module, "build_attack", _fake_build(strong_from_steps=100))
    x, y = _mean_data()
    own = {"APGD": {"loss": "ce", "steps": 100}}
    handler = AdversarialRobustnessHandler(
        MeanNet(), attacks=["FGSM"], eps=[2 / 255], attack_budget="quick", check_eps=None, progress=False,
        convergence_check=own,
    )  # fmt: skip
    rows = _evaluate(handler, x, y)
    assert [k for k in rows if k[0] == "check_convergence"] == [("check_convergence", "APGD", 2.0)]
    assert rows[("check_convergence", "APGD", 2.0)]["accuracy"] == 0.0  # 100 steps fool every image
    assert handler.headline()["convergence_check"] == own
    line = next(line for line in handler.report if line.startswith("NOT CONVERGED at eps=2/255"))
    assert line.startswith("NOT CONVERGED at eps=2/255: the convergence check's own members (APGD-CE 100 steps) lower ")
    bad_members = (
        ({"Square": {}}, "black-box"),
        ({"APGD": {"eps": 0.1}}, "eps"),
        ({}, "names no attack"),
        ({"APGD": {"stepz": 200}}, "convergence_check member APGD"),  # torchattacks refuses it: now, not later
    )
    for bad, match in bad_members:
        with pytest.raises(ValueError, match=match):
            build_plan(["FGSM"], attack_budget="quick", convergence_check=bad)
    with pytest.raises(ValueError, match="needs an attack_budget"):
        build_plan(["FGSM"], convergence_check=own)
    # a DLR member cannot work on 2 classes: refused before the first attack, as a grid attack would be
    with pytest.raises(ValueError, match="DLR"):
        build_plan(["FGSM"], attack_budget="quick", convergence_check={"APGD": {"loss": "dlr"}}).check_classes(2)


def test_square_catching_what_white_box_missed_is_flagged(monkeypatch):
    monkeypatch.setattr(handler_module, "build_attack", _fake_build(strong_from_steps=10**6, square_works=True))
    x, y = _mean_data()
    handler = AdversarialRobustnessHandler(
        MeanNet(), attacks=["FGSM"], eps=[2 / 255], attack_budget="standard", convergence_check=False, check_eps=None
    )
    rows = _evaluate(handler, x, y)
    assert (
        rows[("ensemble", "APGDMargin", 2.0)]["accuracy"] == 1.0 and rows[("ensemble", "Square", 2.0)]["accuracy"] == 0
    )
    assert any("black-box Square fools 1.0000 of the images that every white-box" in line for line in handler.report)
    assert not any("Square (black-box) not run" in line for line in handler.report)


def test_check_eps_zero_switches_the_large_eps_check_off():
    x, y = synthetic_data(8, seed=1)
    handler = AdversarialRobustnessHandler(trained_tiny_net(), attacks=["FGSM"], eps=[2 / 255], check_eps=0)
    rows = _evaluate(handler, x, y)
    assert not [k for k in rows if k[0] == "check"]
    assert "PGD large-eps check not run (check_eps=None)." in handler.report
    assert not any("gradient masking" in line for line in handler.report)
