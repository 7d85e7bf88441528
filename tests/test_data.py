"""Data discovery, validation, balancing, splits, synthetic sets and the image-loading pipeline."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_assim.data import (
    build_datalists,
    discover_images,
    image_transforms,
    make_synthetic_dataset,
)
from monai_assim.errors import UserInputError

# The class groupings of docs/data.md (written out here, not read from the layout table, so a
# wrong table fails): folder -> label, and the split folders of each public set.
GROUPS = {
    "chest_xray": {"NORMAL": 0, "PNEUMONIA": 1},
    "brain_mri": {"notumor": 0, "glioma": 1, "meningioma": 1, "pituitary": 1},
    "chest_ct": {"Normal cases": 0, "Bengin cases": 0, "Malignant cases": 1},
    "breast_ultrasound": {"normal": 0, "benign": 0, "malignant": 1},
}
SPLIT_FOLDERS = {
    "chest_xray": {"train": "train", "test": "test"},
    "brain_mri": {"train": "Training", "test": "Testing"},
    "chest_ct": {"train": ""},
    "breast_ultrasound": {"train": ""},
}
SUFFIX = {"chest_xray": ".jpeg", "brain_mri": ".jpg", "chest_ct": ".jpg", "breast_ultrasound": ".png"}
N = 10  # images per class folder in the synthetic sets


def _re(path):
    return re.escape(str(path))


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    for modality in GROUPS:
        make_synthetic_dataset(root / modality, modality, n_per_class=N, size=32, seed=0)
    return root


def _files_on_disk(root, modality, folder):
    """label -> image files under root/folder, by glob, masks excluded (the independent oracle)."""
    out = {0: set(), 1: set()}
    for name, label in GROUPS[modality].items():
        for p in (root / folder / name).glob(f"*{SUFFIX[modality]}"):
            if "_mask" not in p.name:
                out[label].add(str(p.resolve()))
    return out


@pytest.mark.parametrize("modality", list(GROUPS))
def test_synthetic_discovered_grouped_balanced_split(synthetic_root, modality, tmp_path):
    root = synthetic_root / modality
    lists = build_datalists(root, modality, output_dir=tmp_path, seed=0, val_fraction=0.2, test_fraction=0.2)
    assert set(lists) == {"train", "validation", "test"}
    paths = {s: [d["image"] for d in lists[s]] for s in lists}

    # grouping: every entry's label is its class folder's group
    for split, entries in lists.items():
        assert entries, split
        for d in entries:
            assert set(d) == {"image", "label"} and isinstance(d["label"], int)
            assert GROUPS[modality][Path(d["image"]).parent.name] == d["label"]
            assert "_mask" not in Path(d["image"]).name

    # no overlap, and stratified: each split has as many images of label 0 as of label 1
    all_paths = [p for s in paths.values() for p in s]
    assert len(all_paths) == len(set(all_paths))
    for split, entries in lists.items():
        labels = [d["label"] for d in entries]
        assert labels.count(0) == labels.count(1), (split, labels)

    # balanced by undersampling within each source pool; own test split used where it exists
    folders = SPLIT_FOLDERS[modality]
    train_pool = _files_on_disk(root, modality, folders["train"])
    n_min = min(len(v) for v in train_pool.values())
    used = {k: {d["image"] for s in ("train", "validation") for d in lists[s] if d["label"] == k} for k in (0, 1)}
    if "test" in folders:
        test_pool = _files_on_disk(root, modality, folders["test"])
        assert {d["image"] for d in lists["test"]} <= test_pool[0] | test_pool[1]
        assert len(lists["test"]) == 2 * min(len(v) for v in test_pool.values())
    else:
        for k in (0, 1):
            used[k] |= {d["image"] for d in lists["test"] if d["label"] == k}
    for k in (0, 1):
        assert used[k] <= train_pool[k] and len(used[k]) == n_min
    n_val = round(n_min * 0.2)
    assert len(lists["validation"]) == 2 * n_val

    # the file lists are recorded and agree with what was returned
    doc = json.loads((tmp_path / "splits.json").read_text())
    assert doc["modality"] == modality and doc["seed"] == 0
    for split in lists:
        assert [(d["image"], d["label"]) for d in doc[split]] == [(d["image"], d["label"]) for d in lists[split]]
        rows = (tmp_path / f"{split}.csv").read_text().splitlines()
        assert rows[0] == "image,label,source_class" and len(rows) == len(lists[split]) + 1


@pytest.mark.parametrize("modality", list(GROUPS))
def test_splits_seeded(synthetic_root, modality, tmp_path):
    root = synthetic_root / modality
    a = build_datalists(root, modality, output_dir=tmp_path / "a", seed=3, check_images=False)
    b = build_datalists(root, modality, output_dir=tmp_path / "b", seed=3, check_images=False)
    c = build_datalists(root, modality, seed=4, check_images=False)
    assert a == b
    assert (tmp_path / "a" / "splits.json").read_bytes() == (tmp_path / "b" / "splits.json").read_bytes()
    assert a["train"] != c["train"]


def test_max_per_class_and_no_balance(synthetic_root):
    root = synthetic_root / "brain_mri"
    capped = build_datalists(root, "brain_mri", max_per_class=3, check_images=False)
    for split, entries in capped.items():
        labels = [d["label"] for d in entries]
        assert labels.count(0) <= 3 and labels.count(1) <= 3, split
    full = build_datalists(root, "brain_mri", check_images=False)
    per_split = build_datalists(root, "brain_mri", max_per_class={"train": 2, "test": 1}, check_images=False)
    for split, cap in (("train", 2), ("test", 1)):
        labels = [d["label"] for d in per_split[split]]
        assert (labels.count(0), labels.count(1)) == (cap, cap), split
        assert {d["image"] for d in per_split[split]} <= {d["image"] for d in full[split]}
    assert per_split["validation"] == full["validation"]  # not named: not capped
    with pytest.raises(ValueError, match="unknown splits"):
        build_datalists(root, "brain_mri", max_per_class={"training": 2}, check_images=False)
    unbalanced = build_datalists(root, "brain_mri", balance=False, check_images=False)
    test_labels = [d["label"] for d in unbalanced["test"]]
    assert (test_labels.count(0), test_labels.count(1)) == (N, 3 * N)  # notumor vs three tumour classes


def test_masks_written_and_ignored(synthetic_root):
    root = synthetic_root / "breast_ultrasound"
    for name in ("benign", "malignant", "normal"):
        images = sorted(p for p in (root / name).glob("*.png") if "_mask" not in p.name)
        masks = sorted((root / name).glob("*_mask.png"))
        assert len(images) == len(masks) == N
        any_lesion = max(np.asarray(Image.open(m)).max() for m in masks)
        assert any_lesion == (0 if name == "normal" else 255)
    shutil.copy(root / "benign" / "benign (1)_mask.png", root / "benign" / "benign (1)_mask_1.png")  # multifocal
    found = discover_images(root, "breast_ultrasound")
    (root / "benign" / "benign (1)_mask_1.png").unlink()
    assert all(len(v) == N and all("_mask" not in p.name for p in v) for v in found["train"].values())


def test_synthetic_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", "chest_ct", n_per_class=3, size=24, seed=1)
    b = make_synthetic_dataset(tmp_path / "b", "chest_ct", n_per_class=3, size=24, seed=1)
    c = make_synthetic_dataset(tmp_path / "c", "chest_ct", n_per_class=3, size=24, seed=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 9 and files == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_real_chest_xray_counts_and_balance(chest_xray_dir, tmp_path):
    found = discover_images(chest_xray_dir, "chest_xray", check_images=False)
    counts = {pool: {c: len(v) for c, v in found[pool].items()} for pool in found}
    assert counts == {"train": {"NORMAL": 1341, "PNEUMONIA": 3875}, "test": {"NORMAL": 234, "PNEUMONIA": 390}}
    lists = build_datalists(chest_xray_dir, "chest_xray", output_dir=tmp_path, seed=0, val_fraction=0.1)
    n = {s: [sum(d["label"] == k for d in lists[s]) for k in (0, 1)] for s in lists}
    assert n["test"] == [234, 234]
    assert n["validation"] == [134, 134]
    assert n["train"] == [1341 - 134, 1341 - 134]
    assert all(Path(d["image"]).parent.parent.name == "test" for d in lists["test"])
    assert all(Path(d["image"]).parent.parent.name == "train" for s in ("train", "validation") for d in lists[s])


def test_real_chest_xray_loads_right_way_up(chest_xray_dir):
    files = sorted((chest_xray_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[:3]
    xform = image_transforms(224)
    for f in files:
        rgb = np.asarray(Image.open(f).convert("RGB"), dtype=np.float64)
        expected = (rgb @ np.array([0.299, 0.587, 0.114])) / 255.0  # PIL's own decode, luma
        img = xform({"image": str(f), "label": 1})["image"]
        assert tuple(img.shape) == (1,) + expected.shape and str(img.dtype) == "torch.float32"
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        got = img[0].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert np.abs(got - expected.T).max() > 0.1  # the transposed image would not pass
    small = image_transforms(64)({"image": str(files[0])})["image"]
    assert tuple(small.shape) == (1, 64, 64) and 0.0 <= float(small.min()) <= float(small.max()) <= 1.0


def test_formats_load_right_way_up(tmp_path):
    """PNG (grey and RGB), 2D DICOM and NIfTI of one non-square picture give the same (1, H, W)."""
    itk = pytest.importorskip("itk")
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    pic = rng.integers(0, 4096, size=(20, 30)).astype(np.uint16)
    pic[0, 0], pic[-1, -1] = 0, 4095
    itk.imwrite(itk.image_from_array(pic), str(tmp_path / "x.dcm"))
    nib.save(nib.Nifti1Image(pic.T.astype(np.int16), np.eye(4)), str(tmp_path / "x.nii.gz"))  # NIfTI is (x, y)
    pic8 = (pic // 16).astype(np.uint8)
    Image.fromarray(pic8).save(tmp_path / "x.png")
    Image.fromarray(pic8).convert("RGB").save(tmp_path / "rgb.png")
    xform = image_transforms((20, 30))
    for name, expected in (
        ("x.dcm", pic / 4095.0),
        ("x.nii.gz", pic / 4095.0),
        ("x.png", pic8 / 255.0),
        ("rgb.png", pic8 / 255.0),
    ):
        img = xform({"image": str(tmp_path / name)})["image"]
        assert tuple(img.shape) == (1, 20, 30), name
        np.testing.assert_allclose(img[0].numpy(), expected, atol=1e-5, err_msg=name)


def test_augment_keeps_shape_and_range(synthetic_root):
    f = next((synthetic_root / "breast_ultrasound" / "malignant").glob("* (1).png"))
    plain = image_transforms(24)({"image": str(f)})["image"]
    xform = image_transforms(24, augment=True)
    xform.set_random_state(0)
    changed = 0
    for _ in range(8):
        img = xform({"image": str(f)})["image"]
        assert tuple(img.shape) == (1, 24, 24) and 0.0 <= float(img.min()) <= float(img.max()) <= 1.0
        diff = float((img - plain).abs().mean())
        changed += diff > 1e-4
        assert diff < 0.1, diff  # mild: a small rotation / zoom of the same image
    # each of rotation and zoom applies with probability 0.5: most draws change the image, not all
    assert 2 <= changed < 8, changed


# ---- bad data: each case raises a ValueError naming the path and what was expected ----------------


@pytest.fixture
def small_set(tmp_path):
    def make(modality):
        return make_synthetic_dataset(tmp_path / modality, modality, n_per_class=4, size=16, seed=0)

    return make


def test_bad_missing_dataset_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=rf"{_re(missing)}.*does not exist.*expected.*NORMAL,PNEUMONIA"):
        build_datalists(missing, "chest_xray")


def test_bad_missing_split_folder(small_set):
    root = small_set("brain_mri")
    shutil.rmtree(root / "Testing")
    with pytest.raises(ValueError, match=rf"missing split folder {_re(root / 'Testing')}.*expected.*Testing/"):
        build_datalists(root, "brain_mri")


def test_bad_missing_class_folder(small_set):
    root = small_set("chest_xray")
    shutil.rmtree(root / "train" / "PNEUMONIA")
    with pytest.raises(ValueError, match=rf"missing class folder {_re(root / 'train' / 'PNEUMONIA')}.*expected"):
        build_datalists(root, "chest_xray")


def test_bad_empty_class(small_set):
    root = small_set("chest_ct")
    empty = root / "Malignant cases"
    shutil.rmtree(empty)
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=rf"{_re(empty)} contains no images; expected"):
        build_datalists(root, "chest_ct")


def test_bad_corrupt_image(small_set):
    root = small_set("chest_xray")
    victim = sorted((root / "test" / "NORMAL").glob("*.jpeg"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncated JPEG: header fine, data cut short
    with pytest.raises(ValueError, match=rf"corrupt or unreadable image: {_re(victim)}.*expected a decodable"):
        build_datalists(root, "chest_xray")
    junk = root / "train" / "NORMAL" / "junk.png"
    junk.write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match=rf"corrupt or unreadable image: {_re(junk)}"):
        discover_images(root, "chest_xray")
    build_datalists(root, "chest_xray", check_images=False)  # the check is what catches them


def test_bad_mask_only_folder(small_set):
    root = small_set("breast_ultrasound")
    for p in (root / "malignant").glob("*.png"):
        if "_mask" not in p.name:
            p.unlink()
    match = rf"{_re(root / 'malignant')} holds only segmentation masks.*expected .png images"
    with pytest.raises(ValueError, match=match):
        build_datalists(root, "breast_ultrasound")


def test_bad_arguments(small_set):
    root = small_set("breast_ultrasound")
    with pytest.raises(ValueError, match="unknown modality 'xray'"):
        build_datalists(root, "xray")
    with pytest.raises(ValueError, match="val_fraction"):
        build_datalists(root, "breast_ultrasound", val_fraction=1.5)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction"):
        build_datalists(root, "breast_ultrasound", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="max_per_class"):
        build_datalists(root, "breast_ultrasound", max_per_class=0)
    with pytest.raises(ValueError, match="image_size"):
        image_transforms(image_size=(0, 4))


def test_one_image_rule_for_training_and_inference(tmp_path):
    """Hidden files and folders (.ipynb_checkpoints/, macOS ._*) and masks are skipped by training's
    discovery and by inference's folder search alike."""
    from monai_assim.bundle import list_images
    from monai_assim.data import is_image_file

    root = make_synthetic_dataset(tmp_path / "ct", "chest_ct", n_per_class=2, size=24, seed=0)
    real = sorted(p for p in root.rglob("*.jpg"))
    for p in real[:2]:  # what a real download holds beside the images
        hidden_dir = p.parent / ".ipynb_checkpoints"
        hidden_dir.mkdir(exist_ok=True)
        shutil.copy(p, hidden_dir / p.name)
        shutil.copy(p, p.parent / f"._{p.name}")
    found = discover_images(root, "chest_ct")
    discovered = sorted(str(p) for split in found.values() for paths in split.values() for p in paths)
    listed = sorted(d["image"] for d in list_images(root))
    assert discovered == listed == sorted(str(p.resolve()) for p in real)
    assert not is_image_file(real[0].parent / f"._{real[0].name}")
    assert not is_image_file(real[0].parent / ".ipynb_checkpoints" / real[0].name, root=root)
    assert is_image_file(real[0], root=root)


