"""Worst case over attacks, per-image results, attach guard, metric timing, binary ensemble, structure checks."""

from __future__ import annotations

import json

import pytest
import torch
import torchattacks
from helpers.tiny_nets import synthetic_data, trained_tiny_net
from ignite.engine import Engine, Events
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import MetricsSaver

from monai_assim.attacks import APGDMargin, build_attack, margin_loss, parse_attacks, run_attack
from monai_assim.handlers import AdversarialRobustnessHandler, robustness_metric_names
from monai_assim.networks import (
    AssimilationNet,
    ColorModule,
    TextureModule,
    saturation,
    straight_through_maps,
    unit_clamp,
)
from monai_assim.robustness_results import PER_IMAGE_COLUMNS, load_per_image_rows, worst_case_correct

BATCH = 16


def _loader(n: int = 32, seed: int = 2):
    x, y = synthetic_data(n, seed=seed)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, n, BATCH)], x, y


def _run(handler, loader) -> Engine:
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run(loader)
    return engine


def _per_image(rows, attack, eps_255, role):
    sel = sorted(
        (r for r in rows if (r["attack"], r["eps_255"], r["role"]) == (attack, eps_255, role)),
        key=lambda r: r["sample"],
    )
    return torch.tensor([r["correct"] for r in sel], dtype=torch.bool)


class Wavy(torch.nn.Module):
    """logits (-s, s), s = sin(w * mean(x)): non-monotone, so FGSM and PGD fool different images."""

    num_classes = 2

    def __init__(self, w: float = 300.0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))

    def forward(self, x):
        s = torch.sin(self.w * x.mean((1, 2, 3)))
        return torch.stack([-s, s], 1)


def test_worst_case_is_a_per_image_and_and_per_image_rows_match_torchattacks(tmp_path):
    net = Wavy()
    torch.manual_seed(0)
    x = (torch.rand(32, 1, 1, 1) * 0.6 + 0.2 + 0.02 * torch.randn(32, 1, 8, 8)).clamp(0, 1)
    with torch.no_grad():
        y = net(x).argmax(1)
    loader = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, 32, BATCH)]
    eps = (2 / 255, 3 / 255)
    attacks = {"FGSM": {}, "PGD": {"steps": 3}}
    handler = AdversarialRobustnessHandler(
        net, attacks=attacks, eps=eps, seed=4, output_dir=tmp_path, check_eps=None, progress=False, worst_case=True
    )
    m = _run(handler, loader).state.metrics
    assert list(m) == robustness_metric_names(attacks, eps, check_eps=None, worst_case=True)
    rows = load_per_image_rows(tmp_path / "robustness_per_image.csv")
    assert tuple(rows[0]) == PER_IMAGE_COLUMNS
    assert [r["label"] for r in rows if r["attack"] == "clean"] == y.tolist()
    # per-sample results equal torchattacks called directly (batch i seeded with seed + i)
    for e in eps:
        direct = []
        for i, (xb, yb) in enumerate(loader):
            torch.manual_seed(4 + i)
            adv = torchattacks.PGD(net, eps=e, alpha=2.5 * e / 3, steps=3, random_start=True)(xb, yb)
            with torch.no_grad():
                direct.append(net(adv).argmax(1) == yb)
        assert torch.equal(_per_image(rows, "PGD", round(e * 255, 4), "attack"), torch.cat(direct))
    summary = {(r["attack"], r["role"], r["eps"]): r for r in handler.rows}
    for e in eps:
        k = round(e * 255, 4)
        members = [_per_image(rows, a, k, "attack") for a in attacks]
        expected = members[0] & members[1]
        assert torch.equal(_per_image(rows, "worst", k, "worst"), expected)
        assert torch.equal(worst_case_correct(members), expected)
        assert m[f"adv_worst_eps{k:g}_acc"] == expected.float().mean().item()
        assert summary[("worst", "worst", e)]["n_correct"] == int(expected.sum())
    # at 3/255 each attack fools images the other does not: the AND is below both members
    fgsm, pgd = (_per_image(rows, a, 3.0, "attack") for a in attacks)
    assert (fgsm & ~pgd).any() and (pgd & ~fgsm).any()
    assert m["adv_worst_eps3_acc"] < min(m["adv_FGSM_eps3_acc"], m["adv_PGD_eps3_acc"])
    written = json.loads((tmp_path / "robustness.json").read_text())["rows"]
    assert [r["attack"] for r in written if r["role"] == "worst"] == ["worst", "worst"]


