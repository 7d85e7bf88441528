"""The output map of T and C: a module pushed out of range must get a gradient and come back."""

from __future__ import annotations

import pytest
import torch

from monai_assim.networks import AssimilationNet, ColorModule, TextureModule, saturation, straight_through_maps
from monai_assim.networks.output_map import SIGMOID_MARGIN, map_output


def _module(kind: str, output_map: str | None = None):
    torch.manual_seed(0)
    kwargs = {} if output_map is None else {"output_map": output_map}
    return TextureModule(**kwargs) if kind == "texture" else ColorModule(**kwargs)


def _push(module, bias: float):
    """Set the last layer's bias: every output value is pushed towards 0 (bias < 0) or 1 (bias > 0)."""
    with torch.no_grad():
        module.residual[-1].weight.normal_(0, 0.05)
        module.residual[-1].bias.fill_(bias)
    return module


def _images(n: int = 4, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, size, size, generator=g)
    x[:, :, :3] = 0.0  # black background, as in CT slices
    x[:, :, -2:] = 1.0
    return x


def _distance(module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((module(x) - x).abs().mean())


def _train(module, x: torch.Tensor, steps: int = 60) -> None:
    """What training asks of an assimilation module that lost the image: give it back as an untrained module
    does (an L1 pull towards the identity on [eps, 1 - eps])."""
    target = SIGMOID_MARGIN + (1 - 2 * SIGMOID_MARGIN) * x
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        (module(x) - target).abs().mean().backward()
        opt.step()


def test_the_default_map_is_the_sigmoid():
    assert TextureModule().output_map == ColorModule().output_map == "sigmoid"
    net = AssimilationNet("resnet18", pretrained=None)
    assert net.texture.output_map == net.color.output_map == "sigmoid"
    with pytest.raises(ValueError, match="output_map"):
        TextureModule(output_map="tanh")


@pytest.mark.parametrize("kind", ["texture", "color"])
def test_an_untrained_module_is_the_identity_up_to_the_margin(kind):
    x = _images()
    module = _module(kind)
    with torch.no_grad():
        out = module(x)
    assert out.shape[1] == (1 if kind == "texture" else 3)
    assert (out - x).abs().max() <= SIGMOID_MARGIN + 1e-6
    assert 0 < out.min() and out.max() < 1
    assert saturation(AssimilationNet("resnet18", pretrained=None), x) == {"texture": 0.0, "color": 0.0}


@pytest.mark.parametrize("output_map", ["sigmoid", "clamp_st", "clamp_return"])
@pytest.mark.parametrize("bias", [5.0, -5.0])
@pytest.mark.parametrize("kind", ["texture", "color"])
def test_a_pushed_out_module_gets_a_gradient_and_comes_back(kind, bias, output_map):
    x = _images()
    # the sigmoid's slope at mid-grey is 1/4: a 4 times larger bias pushes it as far out as the clip
    module = _push(_module(kind, output_map), bias * (4 if output_map == "sigmoid" else 1)).train()
    sat_before = float(module.saturated(x).float().mean())
    far = _distance(module, x)
    assert far > 0.3 and sat_before > 0.1  # the image is mostly lost
    (module(x) - x).abs().mean().backward()
    for name, p in module.residual.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    _train(module, x, steps=400)
    assert _distance(module, x) < 0.5 * far
    assert float(module.saturated(x).float().mean()) < 0.5 * sat_before


@pytest.mark.parametrize("bias", [5.0, -5.0])
@pytest.mark.parametrize("kind", ["texture", "color"])
def test_the_clamp_map_dies_when_pushed_out(kind, bias):
    """The defect the sigmoid map removes: the hard clip gives exactly zero gradient and never comes back."""
    x = _images()
    module = _push(_module(kind, "clamp"), bias)
    pre = x + module.delta(x)
    assert bool(((pre < 0) | (pre > 1)).all())  # every value outside [0, 1]: no gradient anywhere
    # saturated: all but the rows that were already at the end they are pushed against (3 black, 2 white)
    assert float(module.saturated(x).float().mean()) > 0.8
    (module(x) - x).abs().mean().backward()
    assert all(p.grad is None or not p.grad.any() for p in module.parameters())
    before = module(x).detach()
    _train(module, x, steps=10)
    assert torch.equal(module(x).detach(), before)


@pytest.mark.parametrize("kind", ["texture", "color"])
def test_the_straight_through_clamp_is_the_clamp_except_for_its_training_gradient(kind):
    x = _images()
    st, clamp = _push(_module(kind, "clamp_st"), 0.6), _push(_module(kind, "clamp"), 0.6)
    clamp.load_state_dict({k: v for k, v in st.state_dict().items() if k != "output_map_id"}, strict=False)
    grads = {}
    for mode in ("train", "eval"):
        for name, module in (("st", st), ("clamp", clamp)):
            getattr(module, mode)()
            xi = x.clone().requires_grad_(True)
            out = module(xi)
            out.sum().backward()
            grads[name, mode] = xi.grad
            with torch.no_grad():
                assert torch.equal(module(x), torch.clamp(x + module.delta(x), 0, 1))  # the clip's values
    pre = x + st.delta(x).detach()
    assert bool((pre > 1).any())
    assert torch.equal(grads["st", "eval"], grads["clamp", "eval"])  # deployed and attacked: the clamp
    assert not torch.equal(grads["st", "train"], grads["clamp", "train"])  # training: passes through
    with torch.no_grad():
        assert torch.equal(st.eval()(x), clamp.eval()(x))


def test_the_returning_clamp_passes_only_the_gradient_that_pulls_back():
    """``clamp_return``: the clamp's values; in training the clamp's gradient inside [0, 1] and, outside, the
    gradient that moves the value back in; in eval mode exactly the clamp."""
    x = torch.tensor([-0.5, -0.5, 0.2, 0.7, 1.5, 1.5])
    r = torch.zeros_like(x, requires_grad=True)
    g = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])  # dL/dy
    out = map_output(x, r, "clamp_return", training=True)
    assert torch.equal(out.detach(), x.clamp(0, 1))
    out.backward(g)
    # below 0: only dL/dy < 0 (asks for a larger value) passes; above 1: only dL/dy > 0
    assert torch.equal(r.grad, torch.tensor([0.0, -1.0, 1.0, -1.0, 1.0, 0.0]))
    r.grad = None
    map_output(x, r, "clamp_return", training=False).backward(g)  # eval mode: the clamp
    r2 = torch.zeros_like(x, requires_grad=True)
    map_output(x, r2, "clamp").backward(g)
    assert torch.equal(r.grad, r2.grad)


