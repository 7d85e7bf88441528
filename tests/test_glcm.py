"""The GLCM core against scikit-image (the oracle), window by window, and its soft/autograd behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.feature import graycomatrix, graycoprops

from monai_assim.glcm import (
    DEFAULT_ANGLES,
    SUPPORTED_FEATURES,
    glcm,
    glcm_features,
    glcm_offset,
    quantize,
    soft_memberships,
    sot_matrix,
)

SKIMAGE_NAMES = {"asm": "ASM", "homogeneity_skimage": "homogeneity"}


def skimage_window(q: np.ndarray, levels: int, distance: int, angles) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's normalised asymmetric GLCMs ``(A, L, L)`` and all features ``(F, A)`` of one window."""
    g = graycomatrix(q.astype(np.uint8), [distance], np.deg2rad(angles), levels=levels, symmetric=False, normed=True)
    feats = []
    for name in SUPPORTED_FEATURES:
        if name == "homogeneity":  # the paper's sum P / (1 + |i - j|), from scikit-image's P
            i, j = np.ogrid[0:levels, 0:levels]
            feats.append((g[:, :, 0, :] / (1.0 + np.abs(i - j))[..., None]).sum((0, 1)))
        else:
            feats.append(graycoprops(g, SKIMAGE_NAMES.get(name, name))[0])
    mats, feats = g[:, :, 0, :].transpose(2, 0, 1), np.stack(feats)
    # Where one marginal of P is a single level, the correlation is undefined and scikit-image means to
    # return 1 (its std < 1e-15 branch), but its float mean (sum of i * P over all cells) can leave a std
    # of ~1e-16..1e-15 and a result ~0. The oracle applies scikit-image's rule to the exact marginals.
    single = (np.count_nonzero(mats.sum(2), axis=1) == 1) | (np.count_nonzero(mats.sum(1), axis=1) == 1)
    feats[SUPPORTED_FEATURES.index("correlation"), single] = 1.0
    return mats, feats


def assert_matches_skimage(x: torch.Tensor, levels: int, window: int, stride: int | None, distance: int = 3):
    mats = glcm(x, levels=levels, distance=distance, window=window, stride=stride)
    feats = glcm_features(
        x, levels=levels, distance=distance, window=window, stride=stride, features=SUPPORTED_FEATURES
    )
    q = np.minimum(np.floor(x.numpy() * levels), levels - 1)  # the hard rule, computed independently
    step = window if stride is None else stride
    nh, nw = (x.shape[2] - window) // step + 1, (x.shape[3] - window) // step + 1
    assert feats.shape == (*x.shape[:2], len(SUPPORTED_FEATURES), len(DEFAULT_ANGLES), nh, nw)
    worst = 0.0
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(nh):
                for j in range(nw):
                    win = q[b, c, i * step : i * step + window, j * step : j * step + window]
                    p_ref, f_ref = skimage_window(win, levels, distance, DEFAULT_ANGLES)
                    worst = max(worst, np.abs(mats[b, c, :, i, j].numpy() - p_ref).max())
                    worst = max(worst, np.abs(feats[b, c, :, :, i, j].numpy() - f_ref).max())
    assert worst <= 1e-6, worst


@pytest.mark.parametrize("levels", [8, 16, 32])
def test_hard_matches_skimage_random(levels):
    gen = torch.Generator().manual_seed(levels)
    x = torch.rand(2, 2, 47, 45, generator=gen, dtype=torch.float64)
    x[0, 0, :20, :20] = 0.3  # a flat window: correlation 1, entropy 0
    assert_matches_skimage(x, levels, window=20, stride=None)
    assert_matches_skimage(x[:1, :1], levels, window=15, stride=7)  # overlapping windows


