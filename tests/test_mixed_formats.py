"""
DICOM and NIfTI are accepted wherever PNG/JPEG are: one DataLoader batch of a
folder holding an 8-bit PNG, a 16-bit PNG, an RGB JPEG, a 2D DICOM and a NIfTI, through the bundles'
own inference and evaluation pipelines, gives the right pixels. Before :class:`SqueezeTo2Dd` made
a DICOM's metadata 2D, batching failed with "stack expects each tensor to be equal size, but got [3]
at entry 0 and [2] at entry 1".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.mixed_formats import BUNDLE, REPO, SHAPE, parse, write_mixed_folder
from monai.bundle import ConfigWorkflow


def _check_batch(batch: dict, expected: dict[str, np.ndarray]) -> None:
    images = batch["image"]
    assert tuple(images.shape) == (len(expected), 1, *SHAPE) and images.dtype == torch.float32
    names = [Path(f).name for f in images.meta["filename_or_obj"]]
    assert sorted(names) == sorted(expected)
    for name, image in zip(names, images):
        np.testing.assert_allclose(image[0].numpy(), expected[name], atol=1e-5, err_msg=name)


@pytest.fixture
def mixed(tmp_path):
    folder = tmp_path / "mixed"
    return folder, write_mixed_folder(folder)


def test_inference_batches_mixed_formats(mixed):
    """inference.json's DataLoader over a mixed folder: one batch of all five files, each the right pixels."""
    folder, expected = mixed
    parser = parse(
        "inference.json", input=str(folder), image_size=list(SHAPE), batch_size=8, class_names=["normal", "abnormal"]
    )
    _check_batch(next(iter(parser.get_parsed_content("dataloader"))), expected)


def _fake_run(run: Path, images: list[Path]) -> Path:
    """A training run folder as evaluate/inference read it: summary and split lists (labels alternate)."""
    (run / "datalists").mkdir(parents=True)
    settings = {
        "image_size": list(SHAPE),
        "mean": None,
        "std": None,
        "variant": "assimilated",
        "backbone": "mobilenet_v2",
        "assimilation_map": "sigmoid",
    }
    (run / "run_summary.json").write_text(json.dumps({"settings": settings, "class_names": ["normal", "abnormal"]}))
    test = [{"image": str(p), "label": i % 2} for i, p in enumerate(images)]
    (run / "datalists" / "splits.json").write_text(json.dumps({"train": [], "validation": [], "test": test}))
    return run


def test_evaluation_batches_a_split_with_one_dicom(mixed, tmp_path):
    """evaluate.json's DataLoader over a recorded test split holding one DICOM among PNG/JPEG/NIfTI."""
    folder, expected = mixed
    run = _fake_run(tmp_path / "run", sorted(folder.iterdir()))
    parser = parse("evaluate.json", output_dir=str(run), batch_size=8)
    batch = next(iter(parser.get_parsed_content("dataloader")))
    _check_batch(batch, expected)
    assert batch["label"].tolist() == [0, 1, 0, 1, 0]


def test_inference_run_on_mixed_folder(mixed, tmp_path):
    """The whole inference workflow (network, evaluator, saver) classifies every file of the mixed folder."""
    from monai_assim.networks import AssimilationNet

    folder, expected = mixed
    run = _fake_run(tmp_path / "run", [])
    torch.manual_seed(0)
    net = AssimilationNet("mobilenet_v2", 2, pretrained="none", variant="assimilated")
    (run / "checkpoints").mkdir()
    torch.save({"network": net.state_dict()}, run / "checkpoints" / "best.pt")
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "inference.json"),
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(BUNDLE),
        output_dir=str(run),
        input=str(folder),
        backbone="mobilenet_v2",
        batch_size=8,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    written = (run / "inference" / "predictions.csv").read_text()
    assert all(name in written for name in expected), written


def test_training_batches_a_data_set_with_dicom_and_nifti(tmp_path):
    """
    train.json's loaders over a data set whose class folders hold a DICOM and a NIfTI among the JPEGs (the
    pixels at 32 x 32 are image_transforms', whose native-size pixels the tests above check).
    """
    from monai_assim.data import image_transforms, make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "chest_ct", "chest_ct", n_per_class=4, size=32, seed=0)
    extra = []
    for copy in ("a", "b"):  # into the positive class, which balancing never subsamples
        write_mixed_folder(tmp_path / "formats" / copy)
        for name in ("slice.dcm", "slice.nii.gz"):
            target = data / "Malignant cases" / f"{copy}_{name}"
            (tmp_path / "formats" / copy / name).rename(target)
            extra.append((target, image_transforms(32)({"image": str(target)})["image"]))
    parser = parse(
        "train.json",
        modality="chest_ct",
        bundle_root=str(REPO / "bundles" / "chest_ct"),
        dataset_dir=str(data),
        output_dir=str(tmp_path / "run"),
        image_size=32,
        batch_size=64,
        backbone="mobilenet_v2",
        pretrained="none",
        num_workers=0,
        **{"train#preprocessing#transforms#6#prob": 0.0, "train#preprocessing#transforms#7#prob": 0.0},
    )
    seen = {}
    for loader in ("train#dataloader", "validate#dataloader"):
        for batch in parser.get_parsed_content(loader):
            assert batch["image"].shape[1:] == (1, 32, 32)
            seen.update(zip(batch["image"].meta["filename_or_obj"], batch["image"]))
    test = [d["image"] for d in parser.get_parsed_content("run_setup").datalists["test"]]
    for path, expected in extra:
        if str(path) in test:
            continue
        assert str(path) in seen, f"{path.name} not in the training or validation batches"
        assert torch.allclose(seen[str(path)], expected.as_tensor(), atol=1e-6), path.name
    assert any(p.suffix == ".dcm" and str(p) in seen for p, _ in extra)  # a DICOM was batched with JPEGs
