"""AssimilationNet, its modules and backbones, checked against torchvision and real ImageNet weights."""

from __future__ import annotations

import re
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from skimage import data as skdata
from skimage.transform import resize

from monai_assim.networks import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    AssimilationNet,
    ColorModule,
    TextureModule,
)
from monai_assim.networks.output_map import SIGMOID_MARGIN

SMALL = 32  # spatial size of the fast tests; 224 (ImageNet's input size) only in test_224_input_both_variants
CAT_CLASSES = set(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
HEADS = {"resnet18": "fc", "resnet50": "fc", "densenet121": "classifier", "mobilenet_v2": "classifier.1"}


def _seeded(seed: int = 0) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _perturb(module: torch.nn.Module, std: float = 0.05) -> None:
    """Move T or C away from its identity start so that every one of its parameters gets a gradient."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)


def _torchvision_features(name: str, state_dict: dict, rgb: torch.Tensor, mean, std) -> torch.Tensor:
    """The oracle: torchvision's own model, its own strict load, the head removed, on normalised RGB."""
    tv = getattr(torchvision.models, name)(weights=None)
    tv.load_state_dict(state_dict, strict=True)
    _replace(tv, HEADS[name], torch.nn.Identity())
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return tv.eval()((rgb - mean_t) / std_t)


def _replace(model: torch.nn.Module, dotted: str, new: torch.nn.Module) -> None:
    parent, _, child = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _randomised_bn_stats(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that a skipped BN buffer would change the features."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)


# ---------------------------------------------------------------------------------------------- modules


def test_modules_start_at_identity_and_stay_on_unit_interval():
    x = torch.rand(2, 1, 17, 23, generator=_seeded())
    for output_map, atol in (("clamp", 0.0), ("sigmoid", SIGMOID_MARGIN + 1e-6)):  # exact; up to the margin
        t, c = TextureModule(output_map=output_map), ColorModule(output_map=output_map)
        torch.testing.assert_close(t(x), x, rtol=0, atol=atol)
        torch.testing.assert_close(c(x), x.expand(-1, 3, -1, -1), rtol=0, atol=atol)
    _perturb(t, 1.0)
    _perturb(c, 1.0)
    out_t, out_c = t(x), c(x)
    assert out_t.shape == (2, 1, 17, 23) and out_c.shape == (2, 3, 17, 23)
    assert not torch.allclose(out_t, x)  # perturbed: no longer the identity
    for out in (out_t, out_c):
        assert out.min() >= 0 and out.max() <= 1


def test_module_bad_arguments():
    with pytest.raises(ValueError, match="num_layers"):
        TextureModule(num_layers=1)
    with pytest.raises(ValueError, match="features"):
        ColorModule(features=0)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        TextureModule()(torch.rand(1, 3, 8, 8))


# ----------------------------------------------------------------------------- every backbone, variant


@pytest.mark.parametrize("variant", ["assimilated", "vanilla"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_shapes_finite_and_gradients(backbone, variant):
    gen = _seeded()
    net = AssimilationNet(backbone, num_classes=3, variant=variant)
    if variant == "assimilated":
        _perturb(net.texture)
        _perturb(net.color)
    x = torch.rand(2, 1, SMALL, SMALL, generator=gen, requires_grad=True)
    logits, rgb = net.train()(x, return_assimilated=True)
    assert logits.shape == (2, 3) and rgb.shape == (2, 3, SMALL, SMALL)
    assert torch.isfinite(logits).all()
    assert rgb.min() >= 0 and rgb.max() <= 1
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the pixels (attacks need it)
    parts = {"backbone": [p for n, p in net.backbone.named_parameters() if not n.startswith(HEADS[backbone])]}
    parts["head"] = list(net.head.parameters())
    if variant == "assimilated":
        parts["texture"] = list(net.texture.parameters())
        parts["color"] = list(net.color.parameters())
    else:
        assert net.texture is None and net.color is None
        assert not any(k.startswith(("texture", "color")) for k in net.state_dict())
    for part, params in parts.items():
        for p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all(), part
        assert sum(float(p.grad.abs().sum()) for p in params) > 0, f"no gradient reaches {part}"
    net.eval()
    with torch.no_grad():  # without the flag: the same logits
        torch.testing.assert_close(net(x), net(x, return_assimilated=True)[0], rtol=0, atol=0)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_224_input_both_variants(backbone):
    x = torch.rand(1, 1, 224, 224, generator=_seeded())
    for variant in ("assimilated", "vanilla"):
        net = AssimilationNet(backbone, num_classes=2, variant=variant).eval()
        with torch.no_grad():
            logits, rgb = net(x, return_assimilated=True)
        assert logits.shape == (1, 2) and rgb.shape == (1, 3, 224, 224)
        assert torch.isfinite(logits).all()


def test_vanilla_is_torchvision_on_replicated_grey_and_untrained_assimilated_equals_it():
    gen = _seeded()
    tv = torchvision.models.resnet18(weights=None, num_classes=5)
    _randomised_bn_stats(tv)
    vanilla = AssimilationNet("resnet18", 5, variant="vanilla").eval()
    vanilla.backbone.load_state_dict(tv.state_dict())
    assimilated = AssimilationNet("resnet18", 5, output_map="clamp").eval()  # exactly the identity at start
    assimilated.backbone.load_state_dict(tv.state_dict())
    smooth = AssimilationNet("resnet18", 5).eval()  # the sigmoid map: up to its 0.1% margin
    smooth.backbone.load_state_dict(tv.state_dict())
    x = torch.rand(3, 1, SMALL, SMALL, generator=gen)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = tv.eval()((x.repeat(1, 3, 1, 1) - mean) / std)
        torch.testing.assert_close(vanilla(x), expected)
        torch.testing.assert_close(assimilated(x), expected)  # T = identity, C = grey replication at start
        torch.testing.assert_close(smooth.assimilate(x), x.repeat(1, 3, 1, 1), rtol=0, atol=2 * SIGMOID_MARGIN)
        torch.testing.assert_close(vanilla.assimilate(x), x.repeat(1, 3, 1, 1), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- weights


def test_shared_mobilenet_v2_vanilla_recognises_chelsea(mobilenet_v2_weights):
    net = AssimilationNet(
        "mobilenet_v2", num_classes=1000, pretrained=mobilenet_v2_weights, variant="vanilla", mean=0.5, std=0.5
    ).eval()
    photo = resize(skdata.chelsea(), (224, 224), anti_aliasing=True)  # RGB float on [0, 1]
    rgb = torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1))).float()[None]
    with torch.no_grad():
        logits = net.forward_rgb(rgb)
    top5 = set(logits[0].topk(5).indices.tolist())
    assert top5 & CAT_CLASSES, f"no cat class in the top 5 {sorted(top5)}"
    # the library's loading path gives exactly what torchvision's own strict load gives
    state = torch.load(mobilenet_v2_weights, map_location="cpu", weights_only=True)
    tv = torchvision.models.mobilenet_v2(weights=None)
    tv.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(logits, tv.eval()((rgb - 0.5) / 0.5), rtol=0, atol=0)
    # a grey X-ray-like input goes through the same path as its replicated RGB
    grey = rgb.mean(1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(net(grey), net.forward_rgb(grey.repeat(1, 3, 1, 1)))


def test_shared_mobilenet_v2_new_head_keeps_the_body(mobilenet_v2_weights):
    net = AssimilationNet("mobilenet_v2", num_classes=2, pretrained=mobilenet_v2_weights, mean=0.5, std=0.5)
    state = torch.load(mobilenet_v2_weights, map_location="cpu", weights_only=True)
    own = net.backbone.state_dict()
    for k, v in state.items():
        if k.startswith("classifier.1."):
            assert own[k].shape[0] == 2  # replaced head
        else:
            torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "densenet121"])
def test_torchvision_state_dict_loads_strictly_with_identical_features(backbone, tmp_path):
    _seeded(1)
    tv = getattr(torchvision.models, backbone)(weights=None)  # torchvision's own constructor, 1000 classes
    _randomised_bn_stats(tv)
    state = tv.state_dict()
    path = tmp_path / f"{backbone}.pt"
    torch.save(state, path)
    rgb = torch.rand(2, 3, SMALL, SMALL, generator=torch.Generator().manual_seed(2))

    # 1000 classes: the whole checkpoint loads (head included) and the logits are torchvision's
    net = AssimilationNet(backbone, num_classes=1000, pretrained=path, variant="vanilla").eval()
    for k, v in state.items():
        torch.testing.assert_close(net.backbone.state_dict()[k], v, rtol=0, atol=0, msg=k)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_rgb(rgb), tv.eval()((rgb - mean) / std), rtol=0, atol=0)

    # a new 3-class head: everything before it is the checkpoint, the features are identical
    net3 = AssimilationNet(backbone, num_classes=3, pretrained=str(path)).eval()
    assert net3.head.out_features == 3
    _replace(net3.backbone, HEADS[backbone], torch.nn.Identity())
    with torch.no_grad():
        features = net3.forward_rgb(rgb)
    expected = _torchvision_features(backbone, state, rgb, IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)


