"""A folder of pictures in several file formats, and a parser of the bundle configs over it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

BUNDLE = REPO / "bundles" / "chest_xray"

SHAPE = (20, 30)  # (H, W) of every test picture: non-square, so a transposed image would not pass


def write_mixed_folder(folder: Path) -> dict[str, np.ndarray]:
    """
    Write one picture per format into ``folder`` and return ``{file name: expected (H, W) grey on [0, 1]}``
    (what the pipeline must give at the native size).
    """
    itk = pytest.importorskip("itk")
    nib = pytest.importorskip("nibabel")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    pic = rng.integers(0, 4096, size=SHAPE).astype(np.uint16)
    pic[0, 0], pic[-1, -1] = 0, 4095
    pic8 = (pic // 16).astype(np.uint8)
    expected = {}

    Image.fromarray(pic8).save(folder / "grey8.png")
    expected["grey8.png"] = pic8 / 255.0

    pic16 = (pic.astype(np.uint32) * 16).astype(np.uint16)  # uses the full 16-bit range
    Image.fromarray(pic16).save(folder / "grey16.png")
    with Image.open(folder / "grey16.png") as im:
        assert np.asarray(im).dtype.itemsize == 2 or im.mode.startswith("I"), im.mode  # really 16-bit on disk
    expected["grey16.png"] = (pic16 - pic16.min()) / float(pic16.max() - pic16.min())

    rgb = np.stack([pic8, np.roll(pic8, 1, axis=1), 255 - pic8], axis=-1)
    Image.fromarray(rgb).save(folder / "colour.jpg", quality=95)
    with Image.open(folder / "colour.jpg") as im:  # JPEG is lossy: the reference is PIL's decode of the file
        decoded = np.asarray(im.convert("RGB"), dtype=np.float64)
    expected["colour.jpg"] = decoded @ np.array([0.299, 0.587, 0.114]) / 255.0

    itk.imwrite(itk.image_from_array(pic), str(folder / "slice.dcm"))
    expected["slice.dcm"] = pic / 4095.0

    nib.save(nib.Nifti1Image(pic.T.astype(np.int16), np.eye(4)), str(folder / "slice.nii.gz"))  # NIfTI is (x, y)
    expected["slice.nii.gz"] = pic / 4095.0
    return expected


def parse(config: str, **overrides) -> ConfigParser:
    """
    ``bundles/chest_xray/<config>`` with ``overrides`` applied as command-line ``--key value`` would be. Unless
    ``output_dir`` is given it is a fresh folder with no run in it: the bundle's default output folder holds the
    demo run once README command (1) has run, and evaluate.json / inference.json take their settings from it.
    """
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / config))
    overrides.setdefault("output_dir", str(Path(tempfile.mkdtemp(prefix="monai_assim_no_run_")) / "run"))
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser
