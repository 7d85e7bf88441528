"""
The bundles' preprocessing, spelled out in JSON as a ``Compose`` of transform classes: the same
tensors as :func:`monai_assim.data.image_transforms`, edits in the JSON (or as command-line overrides) take effect, the image size is set once, and the values ``"auto"`` became are logged and
recorded in the run summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DIR
from helpers.mixed_formats import parse, write_mixed_folder
from monai.transforms import Compose, Resize

from monai_assim.bundle import run_setting
from monai_assim.data import image_transforms, make_synthetic_dataset
from monai_assim.transforms import SqueezeTo2Dd, ToGreyUnitd

CHEST_CT_DIR = SHARED_DIR / "data" / "chest_ct"
#: (config, id of its preprocessing, augmentation in it)
PIPELINES = [
    ("train.json", "train#preprocessing", True),
    ("train.json", "validate#preprocessing", False),
    ("evaluate.json", "preprocessing", False),
    ("inference.json", "preprocessing", False),
]


def json_pipeline(config: str, pipeline_id: str, image_size=32, **overrides) -> Compose:
    """A bundle's preprocessing as the config builds it, for ``image_size`` (train: the resolved setting)."""
    size = {"settings": {"image_size": image_size}} if config == "train.json" else {"image_size": image_size}
    return parse(config, **size, **overrides).get_parsed_content(pipeline_id)


def _chest_ct_files(n_per_class: int = 2) -> list[Path]:
    if not CHEST_CT_DIR.is_dir():
        return []
    folders = sorted(p for p in CHEST_CT_DIR.iterdir() if p.is_dir())
    return [f for d in folders for f in sorted(d.glob("*.jpg"))[:n_per_class]]


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory) -> list[Path]:
    """A mixed-format folder, a few synthetic modality images, and real chest CT slices where present."""
    root = tmp_path_factory.mktemp("samples")
    write_mixed_folder(root / "mixed")
    rgba = np.random.default_rng(1).integers(0, 256, (24, 18, 4)).astype(np.uint8)
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(rgba, "RGBA").save(root / "mixed" / "rgba.png")
    Image.fromarray(rgba[..., :2], "LA").save(root / "mixed" / "grey_alpha.png")
    synthetic = make_synthetic_dataset(root / "us", "breast_ultrasound", n_per_class=1, size=40, seed=0)
    files = sorted((root / "mixed").iterdir()) + sorted(p for p in synthetic.rglob("*.png") if "_mask" not in p.name)
    return files + _chest_ct_files()


@pytest.mark.parametrize("config, pipeline_id, augment", PIPELINES)
def test_json_pipeline_is_image_transforms(config, pipeline_id, augment, sample_files):
    """Each config's Compose gives exactly image_transforms' tensors (augmentation: same random state)."""
    from_json = json_pipeline(config, pipeline_id, image_size=32)
    from_python = image_transforms(32, keys=["image"], augment=augment)
    assert isinstance(from_json, Compose)
    assert [type(t) for t in from_json.transforms] == [type(t) for t in from_python.transforms]
    assert [type(t) for t in from_json.transforms][2:5:2] == [SqueezeTo2Dd, ToGreyUnitd]  # no Lambdad
    from_json.set_random_state(seed=7)
    from_python.set_random_state(seed=7)
    changed = 0
    for f in sample_files:
        a = from_json({"image": str(f), "label": 1})
        b = from_python({"image": str(f), "label": 1})
        assert a["label"] == 1
        assert tuple(a["image"].shape) == (1, 32, 32) and a["image"].dtype == torch.float32, f
        assert torch.equal(a["image"].as_tensor(), b["image"].as_tensor()), f
        changed += not torch.equal(a["image"].as_tensor(), image_transforms(32)({"image": str(f)})["image"].as_tensor())
    assert (changed > 0) == augment  # the training pipeline augments, the others do not


def test_real_chest_ct_json_pipeline(sample_files):
    """On real chest CT slices (skipped without ../shared), the evaluate pipeline at 224 equals image_transforms."""
    files = _chest_ct_files(3)
    if not files:
        pytest.skip(f"real chest CT slices not found at {CHEST_CT_DIR}")
    from_json = json_pipeline("evaluate.json", "preprocessing", image_size=224)
    for f in files:
        a, b = from_json({"image": str(f)})["image"], image_transforms(224)({"image": str(f)})["image"]
        assert tuple(a.shape) == (1, 224, 224) and torch.equal(a.as_tensor(), b.as_tensor()), f
        assert 0.0 <= float(a.min()) < float(a.max()) <= 1.0


@pytest.fixture
def tiny_train(tmp_path):
    """train.json overrides for a tiny data set of 48 px images (so that resizing to 20 px matters)."""
    data = make_synthetic_dataset(tmp_path / "data", "chest_xray", n_per_class=5, size=48, seed=2)
    return {
        "dataset_dir": str(data),
        "output_dir": str(tmp_path / "run"),
        "image_size": 20,
        "batch_size": 4,
        "backbone": "mobilenet_v2",
        "pretrained": "none",
        "num_workers": 0,
    }


def _first_validation_batch(**overrides) -> torch.Tensor:
    parser = parse("train.json", **overrides)
    return next(iter(parser.get_parsed_content("validate#dataloader")))["image"]