def test_imagenet_weights_come_from_the_hub_cache(tmp_path, monkeypatch):
    """'imagenet' reads torchvision's file from torch.hub's cache; the DenseNet hub files use old key names."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    _seeded(3)
    tv = torchvision.models.densenet121(weights=None)
    _randomised_bn_stats(tv)
    state = tv.state_dict()
    # write it as torchvision's hub file is written: "denselayerN.norm.1.weight" rather than "norm1"
    # (and without the BatchNorm num_batches_tracked counters, as those old files are)
    legacy = {
        re.sub(r"\.(norm|conv)([12])\.", r".\1.\2.", k) if "denselayer" in k else k: v
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    url = torchvision.models.DenseNet121_Weights.DEFAULT.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(legacy, cache / url.rsplit("/", 1)[-1])
    net = AssimilationNet("densenet121", num_classes=1000, pretrained="imagenet")
    for k, v in state.items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(net.backbone.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_imagenet_offline_and_not_cached_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError) as err:
        AssimilationNet("resnet18", 2, pretrained="imagenet")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message


# ------------------------------------------------------------------------------------ freezing, errors


def test_freeze_backbone_and_batchnorm():
    net = AssimilationNet("resnet18", 2, freeze_backbone=True, freeze_bn=True)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("texture.", "color.", "backbone.fc.")) for n in trainable)
    assert any(n.startswith("texture.") for n in trainable) and "backbone.fc.weight" in trainable
    net.train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and net.texture.training
    before = {k: v.clone() for k, v in net.backbone.state_dict().items() if not k.startswith("fc.")}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net(torch.rand(4, 1, 32, 32)).sum().backward()
    opt.step()
    after = net.backbone.state_dict()
    for k, v in before.items():  # weights and BN running statistics unchanged
        torch.testing.assert_close(after[k], v, rtol=0, atol=0, msg=k)

    only_bn = AssimilationNet("mobilenet_v2", 2, freeze_bn=True).train()
    assert not any(m.training for m in only_bn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert only_bn.backbone.features[0][0].weight.requires_grad  # convolutions still train


def test_bad_inputs_give_clear_errors(tmp_path):
    net = AssimilationNet("mobilenet_v2", 2)
    with pytest.raises(ValueError, match="1-channel"):
        net(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net.assimilate(torch.rand(1, 1, 1, 32, 32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        net(np.zeros((1, 1, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net.forward_rgb(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError) as err:
        AssimilationNet("vgg16", 2)
    assert all(name in str(err.value) for name in BACKBONES)
    with pytest.raises(ValueError, match="variant"):
        AssimilationNet("resnet18", 2, variant="assimilate")
    with pytest.raises(ValueError, match="std"):
        AssimilationNet("resnet18", 2, std=(0.5, 0.0, 0.5))
    with pytest.raises(FileNotFoundError, match="no file"):
        AssimilationNet("resnet18", 2, pretrained=tmp_path / "missing.pt")
    # a checkpoint of another architecture: the error lists the offending keys
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError) as err:
        AssimilationNet("resnet50", 2, pretrained=path)
    message = str(err.value)
    assert "layer1.0.conv3.weight" in message  # missing in a resnet18 checkpoint
    assert "layer1.0.conv1.weight: checkpoint (64, 64, 3, 3) vs model (64, 64, 1, 1)" in message
    with pytest.raises(ValueError, match="unexpected keys"):
        AssimilationNet("mobilenet_v2", 2, pretrained=path)
