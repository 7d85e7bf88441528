"""
Deterministic synthetic demo sets in each modality's real folder layout.

Each image is a grey, textured, modality-like background (chest radiograph with two lung fields,
axial head MRI, axial chest CT with lungs, ultrasound sector with speckle) with or without a
lesion-like structure. A lesion is a blob whose boundary radius follows

.. math::

    r(\\theta) = r_0 \\Big(1 + \\sum_{k} a_k \\cos(k \\theta + \\varphi_k)\\Big),

with a soft edge and its own internal texture, added with contrast :math:`c` (bright, or dark for
ultrasound). "smooth" lesions (benign nodules/masses) are near-elliptic with small :math:`a_k`;
"irregular" lesions (tumours, malignant masses, pneumonia) are lobulated/spiculated with larger
:math:`a_k` at higher frequencies. The contrast is drawn per image from :data:`LESION_CONTRAST`, strong
enough that the bundles' demo run (a network trained from scratch for a few epochs on about a hundred
images) learns the task; for chest CT and breast ultrasound the negative group contains
benign (smooth) lesions too, so the shape, not the presence of a lesion, decides.

Every file's content depends only on ``(seed, modality, folder, class, index)``, so the same seed
gives byte-identical files (PNG and JPEG encoding are deterministic for a given Pillow).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from monai_assim.data.layouts import LAYOUTS, get_layout

__all__ = ["LESION_CONTRAST", "SYNTHETIC_LESIONS", "make_synthetic_dataset", "synthetic_image"]

#: how each modality's images are drawn: background kind, lesion polarity, lesion size factor and
#: the PIL mode written.
_DRAWING = {
    "chest_xray": ("xray", 1.0, 1.8, "RGB"),
    "brain_mri": ("mri", 1.0, 1.5, "L"),
    "chest_ct": ("ct", 1.0, 1.0, "L"),
    "breast_ultrasound": ("us", -1.0, 1.3, "RGB"),
}

#: modality -> (background kind, lesion polarity, lesion size factor, PIL mode written,
#: {class folder: lesion kind}); the class folders and their lesion kinds come from
#: :data:`monai_assim.data.layouts.LAYOUTS`.
SYNTHETIC_LESIONS = {m: (*drawing, dict(LAYOUTS[m].lesions)) for m, drawing in _DRAWING.items()}
#: range of the lesion contrast :math:`c` per lesion kind (intensity on [0, 1] added at the lesion's centre)
LESION_CONTRAST = {"irregular": (0.25, 0.75), "smooth": (0.15, 0.5)}


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """White noise low-pass filtered by a Gaussian of ``sigma`` pixels (via FFT), unit std."""
    noise = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    transfer = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    out = np.fft.irfft2(np.fft.rfft2(noise) * transfer, s=(size, size))
    return out / (out.std() + 1e-12)


def _soft_ellipse(yy, xx, cy, cx, ry, rx, edge):
    rho = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return 1.0 / (1.0 + np.exp(np.clip((rho - 1.0) / edge, -50, 50)))


def _background(kind: str, rng: np.random.Generator, size: int, yy, xx):
    """Background image on about [0, 1] and the region (soft mask) where lesions may lie."""
    tex = _smooth_noise(rng, size, size / 24.0)
    fine = _smooth_noise(rng, size, 0.8)
    if kind == "xray":
        body = 0.55 + 0.12 * yy + 0.04 * tex
        lungs = _soft_ellipse(yy, xx, 0.0, -0.42, 0.62, 0.3, 0.08) + _soft_ellipse(yy, xx, 0.0, 0.42, 0.62, 0.3, 0.08)
        ribs = 0.04 * np.sin(np.pi * 9 * (yy + 0.1 * xx**2))
        img = body - lungs * (0.28 - ribs) + 0.02 * fine
        return img, lungs
    if kind == "mri":
        head = _soft_ellipse(yy, xx, 0.0, 0.0, 0.88, 0.72, 0.03)
        brain = _soft_ellipse(yy, xx, 0.0, 0.0, 0.78, 0.62, 0.03)
        ventricles = _soft_ellipse(yy, xx, -0.05, -0.12, 0.22, 0.07, 0.2) + _soft_ellipse(
            yy, xx, -0.05, 0.12, 0.22, 0.07, 0.2
        )
        img = 0.75 * (head - brain) + brain * (0.42 + 0.05 * tex - 0.2 * ventricles) + 0.02 * fine
        return img, brain * (1.0 - ventricles)
    if kind == "ct":
        body = _soft_ellipse(yy, xx, 0.05, 0.0, 0.7, 0.88, 0.02)
        lungs = _soft_ellipse(yy, xx, 0.0, -0.4, 0.5, 0.3, 0.05) + _soft_ellipse(yy, xx, 0.0, 0.4, 0.5, 0.3, 0.05)
        vessels = np.clip(_smooth_noise(rng, size, size / 64.0) - 1.5, 0, None)
        img = body * (0.5 + 0.03 * tex) - lungs * (0.42 - 0.15 * vessels) + 0.02 * fine
        return img, lungs
    if kind == "us":
        theta = np.arctan2(xx, yy + 1.1)
        radius = np.sqrt(xx**2 + (yy + 1.1) ** 2)
        sector = (np.abs(theta) < 0.6) & (radius > 0.35) & (radius < 2.0)
        layers = 0.1 * np.sin(np.pi * 4 * yy + 0.8 * tex)
        speckle = rng.rayleigh(1.0, (size, size)) / np.sqrt(np.pi / 2.0)  # mean 1
        img = sector * (0.45 + layers + 0.04 * tex) * (0.75 + 0.25 * speckle)
        return img, sector * (yy > -0.3) * (np.abs(xx) < 0.7)
    raise ValueError(f"unknown background kind {kind!r}.")


def _lesion(kind: str, scale: float, rng: np.random.Generator, size: int, yy, xx, region):
    """Soft lesion profile on [0, 1] centred in ``region``, and its internal texture."""
    candidates = np.argwhere(region > 0.9)
    if len(candidates) == 0:  # tiny images: fall back to the region's most central pixels
        candidates = np.argwhere(region >= region.max())
    cy_i, cx_i = candidates[rng.integers(len(candidates))]
    cy, cx = -1.0 + 2.0 * cy_i / (size - 1), -1.0 + 2.0 * cx_i / (size - 1)
    theta = np.arctan2(yy - cy, xx - cx)
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    if kind == "smooth":
        r0, harmonics, amp, edge = scale * rng.uniform(0.06, 0.12), (2,), (0.05, 0.15), 0.08
    elif kind == "irregular":
        r0, harmonics, amp, edge = scale * rng.uniform(0.11, 0.2), (3, 5, 7), (0.05, 0.15), 0.15
    else:
        raise ValueError(f"unknown lesion kind {kind!r}.")
    radius = np.full_like(theta, r0)
    for k in harmonics:
        radius = radius + r0 * rng.uniform(*amp) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    profile = 1.0 / (1.0 + np.exp(np.clip((dist / radius - 1.0) / edge, -50, 50)))
    sigma = 0.02 * size if kind == "irregular" else 4.0
    texture = 1.0 + (0.3 if kind == "irregular" else 0.1) * _smooth_noise(rng, size, sigma)
    return profile, texture


def synthetic_image(
    modality: str, lesion: str | None, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """
    One synthetic ``(size, size)`` uint8 image of ``modality`` and its uint8 lesion mask (0/255).

    Args:
        modality: one of the four modalities.
        lesion: ``None``, ``"smooth"`` or ``"irregular"``.
        size: image side in pixels.
        rng: the generator that draws everything about this image.
    """
    kind, polarity, scale, _, _ = SYNTHETIC_LESIONS[modality]
    yy, xx = np.meshgrid(np.linspace(-1.0, 1.0, size), np.linspace(-1.0, 1.0, size), indexing="ij")
    img, region = _background(kind, rng, size, yy, xx)
    mask = np.zeros((size, size), dtype=np.uint8)
    if lesion is not None:
        profile, texture = _lesion(lesion, scale, rng, size, yy, xx, region)
        contrast = rng.uniform(*LESION_CONTRAST[lesion])
        img = img + polarity * contrast * profile * texture
        mask = np.where(profile > 0.5, 255, 0).astype(np.uint8)
    img = img + 0.015 * rng.standard_normal((size, size))
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8), mask


def make_synthetic_dataset(
    root: str | os.PathLike, modality: str, n_per_class: int = 16, size: int = 64, seed: int = 0
) -> Path:
    """
    Write a deterministic synthetic demo set in ``modality``'s real layout under ``root``.

    Every class folder of every (non-optional) split folder of the layout gets ``n_per_class``
    images, named ``"<class folder> (<i>)<suffix>"`` with the file type of the public set
    (``.jpeg`` chest X-ray stored as RGB grey, ``.jpg`` brain MRI and chest CT, ``.png`` breast
    ultrasound stored as RGB grey); breast ultrasound images get a BUSI-style mask
    ``"<class> (<i>)_mask.png"`` beside them (all zeros for ``normal``), which discovery must ignore.
    Existing files of the same names are overwritten; other files are left alone.

    Args:
        root: folder to write into (created if needed).
        modality: one of :data:`monai_assim.data.layouts.MODALITIES`.
        n_per_class: images per class folder and split folder.
        size: image side in pixels (at least 16).
        seed: the same seed gives byte-identical files.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    from PIL import Image

    layout = get_layout(modality)
    if not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}.")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    _, _, _, mode, lesions = SYNTHETIC_LESIONS[modality]
    root = Path(root)
    m_idx = list(SYNTHETIC_LESIONS).index(modality)
    folders = [f for fs in layout.pools.values() for f in fs if f not in layout.optional_folders]
    for f_idx, folder in enumerate(folders):
        for c_idx, name in enumerate(layout.classes):
            class_dir = root / folder / name if folder else root / name
            class_dir.mkdir(parents=True, exist_ok=True)
            for i in range(1, int(n_per_class) + 1):
                rng = np.random.default_rng([int(seed), m_idx, f_idx, c_idx, i])
                img, mask = synthetic_image(modality, lesions[name], int(size), rng)
                pil = Image.fromarray(img, mode="L").convert(mode)
                stem = f"{name} ({i})"
                if layout.suffix in (".jpg", ".jpeg"):
                    pil.save(class_dir / f"{stem}{layout.suffix}", format="JPEG", quality=95)
                else:
                    pil.save(class_dir / f"{stem}{layout.suffix}", format="PNG")
                if layout.mask_marker is not None:
                    Image.fromarray(mask, mode="L").save(class_dir / f"{stem}{layout.mask_marker}.png", format="PNG")
    return root
