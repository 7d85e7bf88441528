"""GLCMLoss and AssimilationLoss against scikit-image features, PIL's luma and torch's cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.feature import graycomatrix, graycoprops

from monai_assim.glcm import DEFAULT_ANGLES
from monai_assim.losses import AssimilationLoss, GLCMLoss, feature_ranges


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def skimage_loss(pred: np.ndarray, target: np.ndarray, levels: int, window: int, reduce) -> float:
    """The paper's loss from scikit-image features (hard quantisation), range-normalised."""
    names = ("ASM", "contrast", "homogeneity", "correlation", "dissimilarity")
    ranges = feature_ranges(levels)
    scale = [ranges[n] for n in ("asm", "contrast", "homogeneity", "correlation", "dissimilarity")]

    def feats(img):
        q = np.minimum(np.floor(img * levels), levels - 1).astype(np.uint8)
        g = graycomatrix(q, [3], np.deg2rad(DEFAULT_ANGLES), levels=levels, normed=True)
        out = [graycoprops(g, n)[0] for n in names]
        i, j = np.ogrid[0:levels, 0:levels]
        out[2] = (g[:, :, 0, :] / (1.0 + np.abs(i - j))[..., None]).sum((0, 1))  # the paper's homogeneity
        return np.stack(out) / np.array(scale)[:, None]

    per_window = []
    for r in range(0, pred.shape[0] - window + 1, window):
        for c in range(0, pred.shape[1] - window + 1, window):
            d = feats(pred[r : r + window, c : c + window]) - feats(target[r : r + window, c : c + window])
            per_window.append(np.abs(d).sum())
    return reduce(per_window)


@pytest.mark.parametrize("window_reduction, reduce", [("max", np.max), ("mean", np.mean)])
def test_glcm_loss_matches_skimage_in_the_hard_limit(window_reduction, reduce):
    target = rand(2, 1, 60, 45, seed=1, dtype=torch.float64)
    pred = (target + 0.2 * rand(2, 1, 60, 45, seed=2, dtype=torch.float64)).clamp(0, 1)
    loss = GLCMLoss(levels=16, width=1e-9, window_reduction=window_reduction, normalization="range", reduction="none")(
        pred, target
    )
    assert loss.shape == (2,)
    for b in range(2):
        ref = skimage_loss(pred[b, 0].numpy(), target[b, 0].numpy(), 16, 20, reduce)
        assert abs(loss[b].item() - ref) <= 1e-6 * max(1.0, ref)


def test_identical_images_give_zero_and_reductions():
    target = rand(3, 1, 40, 40, seed=3)
    assert GLCMLoss()(target.clone(), target).item() == 0.0
    assert (
        GLCMLoss()(target.expand(3, 3, 40, 40).clone(), target).abs().item() < 1e-3
    )  # gray RGB (luma sum rounds to 1)
    pred = rand(3, 3, 40, 40, seed=4)
    none = GLCMLoss(reduction="none")(pred, target)
    assert none.shape == (3,) and (none > 0).all()
    torch.testing.assert_close(GLCMLoss(reduction="mean")(pred, target), none.mean())
    torch.testing.assert_close(GLCMLoss(reduction="sum")(pred, target), none.sum())
    assert (GLCMLoss(window_reduction="mean", reduction="none")(pred, target) <= none + 1e-6).all()


def test_luma_matches_pil_bt601():
    rgb = (rand(1, 3, 40, 40, seed=5) * 255).round().to(torch.uint8)
    pil_gray = np.asarray(Image.fromarray(rgb[0].permute(1, 2, 0).numpy(), "RGB").convert("L"), dtype=np.float32)
    gray = GLCMLoss()._gray(rgb.float() / 255.0, "pred", (1, 3))
    assert np.abs(gray[0, 0].numpy() * 255.0 - pil_gray).max() <= 1.0  # PIL rounds to uint8
    loss = GLCMLoss()
    target = rand(1, 1, 40, 40, seed=6)
    torch.testing.assert_close(
        loss(rgb.float() / 255.0, target),
        loss(torch.from_numpy(pil_gray / 255.0)[None, None], target),
        atol=0.05,
        rtol=0.05,
    )


def test_gradients_flow_into_pred_only():
    target = rand(2, 1, 40, 40, seed=7)
    pred = rand(2, 3, 40, 40, seed=8).requires_grad_()
    GLCMLoss()(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_gradcheck_float64():
    target = rand(1, 1, 8, 8, seed=9, dtype=torch.float64)
    pred = (0.05 + 0.9 * rand(1, 1, 8, 8, seed=10, dtype=torch.float64)).requires_grad_()
    loss = GLCMLoss(levels=4, distance=1, window=4, window_reduction="mean", normalization="range")
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred,))