def test_worst_case_off_by_default_keeps_the_summary_rows():
    net = trained_tiny_net()
    loader, _, _ = _loader(16)
    handler = AdversarialRobustnessHandler(net, attacks={"FGSM": {}}, eps=(2 / 255,), check_eps=None, progress=False)
    m = _run(handler, loader).state.metrics
    assert [r["role"] for r in handler.rows] == ["clean", "attack"]
    assert not any("worst" in k for k in m)


def test_per_image_names_from_metatensor_meta_in_a_monai_evaluator(tmp_path):
    net = trained_tiny_net()
    x, y = synthetic_data(12, seed=5)
    items = [
        {"image": MetaTensor(x[i], meta={"filename_or_obj": f"/data/img{i}.png"}), "label": y[i]} for i in range(12)
    ]
    handler = AdversarialRobustnessHandler(
        attacks={"FGSM": {}}, eps=(4 / 255,), output_dir=tmp_path, check_eps=None, progress=False
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=5), network=net, val_handlers=[handler]
    )
    evaluator.run()
    rows = load_per_image_rows(tmp_path / "robustness_per_image.csv")
    clean = [r for r in rows if r["attack"] == "clean"]
    assert [r["image"] for r in clean] == [f"/data/img{i}.png" for i in range(12)]
    assert [r["sample"] for r in clean] == list(range(12)) and {r["eps_255"] for r in clean} == {0.0}
    with torch.no_grad():
        assert [bool(r["correct"]) for r in clean] == (net(x).argmax(1) == y).tolist()
    # tuple batches carry no meta: empty names
    handler2 = AdversarialRobustnessHandler(
        net, attacks={"FGSM": {}}, eps=(4 / 255,), output_dir=tmp_path / "t", check_eps=None, progress=False
    )
    _run(handler2, [(x, y)])
    assert {r["image"] for r in load_per_image_rows(tmp_path / "t" / "robustness_per_image.csv")} == {""}


def test_double_attach_is_ignored():
    net = trained_tiny_net()
    loader, x, _ = _loader(16)
    handler = AdversarialRobustnessHandler(net, attacks={"FGSM": {}}, eps=(2 / 255,), check_eps=None, progress=False)
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    handler.attach(engine)
    assert len(engine._event_handlers[Events.ITERATION_COMPLETED]) == 1
    engine.run(loader)
    assert handler.rows[0]["n"] == len(x)


def test_metrics_reach_handlers_listed_before_it(tmp_path):
    net = trained_tiny_net()
    x, y = synthetic_data(16, seed=6)
    data = [{"image": x[i : i + 8], "label": y[i : i + 8]} for i in range(0, 16, 8)]
    seen = {}
    adv = AdversarialRobustnessHandler(attacks={"FGSM": {}}, eps=(2 / 255,), check_eps=None, progress=False)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=data,
        network=net,
        val_handlers=[MetricsSaver(save_dir=tmp_path, metrics="*", metric_details=None), adv],
    )
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.update(e.state.metrics))
    evaluator.run()
    assert "adv_FGSM_eps2_acc" in (tmp_path / "metrics.csv").read_text()
    assert seen["adv_FGSM_eps2_acc"] == evaluator.state.metrics["adv_FGSM_eps2_acc"]


# ---------------------------------------------------------------- the binary ensemble
def test_margin_loss_is_the_best_other_logit_minus_the_true_one():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 4.0]])
    labels = torch.tensor([0, 2])
    assert torch.equal(margin_loss(logits, labels), torch.tensor([0.5 - 2.0, 3.0 - 4.0]))


def test_autoattack_binary_is_named_and_expands():
    attacks = parse_attacks("autoattack-binary")
    assert list(attacks) == ["APGD", "APGDMargin", "Square"]
    assert attacks["APGD"]["loss"] == "ce" and attacks["Square"]["loss"] == "margin"
    assert list(parse_attacks(["FGSM", "AutoAttack-Binary"])) == ["FGSM", "APGD", "APGDMargin", "Square"]