def test_editing_a_transform_takes_effect(tiny_train):
    """
    Command-line style overrides of train.json change what the validation DataLoader gives: the Resized
    interpolation, its size, the size set once at the top, and an added transform.
    """
    default = _first_validation_batch(**tiny_train)
    n = len(default)
    assert n >= 2 and tuple(default.shape) == (n, 1, 20, 20)

    # --validate#preprocessing#transforms#5#mode nearest: the images are resized by nearest neighbour
    nearest = _first_validation_batch(**tiny_train, **{"validate#preprocessing#transforms#5#mode": "nearest"})
    assert tuple(nearest.shape) == tuple(default.shape) and not torch.equal(nearest, default)
    grey = Compose(image_transforms(20).transforms[:5])  # loaded, 2D, grey, before resizing
    for batch, mode in ((nearest, "nearest"), (default, "bilinear")):
        resize = Resize((20, 20), mode=mode, anti_aliasing=True)
        for image, f in zip(batch, batch.meta["filename_or_obj"]):
            assert torch.allclose(image, resize(grey({"image": f})["image"]), atol=1e-6), (mode, f)

    # the image size, given once at the top (--image_size), sizes the Resized step
    assert tuple(_first_validation_batch(**{**tiny_train, "image_size": 24}).shape) == (n, 1, 24, 24)
    # --validate#preprocessing#transforms#5#spatial_size [16, 12]
    resized = _first_validation_batch(**tiny_train, **{"validate#preprocessing#transforms#5#spatial_size": [16, 12]})
    assert tuple(resized.shape) == (n, 1, 16, 12)

    # a transform added to the list (before EnsureTyped): a left-right flip
    transforms = parse("train.json").get("validate#preprocessing#transforms")
    flip = {"_target_": "Flipd", "keys": "image", "spatial_axis": 1}
    flipped = _first_validation_batch(
        **tiny_train, **{"validate#preprocessing#transforms": [*transforms[:6], flip, *transforms[6:]]}
    )
    assert torch.allclose(flipped, torch.flip(default, dims=[3]))


def test_auto_settings_logged_and_recorded(tiny_train, caplog):
    """RunSetup logs every resolved setting, marks those that were 'auto', and writes them to run_summary.json."""
    parser = parse("train.json", **{**tiny_train, "image_size": "auto", "batch_size": "auto"})
    parser.update({"real_data_defaults#image_size": 28})
    with caplog.at_level(logging.INFO, logger="monai_assim.bundle"):
        setup = parser.get_parsed_content("run_setup")
    assert setup.settings["image_size"] == 28 and setup.settings["batch_size"] == 32  # real_data_defaults
    block = "\n".join(r.getMessage() for r in caplog.records if r.getMessage().startswith("run settings"))
    lines = {line.split()[0]: line for line in block.splitlines()[1:]}
    assert set(lines) == set(setup.settings)
    for key, value in setup.settings.items():
        assert repr(value) in lines[key], lines[key]
    auto = {k for k, line in lines.items() if "'auto'" in line}
    assert {"image_size", "batch_size", "epochs", "learning_rate", "patience"} <= auto
    assert not auto & {"backbone", "pretrained", "num_workers"}  # given explicitly
    assert "FIXED_DEFAULTS" in lines["alpha"] and "real_data_defaults" in lines["epochs"]
    assert "FIXED_DEFAULTS" in lines["variant"] and setup.settings["variant"] == "assimilated"  # "auto" in train.json
    assert tuple(parser.get_parsed_content("spatial_size")) == (28, 28)

    setup.start()  # builds the split lists and writes the summary
    summary = json.loads((Path(tiny_train["output_dir"]) / "run_summary.json").read_text())
    assert summary["settings"] == json.loads(json.dumps(setup.settings))
    assert summary["settings"]["image_size"] == 28 and summary["settings"]["batch_size"] == 32


def test_run_setting_auto_logged_for_evaluation(tmp_path, caplog):
    """evaluate/inference: 'auto' image_size / mean / std come from the run summary, each value logged."""
    (tmp_path / "run_summary.json").write_text(json.dumps({"settings": {"image_size": 40, "mean": 0.5, "std": None}}))
    with caplog.at_level(logging.INFO, logger="monai_assim.bundle"):
        for config in ("evaluate.json", "inference.json"):
            parser = parse(config, output_dir=str(tmp_path))
            assert tuple(parser.get_parsed_content("spatial_size")) == (40, 40)
        assert run_setting("auto", tmp_path, "mean") == 0.5 and run_setting(0.5, tmp_path, "mean") == 0.5
        with pytest.raises(ValueError, match=r"--mean 0.25 conflicts with the run's mean 0.5"):
            run_setting(0.25, tmp_path, "mean")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("image_size = 40" in m and "'auto'" in m and "run_summary.json" in m for m in messages) == 2
    assert sum("mean = 0.5" in m for m in messages) == 1  # an explicit value is not announced as 'auto'
    # an explicit --image_size needs no run summary
    parse("evaluate.json", output_dir=str(tmp_path / "none"), image_size=16).get_parsed_content("spatial_size")
