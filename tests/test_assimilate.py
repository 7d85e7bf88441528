"""Assimilate / Assimilated: trained T and C as MONAI transforms, from modules and from checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, PILReader
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointSaver
from monai.transforms import Compose, LoadImaged, ScaleIntensityd
from PIL import Image

from monai_assim.networks import AssimilationNet, ColorModule, TextureModule
from monai_assim.transforms import Assimilate, AssimilateD, Assimilated, AssimilateDict


def _trained_like_net(seed: int = 0, **kwargs) -> AssimilationNet:
    """An assimilated net whose T and C are far from their identity start (as after training)."""
    torch.manual_seed(seed)
    net = AssimilationNet("mobilenet_v2", 2, **kwargs)
    with torch.no_grad():
        for p in list(net.texture.parameters()) + list(net.color.parameters()):
            p.add_(torch.randn_like(p) * 0.3)
    return net.eval()


def _image(h: int = 24, w: int = 20, seed: int = 0) -> MetaTensor:
    gen = torch.Generator().manual_seed(seed)
    affine = torch.diag(torch.tensor([0.5, 0.7, 1.0, 1.0], dtype=torch.float64))
    return MetaTensor(torch.rand(1, h, w, generator=gen), affine=affine, meta={"filename_or_obj": "xray.png"})


def test_module_source_matches_the_network():
    net = _trained_like_net()
    img = _image()
    out = Assimilate(net)(img)
    with torch.no_grad():
        expected = net.assimilate(img.as_tensor()[None])[0]
    assert isinstance(out, MetaTensor) and out.shape == (3, 24, 20) and out.dtype == torch.float32
    torch.testing.assert_close(out.as_tensor(), expected, rtol=0, atol=0)
    assert not torch.allclose(out.as_tensor(), img.as_tensor().expand(3, -1, -1))  # T, C did something
    assert out.min() >= 0 and out.max() <= 1 and not out.requires_grad
    assert out.meta["filename_or_obj"] == "xray.png"
    torch.testing.assert_close(out.affine, img.affine)
    # the pair of modules gives the same image
    pair = Assimilate((net.texture, net.color))(img)
    torch.testing.assert_close(pair.as_tensor(), expected, rtol=0, atol=0)


def test_vanilla_network_replicates_grey():
    net = AssimilationNet("mobilenet_v2", 2, variant="vanilla")
    img = _image()
    out = Assimilate(net)(img)
    torch.testing.assert_close(out.as_tensor(), img.as_tensor().expand(3, -1, -1), rtol=0, atol=0)


def test_checkpoint_sources(tmp_path):
    """A plain state dict, and the nested file that MONAI's CheckpointSaver writes."""
    net = _trained_like_net(1, color_features=8)
    img = _image(seed=1)
    with torch.no_grad():
        expected = net.assimilate(img.as_tensor()[None])[0]
    plain = tmp_path / "net.pt"
    torch.save(net.state_dict(), plain)
    out = Assimilate(plain, color_kwargs={"features": 8})(img)
    torch.testing.assert_close(out.as_tensor(), expected, rtol=0, atol=0)

    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = SupervisedTrainer("cpu", 1, [], net, optimizer, torch.nn.CrossEntropyLoss())
    saver = CheckpointSaver(str(tmp_path / "ckpt"), {"network": net, "optimizer": optimizer}, save_final=True)
    saver.attach(engine)
    saver.completed(engine)
    (nested,) = (tmp_path / "ckpt").glob("*.pt")
    assert set(torch.load(nested, weights_only=True)) == {"network", "optimizer"}
    out = Assimilated("image", str(nested), color_kwargs={"features": 8})({"image": img})["image"]
    torch.testing.assert_close(out.as_tensor(), expected, rtol=0, atol=0)


def test_inside_compose_on_real_xrays(chest_xray_dir):
    net = _trained_like_net(2)
    files = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[:2]
    pipeline = Compose(
        [
            LoadImaged("image", reader=PILReader(converter=lambda im: im.convert("L")), ensure_channel_first=True),
            ScaleIntensityd("image"),
            AssimilateD("image", net),
        ]
    )
    for file in files:
        out = pipeline({"image": str(file)})["image"]
        assert out.shape == (3, 224, 224) and 0 <= out.min() and out.max() <= 1
        assert str(out.meta["filename_or_obj"]) == str(file)
        grey = np.asarray(Image.open(file).convert("L"), dtype=np.float32).T
        grey = (grey - grey.min()) / (grey.max() - grey.min())  # MONAI's PILReader keeps (W, H) order
        with torch.no_grad():
            expected = net.assimilate(torch.from_numpy(grey)[None, None])[0]
        torch.testing.assert_close(out.as_tensor(), expected, rtol=1e-5, atol=1e-5)


def test_numpy_input_and_dtype():
    net = _trained_like_net(3)
    arr = np.random.default_rng(0).random((1, 9, 11))  # float64
    out = Assimilate(net, dtype=None)(arr)
    assert out.dtype == torch.float64 and out.shape == (3, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(out.float(), net.assimilate(torch.from_numpy(arr).float()[None])[0])


def test_device(tmp_path):
    net = _trained_like_net(4)
    t = Assimilate(net, device="cpu")
    assert t.device == torch.device("cpu") and t(_image()).device.type == "cpu"
    if torch.cuda.is_available():  # not on the CPU-only development machine
        out = Assimilate(net, device="cuda")(_image())
        assert out.device.type == "cpu"


def test_aliases():
    assert AssimilateD is Assimilated and AssimilateDict is Assimilated


def test_bad_inputs_give_clear_errors(tmp_path):
    net = _trained_like_net()
    t = Assimilate(net)
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        t(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        t(torch.rand(8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        t(torch.rand(1, 8, 8) * 255)
    with pytest.raises(TypeError, match="AssimilationNet"):
        Assimilate(torch.nn.Conv2d(1, 3, 1))
    with pytest.raises(FileNotFoundError):
        Assimilate(tmp_path / "missing.pt")
    vanilla = tmp_path / "vanilla.pt"
    torch.save(AssimilationNet("mobilenet_v2", 2, variant="vanilla").state_dict(), vanilla)
    with pytest.raises(ValueError, match="vanilla"):
        Assimilate(vanilla)
    wide = tmp_path / "wide.pt"
    torch.save(
        {
            "network": {
                **{f"texture.{k}": v for k, v in TextureModule(features=4).state_dict().items()},
                **{f"color.{k}": v for k, v in ColorModule().state_dict().items()},
            }
        },
        wide,
    )
    with pytest.raises(ValueError, match="texture.residual.0.weight"):
        Assimilate(wide)
    assert Assimilate(wide, texture_kwargs={"features": 4})(_image()).shape == (3, 24, 20)


def test_backend_is_torch_and_numpy_round_trips():
    """The modules compute in torch: the backend says so, and a numpy image comes back as a tensor (MONAI's rule)."""
    from monai.utils import TransformBackends

    assert Assimilate.backend == [TransformBackends.TORCH] and Assimilated.backend == Assimilate.backend
    t = Assimilate((TextureModule(), ColorModule()))
    img = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    out = t(img)
    assert isinstance(out, MetaTensor) and out.shape == (3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.as_tensor(), t(torch.as_tensor(img)).as_tensor())
