"""
The headline robust accuracy: the strong ensemble of an attack budget (AutoAttack's cascade on the
survivors), the convergence check, the quick budget's upper-bound notice, Square's catch as a masking
check, ``check_eps=0``, and the bundles' default plan.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers.bundle_runs import BUNDLES, TINY, bundle_cmd, run_ok, tiny_dataset
from helpers.tiny_nets import synthetic_data, trained_tiny_net
from ignite.engine import Engine
from monai.bundle import ConfigParser

from monai_assim.attacks import ATTACK_BUDGETS, attack_budget, convergence_members, describe_attack
from monai_assim.errors import UserInputError
from monai_assim.handlers import AdversarialRobustnessHandler
from monai_assim.robustness import evaluation as handler_module
from monai_assim.robustness_results import WORST


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


def test_budgets_and_their_members():
    assert list(ATTACK_BUDGETS) == ["quick", "standard", "thorough"]
    standard = attack_budget("Standard")
    assert standard["APGD"]["loss"] == "ce" and standard["APGD"]["steps"] == 100 and standard["APGD"]["n_restarts"] > 1
    assert standard["APGDMargin"]["steps"] == 100 and "Square" in standard
    assert convergence_members("quick") == {k: v for k, v in standard.items() if k != "Square"}
    beyond = convergence_members("thorough")
    assert beyond["APGD"]["steps"] == 2 * ATTACK_BUDGETS["thorough"]["APGD"]["steps"]
    assert describe_attack("APGD", standard["APGD"]).startswith("APGD-CE 100 steps x")
    with pytest.raises(UserInputError, match="unknown attack budget"):
        attack_budget("huge")


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


def test_convergence_check_passes_when_the_budget_suffices(monkeypatch):
    monkeypatch.setattr(handler_module, "build_attack", _fake_build(strong_from_steps=10))
    x, y = _mean_data()
    handler = AdversarialRobustnessHandler(
        MeanNet(), attacks=["FGSM"], eps=[2 / 255], attack_budget="quick", check_eps=None, progress=False
    )
    _evaluate(handler, x, y)
    assert not any(line.startswith("NOT CONVERGED") for line in handler.report)
    assert any(line.startswith("converged at eps=2/255") for line in handler.report)


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


def test_default_plan_holds_the_strong_members():
    """evaluate.json: the paper's four as curves, the standard ensemble and its convergence check at every eps."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "chest_ct" / "evaluate.json"))
    parser["output_dir"] = "unused"
    assert parser.get_parsed_content("attacks") == {"FGSM": {}, "BIM": {}, "MIFGSM": {}, "PGD": {}}
    assert parser.get_parsed_content("attack_budget") == "standard"
    kwargs = {
        k: parser.get_parsed_content(f"robustness#{k}") for k in ("attacks", "eps", "attack_budget", "ensemble_eps")
    }
    handler = AdversarialRobustnessHandler(**kwargs, convergence_check=parser.get_parsed_content("convergence_check"))
    plan = {(role, name): [g[0] for g in groups] for role, name, _, groups in handler.plan.runs}
    eps = [k / 255 for k in range(1, 9)]
    for member, kw in ATTACK_BUDGETS["standard"].items():
        assert plan[("ensemble", member)] == eps
        assert handler.ensemble[member] == kw
    assert handler.ensemble["APGD"]["steps"] == 100 and handler.ensemble["APGDMargin"]["steps"] == 100
    assert handler.ensemble["APGD"]["n_restarts"] >= 2 and ("check_convergence", "APGD") in plan
    assert handler.worst_case and ("check", "PGD") in plan


@pytest.mark.slow
def test_bundle_default_evaluation_reports_the_headline(tmp_path):
    """evaluate.json with its ensemble wiring (the quick budget and one eps to keep it short; the default plan is
    checked above): ensemble rows, worst case, convergence check; the report and the JSON name them."""
    data, out = tiny_dataset(tmp_path, "chest_xray", n=4), tmp_path / "run"
    run_ok(bundle_cmd("bundles/chest_xray/train.json", "--dataset_dir", str(data), "--output_dir", str(out), *TINY))
    log = run_ok(bundle_cmd("bundles/chest_xray/evaluate.json", "--output_dir", str(out), "--backbone", "mobilenet_v2",
                            "--eps", "[0.03]", "--attack_budget", "quick"))  # fmt: skip
    rows = list(csv.DictReader(open(out / "eval" / "robustness.csv")))
    roles = [(r["role"], r["attack"]) for r in rows]
    for member in ("APGD", "APGDMargin", "Square"):
        assert ("ensemble", member) in roles
    assert ("worst", "worst") in roles and ("check_convergence", "APGD") in roles
    doc = json.loads((out / "eval" / "robustness.json").read_text())
    assert doc["headline"]["budget"] == "quick" and doc["headline"]["upper_bound"] is True
    assert set(doc["headline"]["ensemble"]) == {"APGD", "APGDMargin", "Square"}
    assert any(line.startswith("headline robust accuracy: per image, the worst case over") for line in doc["report"])
    assert "quick ensemble (APGD-CE 10 steps, APGD-margin 10 steps, Square 100 queries)" in log
    assert "QUICK attack budget: the worst-case figures are UPPER BOUNDS" in log


def test_study_tables_name_the_headline(tmp_path):
    from monai_assim.study import _headline_note, write_aggregate, write_comparison

    headline = {"budget": "quick", "upper_bound": True, "description": "per image, the worst case over X"}
    note = _headline_note(headline)
    assert (
        note
        == "Worst case (quick attack budget): per image, the worst case over X. These are UPPER BOUNDS (the quick budget)."
    )
    row = {"arm": "vanilla", "attack": "worst", "eps_255": 2.0, "role": "worst", "n_seeds": 1, "n_images": 4,
           "mean": 0.5, "std": None, "min": 0.5, "max": 0.5}  # fmt: skip
    _, md = write_aggregate([row], {}, tmp_path, "title", note)
    assert note in md.read_text()
    _, md = write_comparison(
        [{"attack": "worst", "eps_255": 2.0, "n": 4, "vanilla_accuracy": 0.5}], tmp_path, "t", note
    )
    assert note in md.read_text() and _headline_note({}) == ""