def test_constant_pred_finite_gradient():
    target = rand(1, 1, 40, 40, seed=11)
    for value in (0.0, 0.5, 1.0):
        pred = torch.full((1, 3, 40, 40), value, requires_grad=True)
        loss = GLCMLoss()(pred, target)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_float32_under_autocast():
    target = rand(2, 1, 40, 40, seed=12)
    pred = rand(2, 3, 40, 40, seed=13)
    ref = GLCMLoss()(pred, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = GLCMLoss()(pred.bfloat16(), target)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, GLCMLoss()(pred.bfloat16().float(), target))
    assert abs(out.item() - ref.item()) < 0.1 * ref.item()  # only the bfloat16 rounding of pred differs


@pytest.mark.parametrize(
    "pred, target, kwargs, match",
    [
        (rand(1, 3, 40, 40), rand(1, 1, 40, 41), {}, "spatial"),
        (rand(2, 3, 40, 40), rand(1, 1, 40, 40), {}, "batch"),
        (rand(1, 2, 40, 40), rand(1, 1, 40, 40), {}, "C in"),
        (rand(1, 3, 40, 40), rand(1, 3, 40, 40), {}, "target"),
        (rand(1, 3, 40, 40) * 2, rand(1, 1, 40, 40), {}, r"\[0, 1\]"),
        (rand(1, 3, 40), rand(1, 1, 40, 40), {}, "shape"),
        (rand(1, 3, 10, 10), rand(1, 1, 10, 10), {}, "larger than the image"),
    ],
)
def test_glcm_loss_bad_inputs(pred, target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GLCMLoss(**kwargs)(pred, target)


def test_glcm_loss_bad_options():
    with pytest.raises(ValueError):
        GLCMLoss(window_reduction="median")
    with pytest.raises(ValueError):
        GLCMLoss(normalization="zscore")
    with pytest.raises(ValueError, match="unknown GLCM feature"):
        GLCMLoss(features=("asm", "sharpness"))
    with pytest.raises(ValueError, match="luma"):
        GLCMLoss(luma_weights=(0.5, 0.5))
    with pytest.raises(TypeError):
        GLCMLoss()(np.zeros((1, 3, 40, 40)), rand(1, 1, 40, 40))


def test_assimilation_loss_combines_terms():
    logits = torch.randn(4, 2, generator=torch.Generator().manual_seed(14), requires_grad=True)
    labels = torch.tensor([0, 1, 1, 0])
    original = rand(4, 1, 40, 40, seed=15)
    assimilated = rand(4, 3, 40, 40, seed=16).requires_grad_()
    loss_fn = AssimilationLoss(alpha=0.3)
    total = loss_fn(logits, labels, assimilated, original)
    ce = F.cross_entropy(logits, labels)
    glcm = GLCMLoss()(assimilated, original)
    torch.testing.assert_close(total, 0.3 * ce + 0.7 * glcm)
    same, terms = loss_fn.terms(logits, labels, assimilated, original)
    torch.testing.assert_close(same, total)
    assert set(terms) == {"ce", "glcm"} and not hasattr(loss_fn, "last_terms")  # no side channel
    torch.testing.assert_close(terms["ce"], ce.detach())
    torch.testing.assert_close(terms["glcm"], glcm.detach())
    assert not terms["ce"].requires_grad and not terms["glcm"].requires_grad
    total.backward()
    assert logits.grad is not None and assimilated.grad.abs().sum() > 0
    # the same value for labels as (B,), (B, 1) and one-hot (B, K)
    for other in (labels[:, None], F.one_hot(labels, 2), F.one_hot(labels, 2).float()):
        torch.testing.assert_close(loss_fn(logits, other, assimilated, original), total)
    # alpha = 1 is plain cross-entropy; reduction none gives per-sample terms
    torch.testing.assert_close(AssimilationLoss(alpha=1.0)(logits, labels, assimilated, original), ce)
    none = AssimilationLoss(alpha=0.3, reduction="none")(logits, labels, assimilated, original)
    assert none.shape == (4,)
    torch.testing.assert_close(none.mean(), total)


def test_assimilation_loss_bad_inputs():
    logits, original, assimilated = torch.randn(2, 3), rand(2, 1, 40, 40), rand(2, 3, 40, 40)
    for alpha in (-0.1, 1.5, "half"):
        with pytest.raises(ValueError, match="alpha"):
            AssimilationLoss(alpha=alpha)
    with pytest.raises(ValueError, match="labels"):
        AssimilationLoss()(logits, torch.tensor([0, 1, 2]), assimilated, original)
    with pytest.raises(ValueError, match="labels must lie"):
        AssimilationLoss()(logits, torch.tensor([0, 3]), assimilated, original)
    with pytest.raises(ValueError, match="logits"):
        AssimilationLoss()(torch.randn(2), torch.tensor([0, 1]), assimilated, original)
    with pytest.raises(TypeError, match="labels"):
        AssimilationLoss()(logits, [0, 1], assimilated, original)
