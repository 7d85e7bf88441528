"""T and C training controls: own learning rate, initialisation, and the logged movement metrics."""

import json
import math

import pytest
import torch
from ignite.engine import Engine

from monai_assim.losses import GLCMLoss
from monai_assim.metrics import (
    AssimilationMovement,
    assimilation_distances,
    chroma,
    grey,
    grey_level_map,
)
from monai_assim.networks import (
    AssimilationNet,
    ColorModule,
    TextureModule,
    param_groups,
)


def _net(variant="assimilated", init="identity"):
    return AssimilationNet("mobilenet_v2", 2, pretrained=None, variant=variant, assimilation_init=init)


def test_param_groups_split_t_and_c():
    net = _net()
    groups = param_groups(net, 1e-4, 1e-2)
    assert [g["name"] for g in groups] == ["backbone", "assimilation"]
    assert [g["lr"] for g in groups] == [1e-4, 1e-2]
    ids = {id(p) for p in net.texture.parameters()} | {id(p) for p in net.color.parameters()}
    assert {id(p) for p in groups[1]["params"]} == ids
    assert not ids & {id(p) for p in groups[0]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    # wrapped (names "module.texture.*") and the method form give the same split
    wrapped = param_groups(torch.nn.DataParallel(net), 1e-4, 1e-2)
    assert [len(g["params"]) for g in wrapped] == [len(g["params"]) for g in groups]
    assert [g["lr"] for g in net.parameter_groups(1e-3)] == [1e-3, 1e-3]  # None -> lr
    assert [g["name"] for g in param_groups(_net("vanilla"), 1e-4, 1e-2)] == ["backbone"]
    opt = torch.optim.Adam(groups)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-2]
    with pytest.raises(ValueError, match="assimilation_lr"):
        param_groups(net, 1e-4, 0.0)


def test_random_init_is_a_mild_filter_and_a_colour_map():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    t, c = TextureModule(output_map="clamp"), ColorModule(output_map="clamp")
    assert torch.equal(t(x), x) and torch.equal(c(x), x.expand(-1, 3, -1, -1))
    torch.manual_seed(3)
    t, c = TextureModule(init="random"), ColorModule(init="random")
    with torch.no_grad():
        dt = (t(x) - x).abs().mean()
        ch = chroma(c(x)).mean()
    assert 1e-3 < dt < 0.05  # a mild filter: moves, by a few grey levels
    assert ch > 0.01  # not grey
    torch.manual_seed(3)
    assert torch.equal(TextureModule(init="random").residual[-1].weight, t.residual[-1].weight)
    net = _net(init="random")
    assert net.texture.init == net.color.init == "random"
    with pytest.raises(ValueError, match="unknown init"):
        ColorModule(init="zeros")


def test_distances_on_a_hand_made_example():
    x = torch.full((2, 1, 4, 4), 0.5)
    rgb = torch.empty(2, 3, 4, 4)
    rgb[0] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # pure red: grey 0.299, chroma 0.4951
    rgb[1] = 0.6  # grey, 0.1 brighter
    d = assimilation_distances(rgb, x)
    assert d["grey_shift"].tolist() == pytest.approx([0.201, 0.1], abs=1e-6)
    red = math.sqrt((0.701**2 + 0.299**2 + 0.299**2) / 3)
    assert d["chroma"].tolist() == pytest.approx([red, 0.0], abs=1e-6)
    assert grey(rgb)[0].unique().tolist() == pytest.approx([0.299])
    # a global grey-level map explains a monotone change entirely, a pixel shuffle not at all
    xs = torch.linspace(0, 1, 64).view(1, 1, 8, 8)
    assert (grey_level_map(xs, xs**2) - xs**2).abs().max() < 1e-6
    d2 = assimilation_distances((xs**2).expand(-1, 3, -1, -1), xs)
    assert d2["texture_shift"].item() < 1e-6 and d2["map_shift"].item() == pytest.approx(
        (xs**2 - xs).abs().mean().item()
    )


class _Fixed(torch.nn.Module):
    """assimilate(x) = x + 0.1 on the red channel only."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def assimilate(self, x):
        return torch.cat([x + 0.1, x, x], 1)


def test_movement_metric_logs_the_right_numbers():
    net = _Fixed()
    metric = AssimilationMovement(net, glcm="output", prefix="train_")
    engine = Engine(lambda e, b: [{"image": im, "loss_glcm": torch.tensor(b[1])} for im in b[0]])  # decollated
    metric.attach(engine, "train_assimilation")
    x1, x2 = torch.full((2, 1, 8, 8), 0.2), torch.full((1, 1, 8, 8), 0.4)
    state = engine.run([(x1, 3.0), (x2, 6.0)], max_epochs=1)
    m = state.metrics
    # grey = x + 0.0299 everywhere; chroma of (x + 0.1, x, x) = 0.1 * sqrt((0.701^2 + 2 * 0.299^2) / 3)
    assert m["train_grey_shift"] == pytest.approx(0.0299, abs=1e-6)
    assert m["train_chroma"] == pytest.approx(0.1 * math.sqrt((0.701**2 + 2 * 0.299**2) / 3), abs=1e-6)
    assert m["train_glcm"] == pytest.approx((2 * 3.0 + 1 * 6.0) / 3)  # per-image mean of the logged term
    # a vanilla net has not moved; the GLCM term computed from a loss is ~0 for replicated grey
    vnet = _net("vanilla")
    metric = AssimilationMovement(vnet, glcm=GLCMLoss(levels=8, window=8), prefix="val_")
    engine = Engine(lambda e, b: {"image": b})
    metric.attach(engine, "val_assimilation")
    m = engine.run([torch.rand(2, 1, 16, 16)], max_epochs=1).metrics
    assert m["val_grey_shift"] == pytest.approx(0.0, abs=1e-6) and m["val_chroma"] == pytest.approx(0.0, abs=1e-6)
    assert m["val_glcm"] == pytest.approx(0.0, abs=1e-4)


def _train(out, **kw):
    from monai.bundle import run

    run(
        config_file="bundles/chest_xray/train.json",
        meta_file="bundles/chest_xray/metadata.json",
        bundle_root="bundles/chest_xray",
        dataset_dir="demo",
        output_dir=str(out),
        image_size=32,
        epochs=2,
        batch_size=8,
        backbone="mobilenet_v2",
        pretrained="none",
        learning_rate=1e-4,
        max_per_class={"train": 8, "validation": 4, "test": 4},
        **kw,
    )


@pytest.mark.slow
def test_assimilation_lr_moves_t_and_c_further(tmp_path):
    from monai_assim.transforms import load_assimilation_modules

    moved = {}
    for name, alr in (("same", "none"), ("own", 0.01)):
        _train(tmp_path / name, assimilation_lr=alr)
        summary = json.loads((tmp_path / name / "run_summary.json").read_text())
        assert summary["settings"]["assimilation_lr"] == (None if alr == "none" else alr)
        modules = load_assimilation_modules(tmp_path / name / "checkpoints" / "last.pt")
        x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            d = assimilation_distances(modules(x), x)
        moved[name] = float(d["grey_shift"].mean() + d["chroma"].mean())
    # the run logs the movement (StatsHandler / TensorBoard names)
    assert moved["own"] > 10 * moved["same"] > 0, moved