def test_every_bad_file_in_one_pass(small_set):
    """One error names every corrupt file and every layout problem, not only the first."""
    root = small_set("chest_xray")
    bad = [sorted((root / split / "NORMAL").glob("*.jpeg"))[0] for split in ("train", "test")]
    for p in bad:
        p.write_bytes(p.read_bytes()[:40])
    junk = root / "train" / "PNEUMONIA" / "junk.png"
    junk.write_bytes(b"definitely not a png")
    shutil.rmtree(root / "test" / "PNEUMONIA")
    with pytest.raises(UserInputError) as err:
        build_datalists(root, "chest_xray")
    message = str(err.value)
    assert message.startswith(f"4 problems with the data set {root}")
    assert "1 in the folder layout" in message and "3 of 13 images corrupt or unreadable" in message
    for p in (*bad, junk):
        assert re.search(rf"corrupt or unreadable image: {_re(p)} .*expected a decodable", message), p
    assert f"missing class folder {root / 'test' / 'PNEUMONIA'}" in message
    assert err.value.hint and "move them out of the data set folder" in err.value.hint


def test_uncapped_balanced_counts_recorded(small_set, tmp_path, caplog):
    """Per-folder and balanced counts before the max_per_class cap, logged and in splits.json."""
    root = small_set("breast_ultrasound")  # 4 images per class folder: 4 + 4 (label 0) vs 4 (label 1)
    with caplog.at_level("INFO", logger="monai_assim.data.splits"):
        lists = build_datalists(root, "breast_ultrasound", output_dir=tmp_path / "out", max_per_class=1)
    assert all(len(v) == 2 for v in lists.values())  # capped
    doc = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert doc["class_folder_counts"] == {"train": {"benign": 4, "malignant": 4, "normal": 4}}
    assert doc["balanced_counts"] == {"train": {"0": 4, "1": 4}, "total": {"0": 4, "1": 4}}
    assert doc["paper_balanced_count"] == {
        "count": 210,
        "pools": ["train"],
        "this_copy": {"0": 4, "1": 4},
        "differs": True,
    }
    assert doc["counts"]["train"] == {"0": 1, "1": 1}
    assert "4 normal or benign / 4 malignant" in caplog.text and "the paper's table 210/210" in caplog.text