def test_apgd_members_equal_torchattacks_and_margin_survives_saturation():
    net = trained_tiny_net()
    x, y = synthetic_data(16, seed=8)
    eps, seed = 4 / 255, 3
    # the APGD-CE member is torchattacks' APGD with the same seed
    ours = run_attack(build_attack("APGD", net, eps, loss="ce", steps=10), x, y, seed)
    torch.manual_seed(seed)
    direct = torchattacks.APGD(net, eps=eps, steps=10, loss="ce", seed=seed)(x, y)
    assert torch.equal(ours, direct)
    # for 2 classes CE = softplus(-margin): a monotone function of the margin, with per-sample gradients of the
    # same sign, so APGD's iterates on the margin equal torchattacks' APGD-CE ones (where CE has not saturated)
    margin = run_attack(build_attack("APGDMargin", net, eps, steps=10), x, y, seed)
    assert isinstance(build_attack("APGDMargin", net, eps), APGDMargin)
    assert (margin - direct).abs().max() <= 1e-6

    class Saturated(torch.nn.Module):  # the same classifier, logits x 1e4: CE's gradient underflows to 0
        def __init__(self, inner):
            super().__init__()
            self.inner, self.num_classes = inner, 2

        def forward(self, v):
            return self.inner(v) * 1e4

    sat = Saturated(net).eval()
    big = 16 / 255
    ce_adv = run_attack(build_attack("APGD", sat, big, loss="ce", steps=10), x, y, seed)
    margin_adv = run_attack(build_attack("APGDMargin", sat, big, steps=10), x, y, seed)
    with torch.no_grad():
        acc_ce = (sat(ce_adv).argmax(1) == y).float().mean()
        acc_margin = (sat(margin_adv).argmax(1) == y).float().mean()
    assert acc_margin < acc_ce - 0.2, (acc_margin, acc_ce)


def test_autoattack_binary_worst_case_is_below_each_member(tmp_path):
    net = Wavy(150.0)
    torch.manual_seed(1)
    x = (torch.rand(16, 1, 1, 1) * 0.6 + 0.2 + 0.02 * torch.randn(16, 1, 8, 8)).clamp(0, 1)
    with torch.no_grad():
        loader = [(x, net(x).argmax(1))]
    eps = (4 / 255,)
    handler = AdversarialRobustnessHandler(
        net, attacks="autoattack-binary", eps=eps, output_dir=tmp_path, check_eps=None, progress=False, worst_case=True
    )
    m = _run(handler, loader).state.metrics
    rows = load_per_image_rows(tmp_path / "robustness_per_image.csv")
    worst = _per_image(rows, "worst", 4.0, "worst")
    for member in ("APGD", "APGDMargin", "Square"):
        assert m["adv_worst_eps4_acc"] <= m[f"adv_{member}_eps4_acc"]
        assert not (worst & ~_per_image(rows, member, 4.0, "attack")).any()


# ---------------------------------------------------------------- structure-aware checks
class TinyAssim(torch.nn.Module):
    """T and C of AssimilationNet in front of a tiny classifier (fast stand-in for the backbone)."""

    num_classes = 2

    def __init__(self, output_map: str = "clamp") -> None:
        super().__init__()
        self.texture, self.color = TextureModule(output_map=output_map), ColorModule(output_map=output_map)
        self.head = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(16, 2),
        )

    def forward(self, x):
        return self.head(self.color(self.texture(x)))


def _saturating_net(seed: int = 0) -> TinyAssim:
    """T pushes bright pixels above 1, C pushes the red channel below 0 (random T, C weights otherwise)."""
    torch.manual_seed(seed)
    net = TinyAssim()
    with torch.no_grad():
        net.texture.residual[-1].weight.normal_(0, 0.05)
        net.texture.residual[-1].bias.fill_(0.3)
        net.color.residual[-1].weight.normal_(0, 0.3)
        net.color.residual[-1].bias.copy_(torch.tensor([-0.6, 0.0, 0.1]))
    return net.eval()


def test_straight_through_clamps_keep_values_and_pass_gradients():
    # the clamp map; the sigmoid map's straight-through is tested in test_output_map.py
    net = _saturating_net()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        plain = net(x)
    x1 = x.clone().requires_grad_(True)
    net.texture(x1).sum().backward()
    x2 = x.clone().requires_grad_(True)
    with straight_through_maps(net) as switched:
        with torch.no_grad():
            assert torch.equal(net(x), plain)  # forward values bit-identical
        net.texture(x2).sum().backward()
    assert switched == 2 and not net.texture.straight_through_map  # restored
    x3 = x.clone().requires_grad_(True)
    (x3 + net.texture.delta(x3)).sum().backward()
    assert (x + net.texture.delta(x) > 1).any()
    assert torch.allclose(x2.grad, x3.grad)  # straight through: the gradient of x + f(x)
    assert not torch.allclose(x1.grad, x2.grad)  # the plain clamp blocks the saturated pixels
    v = torch.tensor([-0.5, 0.1, 0.3, 0.9, 1.5], requires_grad=True)
    unit_clamp(v).sum().backward()
    assert torch.equal(v.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))
    v.grad = None
    out = unit_clamp(v, straight_through=True)
    out.sum().backward()
    assert torch.equal(out, v.detach().clamp(0, 1)) and torch.equal(v.grad, torch.ones(5))


