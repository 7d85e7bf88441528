"""monai_assim.attacks: torchattacks by name, the eps-scaled step size, seeding, bad input, the attack budgets."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from helpers.tiny_nets import synthetic_data, trained_tiny_net

from monai_assim.attacks import (
    ATTACK_BUDGETS,
    DEFAULT_EPS,
    SUPPORTED_ATTACKS,
    attack_budget,
    build_attack,
    build_eps_grouped_attack,
    convergence_members,
    describe_attack,
    parse_attacks,
    run_attack,
    step_size,
)
from monai_assim.errors import UserInputError


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def test_trained_model_is_accurate():
    net = trained_tiny_net()
    x, y = synthetic_data(64, seed=2)
    assert accuracy(net, x, y) >= 0.95


def test_pgd_accuracy_falls_with_eps_and_eps0_is_clean():
    net = trained_tiny_net()
    x, y = synthetic_data(64, seed=2)
    clean = accuracy(net, x, y)
    accs = [accuracy(net, run_attack(build_attack("PGD", net, e), x, y, seed=3), y) for e in (0.0,) + DEFAULT_EPS]
    assert accs[0] == clean
    assert accs[-1] <= clean - 0.5, accs
    assert all(b <= a + 1 / 64 for a, b in zip(accs, accs[1:])), accs  # non-increasing up to one sample
    big = run_attack(build_attack("PGD", net, 64 / 255), x, y, seed=3)
    assert accuracy(net, big, y) <= 0.05
    assert (big - x).abs().max() <= 64 / 255 + 1e-6 and big.min() >= 0 and big.max() <= 1


@pytest.mark.parametrize("name", ["FGSM", "BIM", "MIFGSM", "PGD", "APGD", "Square"])
def test_matches_torchattacks_called_directly(name):
    net = trained_tiny_net()
    x, y = synthetic_data(16, seed=4)
    eps, seed = 4 / 255, 7
    kw = {"n_queries": 50} if name == "Square" else {}
    ours = run_attack(build_attack(name, net, eps, **kw), x, y, seed)
    # the documented rule, written out against torchattacks itself
    direct_kw = {
        "FGSM": {},
        "BIM": {"alpha": 2.5 * eps / 10, "steps": 10},
        "MIFGSM": {"alpha": 2.5 * eps / 10, "steps": 10},
        "PGD": {"alpha": 2.5 * eps / 10, "steps": 10, "random_start": True},
        "APGD": {"seed": seed, "loss": "ce"},
        "Square": {"seed": seed, "n_queries": 50},
    }[name]
    torch.manual_seed(seed)
    direct = getattr(torchattacks, name)(net, eps=eps, **direct_kw)(x, y)
    assert torch.equal(ours, direct)
    assert (ours - x).abs().max() <= eps + 1e-6


def test_run_attack_leaves_global_rng_alone():
    net = trained_tiny_net()
    x, y = synthetic_data(8, seed=4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_attack(build_attack("PGD", net, 2 / 255), x, y, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_step_size_rule_scales_with_eps():
    net = trained_tiny_net()
    for e in DEFAULT_EPS:
        atk = build_attack("BIM", net, e, steps=5)
        assert atk.alpha == pytest.approx(2.5 * e / 5) and atk.steps == 5
    assert build_attack("PGD", net, 0.1, alpha_ratio=1.0).alpha == pytest.approx(0.01)
    assert build_attack("PGD", net, 0.1, alpha=0.05).alpha == 0.05
    assert build_attack("PGD", net, 0.1).random_start is True
    assert step_size(0.08, 4) == pytest.approx(0.05)


@pytest.mark.parametrize("name", ["FGSM", "BIM", "MIFGSM"])
def test_eps_grouped_equals_per_eps(name):
    net = trained_tiny_net()
    x, y = synthetic_data(8, seed=5)
    group = DEFAULT_EPS[:4]
    grouped = run_attack(build_eps_grouped_attack(name, net, group, len(x)), x.repeat(4, 1, 1, 1), y.repeat(4), 0)
    for g, e in enumerate(group):
        single = run_attack(build_attack(name, net, e), x, y, 0)
        part = grouped[g * len(x) : (g + 1) * len(x)]
        assert (part - single).abs().max() <= 1e-5
        assert (part - x).abs().max() <= e + 1e-6


def test_bad_input():
    net = trained_tiny_net()
    with pytest.raises(ValueError, match="supported attacks: " + ", ".join(SUPPORTED_ATTACKS)):
        build_attack("DeepFool2", net, 0.01)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_attack("PGD", net, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_attack("FGSM", net, -0.01)
    with pytest.raises(TypeError):
        build_attack("FGSM", net, "8/255")
    for name, kw in (("APGDT", {}), ("APGD", {"loss": "dlr"})):
        with pytest.raises(ValueError, match=r"DLR loss, which needs >= [34] classes"):
            build_attack(name, net, 0.01, **kw)
    with pytest.raises(ValueError, match="cannot craft several eps"):
        build_eps_grouped_attack("PGD", net, [0.01, 0.02], 4)  # random start needs a scalar eps
    with pytest.raises(ValueError, match="twice"):
        parse_attacks(["pgd", "PGD"])
    assert list(parse_attacks(["fgsm", ("square", {"n_queries": 5})])) == ["FGSM", "Square"]


def test_dlr_attack_runs_on_three_classes():
    net = trained_tiny_net(3)
    x, y = synthetic_data(12, num_classes=3, seed=6)
    assert accuracy(net, x, y) >= 0.9
    adv = run_attack(build_attack("APGD", net, 16 / 255, steps=5, loss="dlr"), x, y, seed=0)
    assert accuracy(net, adv, y) < accuracy(net, x, y)


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