def test_hard_matches_skimage_small_distance_and_window():
    x = torch.rand(1, 1, 13, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert_matches_skimage(x, 4, window=5, stride=3, distance=1)


def load_xray(path) -> torch.Tensor:
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    return torch.from_numpy(img)[None, None]


@pytest.mark.parametrize("levels", [8, 16, 32])
def test_hard_matches_skimage_chest_xray(chest_xray_dir, levels):
    files = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[:1]
    files += sorted((chest_xray_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[:1]
    x = torch.cat([load_xray(f) for f in files])
    assert x.shape[-2:] == (224, 224)
    assert_matches_skimage(x[..., 40:140, 30:150], levels, window=20, stride=None)


def test_offsets_follow_skimage():
    # an image whose value encodes the position: the pair of the top-left pixel reveals the offset
    levels, d = 64, 3
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    q = (rows * 8 + cols).astype(np.uint8)
    for angle in DEFAULT_ANGLES:
        dr, dc = glcm_offset(d, angle)
        g = graycomatrix(q, [d], [np.deg2rad(angle)], levels=levels)[:, :, 0, 0]
        i, j = np.argwhere(g)[0]  # first pair in row-major order of the first pixel
        assert (j // 8 - i // 8, j % 8 - i % 8) == (dr, dc)
    assert glcm_offset(3, 90)[0] > 0  # 90 degrees pairs a pixel with one below it


def test_theta_plus_180_is_transpose():
    x = torch.rand(2, 1, 30, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for soft in (False, True):
        p = glcm(x, levels=8, angles=(0, 45, 90, 135, 180, 225, 270, 315), soft=soft)
        torch.testing.assert_close(p[:, :, 4:], p[:, :, :4].transpose(-1, -2))
        f = glcm_features(x, levels=8, features=SUPPORTED_FEATURES, soft=soft)
        torch.testing.assert_close(f[:, :, :, 4:], f[:, :, :, :4])
    # a 180-degree matrix of the image is the 0-degree matrix of the image flipped left-right
    flipped = torch.flip(x, dims=(-1,))[..., 10:]
    p180 = glcm(x[..., :20], levels=8, angles=(180,), window=20)
    p0 = glcm(flipped, levels=8, angles=(0,), window=20)
    torch.testing.assert_close(p180, p0)


def test_quantize_and_soft_memberships():
    x = torch.tensor([0.0, 0.1, 0.2499, 0.25, 0.6, 0.99, 1.0], dtype=torch.float64)
    q = quantize(x, 4)
    torch.testing.assert_close(q, torch.from_numpy(np.minimum(np.floor(x.numpy() * 4), 3).astype(np.int64)))
    for width in (1.0, 0.5, 0.1):
        m = soft_memberships(x, 4, width)
        torch.testing.assert_close(m.sum(-1), torch.ones_like(x))
        assert (m >= 0).all()
        # equal to the one-hot except within width / 2 levels of an interior edge k / 4
        far = (x * 4 - torch.round(x * 4)).abs() > width / 2 + 1e-9
        far |= (x * 4 < 0.5) | (x * 4 > 3.5)
        torch.testing.assert_close(m[far], torch.nn.functional.one_hot(q, 4).double()[far])
    # width 1 is linear interpolation between the bin centres
    centres = (np.arange(4) + 0.5) / 4
    for v in (0.3, 0.4375, 0.5, 0.8):
        m = soft_memberships(torch.tensor([v], dtype=torch.float64), 4, 1.0)[0].numpy()
        for k in range(4):  # the interpolation weight of centre k, from numpy's linear interpolation
            np.testing.assert_allclose(m[k], np.interp(v, centres, np.eye(4)[k]), atol=1e-12)


def test_soft_tends_to_hard():
    x = torch.rand(1, 2, 40, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    hard = glcm_features(x, levels=16, features=SUPPORTED_FEATURES)
    errors = [
        (glcm_features(x, levels=16, features=SUPPORTED_FEATURES, soft=True, width=w) - hard).abs().max().item()
        for w in (1.0, 0.3, 0.03, 3e-3, 1e-7)
    ]
    assert errors[0] > 1e-2  # soft is not hard at full width ...
    assert all(a >= b for a, b in zip(errors, errors[1:])), errors  # ... and approaches it
    assert errors[-1] < 1e-9, errors


def test_gradcheck():
    gen = torch.Generator().manual_seed(4)
    x = (0.05 + 0.9 * torch.rand(1, 1, 7, 6, generator=gen, dtype=torch.float64)).requires_grad_()

    def fn(inp):
        return glcm_features(inp, levels=4, distance=1, window=5, stride=1, features=SUPPORTED_FEATURES, soft=True)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-7, atol=1e-6)
    assert torch.autograd.gradcheck(lambda inp: glcm(inp, levels=3, distance=2, window=6, soft=True), (x,))


@pytest.mark.parametrize("value", [0.0, 0.5, 0.53, 1.0])
def test_constant_image_finite(value):
    x = torch.full((1, 1, 24, 24), value, dtype=torch.float64, requires_grad=True)
    f = glcm_features(x, levels=8, features=SUPPORTED_FEATURES, soft=True)
    assert torch.isfinite(f).all()
    f.sum().backward()
    assert torch.isfinite(x.grad).all()
    # hard mode on a flat window: correlation 1, like scikit-image
    hard = glcm_features(x.detach(), levels=8, features=SUPPORTED_FEATURES)
    _, ref = skimage_window(quantize(x.detach(), 8)[0, 0, :20, :20].numpy(), 8, 3, DEFAULT_ANGLES)
    np.testing.assert_allclose(hard[0, 0, :, :, 0, 0].numpy(), ref, atol=1e-12)


def test_batch_and_channels_equal_per_image():
    x = torch.rand(3, 2, 33, 41, generator=torch.Generator().manual_seed(5))
    for soft in (False, True):
        together = glcm_features(x, levels=16, features=SUPPORTED_FEATURES, soft=soft, stride=6)
        for b in range(3):
            for c in range(2):
                alone = glcm_features(
                    x[b : b + 1, c : c + 1], levels=16, features=SUPPORTED_FEATURES, soft=soft, stride=6
                )
                torch.testing.assert_close(together[b : b + 1, c : c + 1], alone)


def test_float32_close_to_float64():
    x = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for soft in (False, True):
        f64 = glcm_features(x, features=SUPPORTED_FEATURES, soft=soft)
        f32 = glcm_features(x.float(), features=SUPPORTED_FEATURES, soft=soft)
        assert f32.dtype == torch.float32
        torch.testing.assert_close(f32.double(), f64, rtol=1e-5, atol=1e-5)


def test_float32_close_to_float64_chest_xray(chest_xray_dir):
    # real X-rays have dark, nearly flat windows where correlation's variances are tiny: float32 must stay
    # close to float64 there too (the soft moments are centred per window for that reason)
    files = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[:4]
    files += sorted((chest_xray_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[:4]
    x = torch.cat([load_xray(f) for f in files]).double()
    x[0, 0, :60, :60] = 0.0  # flat windows: black, off a bin centre, white
    x[1, 0, :60, :60] = 0.5
    x[2, 0, :60, :60] = 1.0
    for soft in (False, True):
        for levels in (16, 32):
            f64 = glcm_features(x, levels=levels, features=SUPPORTED_FEATURES, soft=soft)
            f32 = glcm_features(x.float(), levels=levels, features=SUPPORTED_FEATURES, soft=soft)
            torch.testing.assert_close(f32.double(), f64, rtol=0, atol=1e-4)


def test_sot_matrix_layout():
    x = torch.rand(2, 1, 40, 60, generator=torch.Generator().manual_seed(7))
    f = glcm_features(x, levels=8)
    sot = sot_matrix(f)
    assert sot.shape == (2, 1, 2 * 3, 5 * 8)
    # row = window in raster order, column = feature * A + angle
    torch.testing.assert_close(sot[1, 0, 1 * 3 + 2, 3 * 8 + 5], f[1, 0, 3, 5, 1, 2])
    with pytest.raises(ValueError, match="shape"):
        sot_matrix(f[0])


def test_border_tiles_dropped():
    x = torch.rand(1, 1, 45, 59, generator=torch.Generator().manual_seed(8))
    f = glcm_features(x)
    assert f.shape[-2:] == (2, 2)  # 45 // 20 and 59 // 20 full tiles; the rest is ignored
    changed = x.clone()
    changed[..., 40:, :] = 0.0
    changed[..., :, 40:] = 1.0
    torch.testing.assert_close(glcm_features(changed), f)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(9))
    for soft in (False, True):
        cpu = glcm_features(x, features=SUPPORTED_FEATURES, soft=soft)
        gpu = glcm_features(x.cuda(), features=SUPPORTED_FEATURES, soft=soft)
        assert gpu.is_cuda
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"x": torch.rand(1, 20, 20)}, ValueError, "rank 4"),
        ({"x": torch.rand(1, 1, 20, 20) + 1.0}, ValueError, r"\[0, 1\]"),
        ({"x": torch.full((1, 1, 20, 20), float("nan"))}, ValueError, r"\[0, 1\]"),
        ({"x": torch.zeros(1, 1, 20, 20, dtype=torch.long)}, TypeError, "floating point"),
        ({"x": np.zeros((1, 1, 20, 20))}, TypeError, "torch.Tensor"),
        ({"window": 21}, ValueError, "larger than the image"),
        ({"window": 1}, ValueError, "window"),
        ({"levels": 1}, ValueError, "levels"),
        ({"levels": 2.5}, TypeError, "levels"),
        ({"features": ("contrast", "glcm_magic")}, ValueError, "unknown GLCM feature 'glcm_magic'"),
        ({"angles": ("north",)}, TypeError, "angles"),
        ({"angles": (float("nan"),)}, ValueError, "angles"),
        ({"angles": ()}, ValueError, "angles"),
        ({"distance": 0}, ValueError, "distance"),
        ({"distance": 20}, ValueError, "no pixel pair fits"),
        ({"stride": 0}, ValueError, "stride"),
        ({"soft": True, "width": 0.0}, ValueError, "width"),
        ({"soft": True, "width": 1.5}, ValueError, "width"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    kwargs = dict(kwargs)
    x = kwargs.pop("x", torch.rand(1, 1, 20, 20))
    with pytest.raises(error, match=match):
        glcm_features(x, **kwargs)


def assert_tile_path_matches_matrices(x, features, gen, **args):
    """
    glcm_features of ``x`` (the tile path when stride == window) must equal the features of the per-window
    matrices of glcm(), values and (soft) gradients under random weights; returns the tile path's gradient.
    """
    from monai_assim.glcm import glcm_features_from_matrix

    soft = args.get("soft", False)
    a, b = x.clone().requires_grad_(soft), x.clone().requires_grad_(soft)
    fast = glcm_features(a, features=features, **args)
    ref = glcm_features_from_matrix(glcm(b, **args), features).permute(0, 1, 5, 2, 3, 4)  # (B, C, F, A, nH, nW)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    if not soft:
        return None
    weights = torch.randn(fast.shape, generator=gen, dtype=torch.float64)
    (fast * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-8)
    return a.grad


def test_tile_path_equals_matrix_path():
    # stride == window takes the tile path (no matrices for the linear features and correlation); it must
    # equal the features of the per-window matrices of glcm(), values and gradients, hard and soft
    gen = torch.Generator().manual_seed(10)
    x = torch.rand(2, 1, 45, 47, generator=gen, dtype=torch.float64)
    x[0, 0, :20, :20] = 0.53  # a flat tile off a bin centre
    for soft in (False, True):
        assert_tile_path_matches_matrices(x, SUPPORTED_FEATURES, gen, levels=8, soft=soft)


@pytest.mark.parametrize(
    "features",
    [SUPPORTED_FEATURES, ("contrast", "homogeneity", "correlation", "dissimilarity"), ("asm", "entropy")],
    ids=["joint", "histograms", "joint-only"],
)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_tile_path_chunks_equal_matrix_path(monkeypatch, features, soft):
    # the tile path processes chunks of images with chunk-relative keys; with chunks of 2 images, 5 images
    # (the last chunk partial) must give the per-window matrices' values and gradients
    import monai_assim.glcm.tiles as glcm_module  # the chunk sizes of the tile paths

    gen = torch.Generator().manual_seed(13)
    x = torch.rand(5, 1, 24, 26, generator=gen, dtype=torch.float64)
    x[3, 0, :12, :12] = 0.53  # a flat tile
    monkeypatch.setattr(glcm_module, "_TILE_CHUNK_PIXELS", 2 * 24 * 26)
    assert_tile_path_matches_matrices(x, features, gen, levels=8, distance=2, window=12, soft=soft)


@pytest.mark.parametrize(
    "features",
    [SUPPORTED_FEATURES, ("contrast", "homogeneity", "correlation", "dissimilarity"), ("asm", "entropy")],
    ids=["joint", "histograms", "joint-only"],
)
@pytest.mark.parametrize("width", [1.0, 0.05], ids=["soft", "hard-ish"])
def test_tile_backward_equals_autograd(features, width):
    # the tile path's hand-written backward (_SoftTileSums) must equal plain autograd through the per-window
    # matrices of glcm() and glcm_features_from_matrix, with a flat tile and pixels near bin edges
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(2, 2, 29, 33, generator=gen, dtype=torch.float64)
    x[0, 1, :12, :12] = 0.53  # a flat tile off a bin centre
    x[1, 0, -12:, :12] = 0.5  # a flat tile on a bin edge
    edges = torch.randint(1, 8, (2, 2, 29, 33), generator=gen).double() / 8
    near = torch.rand(x.shape, generator=gen) < 0.3
    x = torch.where(near, (edges + 0.002 * (torch.rand(x.shape, generator=gen) - 0.5)).clamp(0, 1), x)
    args = {"levels": 8, "distance": 2, "angles": (0, 45, 90, 135, 180), "window": 12, "width": width, "soft": True}
    grad = assert_tile_path_matches_matrices(x, features, gen, **args)
    assert grad.abs().max() > 0


@pytest.mark.parametrize("features", [SUPPORTED_FEATURES, ("contrast", "correlation")], ids=["joint", "histograms"])
def test_tile_path_gradcheck(features):
    gen = torch.Generator().manual_seed(12)
    x = (0.05 + 0.9 * torch.rand(1, 2, 10, 11, generator=gen, dtype=torch.float64)).requires_grad_()

    def fn(inp):
        return glcm_features(inp, levels=4, distance=1, window=5, features=features, soft=True)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-7, atol=1e-6)