def test_saturation_fractions_of_the_clamp_map():
    net = _saturating_net()
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        pre_t = x + net.texture.delta(x)
        t = pre_t.clamp(0, 1)
        pre_c = t + net.color.delta(t)
    f = saturation(net, x)
    edge = 1 / 255  # only values pushed against an end from an input away from it count

    def fraction(pre, inp):
        return float((((pre < 0) & (inp > edge)) | ((pre > 1) & (inp < 1 - edge))).float().mean())

    assert f["texture"] == pytest.approx(fraction(pre_t, x))
    assert f["color"] == pytest.approx(fraction(pre_c, t))
    assert 0.1 < f["texture"] < 0.5 and f["color"] > 0.1
    assert saturation(AssimilationNet("resnet18", pretrained=None, variant="vanilla"), x) == {}


def test_structure_checks_in_the_handler(tmp_path):
    net = _saturating_net(1)
    torch.manual_seed(0)
    x = torch.rand(16, 1, 16, 16)
    with torch.no_grad():  # balance the two classes so that attacks at small eps fool some images
        z = net(x)
        net.head[-1].bias[1] += (z[:, 0] - z[:, 1]).median()
        y = net(x).argmax(1)
    eps, seed = (2 / 255, 4 / 255), 5
    strong = {"loss": "ce", "steps": 3, "n_restarts": 2}
    handler = AdversarialRobustnessHandler(
        net,
        attacks={"PGD": {"steps": 2}, "Square": {"n_queries": 5}},
        eps=eps,
        seed=seed,
        output_dir=tmp_path,
        check_eps=None,
        progress=False,
        structure_checks=True,
        structure_check_kwargs=strong,
    )
    m = _run(handler, [(x, y)]).state.metrics
    assert list(m)[:-2] == robustness_metric_names(["PGD", "Square"], eps, check_eps=None, structure_checks=True)
    rows = load_per_image_rows(tmp_path / "robustness_per_image.csv")
    differs = False
    for e in eps:
        k = round(e * 255, 4)
        pgd = lambda e=e: torchattacks.PGD(net, eps=e, alpha=2.5 * e / 2, steps=2, random_start=True)  # noqa: E731
        torch.manual_seed(seed)
        with straight_through_maps(net):
            bpda = pgd()(x, y)
        torch.manual_seed(seed)
        plain = pgd()(x, y)
        torch.manual_seed(seed)
        apgd = torchattacks.APGD(net, eps=e, seed=seed, steps=3, n_restarts=2, loss="ce")(x, y)
        with torch.no_grad():
            acc = {n: (net(v).argmax(1) == y) for n, v in (("bpda", bpda), ("plain", plain), ("apgd", apgd))}
        assert torch.equal(_per_image(rows, "PGD", k, "check_bpda"), acc["bpda"])
        assert torch.equal(_per_image(rows, "PGD", k, "attack"), acc["plain"])
        assert torch.equal(_per_image(rows, "APGD", k, "check_apgd_strong"), acc["apgd"])
        assert m[f"adv_check_bpda_PGD_eps{k:g}_acc"] == acc["bpda"].float().mean().item()
        assert m[f"adv_check_apgd_strong_eps{k:g}_acc"] == acc["apgd"].float().mean().item()
        differs |= not torch.equal(acc["bpda"], acc["plain"])  # the straight-through gradient changes the attack
        every = [
            _per_image(rows, a, k, r)
            for a, r in (("PGD", "attack"), ("Square", "attack"), ("PGD", "check_bpda"), ("APGD", "check_apgd_strong"))
        ]
        assert torch.equal(_per_image(rows, "worst", k, "check_worst"), worst_case_correct(every))
        assert m[f"adv_check_worst_eps{k:g}_acc"] == worst_case_correct(every).float().mean().item()
    assert differs
    structure = json.loads((tmp_path / "robustness.json").read_text())["structure"]
    assert structure["saturation"] == pytest.approx(saturation(net, x))
    assert m["adv_saturation_texture"] == pytest.approx(saturation(net, x)["texture"])
    assert {r["role"] for r in handler.rows} == {"clean", "attack", "check_bpda", "check_apgd_strong", "check_worst"}


def test_structure_checks_on_a_vanilla_net_reuse_the_plain_attack():
    net = trained_tiny_net()  # no clamps
    x, y = synthetic_data(8, seed=3)
    handler = AdversarialRobustnessHandler(
        net,
        attacks={"PGD": {"steps": 2}},
        eps=(8 / 255,),
        check_eps=None,
        progress=False,
        structure_checks=True,
        structure_check_kwargs={"steps": 2},
    )
    m = _run(handler, [(x, y)]).state.metrics
    assert m["adv_check_bpda_PGD_eps8_acc"] == m["adv_PGD_eps8_acc"]
    assert "adv_saturation_texture" not in m