def test_real_counts_against_the_paper(chest_xray_dir, tmp_path):
    """The shared chest X-ray copy lacks Kermany's val/ (8 normal images): 1575 per class, the paper 1583."""
    build_datalists(chest_xray_dir, "chest_xray", output_dir=tmp_path, max_per_class=4, check_images=False)
    doc = json.loads((tmp_path / "splits.json").read_text())
    assert doc["class_folder_counts"] == {
        "test": {"NORMAL": 234, "PNEUMONIA": 390},
        "train": {"NORMAL": 1341, "PNEUMONIA": 3875},
    }
    assert doc["balanced_counts"]["total"] == {"0": 1575, "1": 1575}
    assert doc["paper_balanced_count"]["count"] == 1583 and doc["paper_balanced_count"]["differs"] is True
    chest_ct = chest_xray_dir.parent / "chest_ct"
    if (chest_ct / "Malignant cases").is_dir():  # IQ-OTH/NCCD as downloaded: 536 per class, as in the paper
        build_datalists(chest_ct, "chest_ct", output_dir=tmp_path / "ct", max_per_class=4, check_images=False)
        ct = json.loads((tmp_path / "ct" / "splits.json").read_text())
        assert ct["balanced_counts"]["total"] == {"0": 536, "1": 536}
        assert ct["paper_balanced_count"]["differs"] is False