@pytest.mark.parametrize("kind", ["texture", "color"])
def test_the_returning_clamp_trains_as_the_clamp_inside_the_range(kind):
    """Nothing pushed out: ``clamp_return`` and ``clamp`` give the same training gradient."""
    x = _images()
    ret, clamp = _push(_module(kind, "clamp_return"), 0.0), _push(_module(kind, "clamp"), 0.0)
    clamp.load_state_dict({k: v for k, v in ret.state_dict().items() if k != "output_map_id"}, strict=False)
    x = x.clamp(0.2, 0.8)  # away from the ends: no value leaves [0, 1]
    for module in (ret.train(), clamp.train()):
        (module(x) - 0.5).pow(2).mean().backward()
    for (name, a), b in zip(ret.named_parameters(), clamp.parameters()):
        assert a.grad.abs().sum() > 0 and torch.equal(a.grad, b.grad), name


@pytest.mark.parametrize("bias", [30.0, -30.0])
def test_the_gradient_is_not_exactly_zero_far_out(bias):
    module = _push(_module("texture"), bias)
    x = _images()
    module(x).sum().backward()
    assert module.residual[-1].bias.grad.abs() > 0


def test_saturation_of_the_sigmoid_map():
    x = _images()
    module = _push(_module("texture"), 8.0)
    with torch.no_grad():
        out = module(x)
    slope = out * (1 - out)  # sigma'(z); its smallest value on an untrained module is about eps (1 - eps)
    edge = 1 / 255
    away = ((out < 0.5) & (x > edge)) | ((out > 0.5) & (x < 1 - edge))  # pushed to an end from elsewhere
    expected = float(((slope < SIGMOID_MARGIN * (1 - SIGMOID_MARGIN) / 10) & away).float().mean())
    assert 0.05 < expected < 0.95
    assert float(module.saturated(x).float().mean()) == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("kind", ["texture", "color"])
def test_straight_through_keeps_values_and_takes_the_surrogate_gradient(kind):
    module = _push(_module(kind), 3.0)
    x = _images()
    with torch.no_grad():
        plain = module(x)
    x1 = x.clone().requires_grad_(True)
    module(x1).sum().backward()
    x2 = x.clone().requires_grad_(True)
    with straight_through_maps(module) as switched:
        out = module(x2)
        with torch.no_grad():
            assert torch.equal(module(x), plain)
        out.sum().backward()
    assert switched == 1 and not module.straight_through_map
    x3 = x.clone().requires_grad_(True)
    (SIGMOID_MARGIN + (1 - 2 * SIGMOID_MARGIN) * x3 + module.delta(x3)).sum().backward()
    assert torch.allclose(x2.grad, x3.grad, atol=1e-6)
    assert not torch.allclose(x1.grad, x2.grad)  # sigma' scales the plain gradient down where saturated


def test_map_output_values():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    r = torch.tensor([0.0, 0.0, 2.0, -40.0])
    out = map_output(x, r, "sigmoid")
    squeezed = SIGMOID_MARGIN + (1 - 2 * SIGMOID_MARGIN) * x
    assert torch.allclose(out[:2], squeezed[:2], atol=1e-7)
    assert out[2] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=1e-6)
    assert 0 < out[3] < 1e-10
    assert torch.equal(map_output(x, r, "clamp"), (x + r).clamp(0, 1))


def test_a_checkpoint_records_its_map():
    sigmoid, clamp = TextureModule(), TextureModule(output_map="clamp")
    state = sigmoid.state_dict()
    assert int(state["output_map_id"]) != int(clamp.state_dict()["output_map_id"])
    with pytest.raises(RuntimeError, match="'sigmoid' output map.*--assimilation_map sigmoid"):
        clamp.load_state_dict(state)
    TextureModule().load_state_dict(state)
    old = {k: v for k, v in clamp.state_dict().items() if k != "output_map_id"}  # written before the maps
    clamp.load_state_dict(old)
    with pytest.raises(RuntimeError, match="'clamp' output map"):
        TextureModule().load_state_dict(old)
    net = AssimilationNet("resnet18", pretrained=None, output_map="clamp")
    AssimilationNet("resnet18", pretrained=None, output_map="clamp").load_state_dict(net.state_dict())
    with pytest.raises(RuntimeError, match="--assimilation_map clamp"):
        AssimilationNet("resnet18", pretrained=None).load_state_dict(net.state_dict())