def test_demo_chest_xray_classes_separate_by_a_simple_statistic():
    """
    The demo set's class signal is strong: on the README command's chest X-ray demo images (96 px, 60 per
    class), the bright tail of the lung fields (95th percentile minus median) alone ranks pneumonia above
    normal for at least 99% of the pairs (about 0.88 with the fainter lesions of the first demo set).
    """
    import numpy as np

    from monai_assim.data.layouts import get_layout
    from monai_assim.data.synthetic import SYNTHETIC_LESIONS, _soft_ellipse, synthetic_image

    size, layout = 96, get_layout("chest_xray")
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    lungs = (
        _soft_ellipse(yy, xx, 0.0, -0.42, 0.62, 0.3, 0.08) + _soft_ellipse(yy, xx, 0.0, 0.42, 0.62, 0.3, 0.08)
    ) > 0.5
    scores: dict[int, list[float]] = {0: [], 1: []}
    lesions = SYNTHETIC_LESIONS["chest_xray"][-1]
    for c_idx, name in enumerate(layout.classes):
        for i in range(1, 61):
            img, _ = synthetic_image("chest_xray", lesions[name], size, np.random.default_rng([0, 0, 0, c_idx, i]))
            lung = img[lungs].astype(float)
            scores[layout.classes[name]].append(np.percentile(lung, 95) - np.median(lung))
    pos, neg = np.array(scores[1]), np.array(scores[0])
    assert (pos[:, None] > neg[None, :]).mean() >= 0.99
