"""
Inference on imperfect folders and its outputs: unreadable files are skipped and
listed in ``errors.csv`` (``--strict True`` fails instead), ``predictions.csv`` has a header, class names and
probabilities, is written once and atomically, and a failed run leaves no earlier ``predictions.csv``.

One tiny chest CT training run per module (in-process); the inference and evaluation runs go through
``python -m monai.bundle run`` (exit codes).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.bundle_runs import REPO, TINY_EVAL, TINY_KW, bundle_cmd, bundle_env, tiny_dataset, train_workflow
from PIL import Image

from monai_assim.data import ERROR_KEY, SOURCE_KEY, ReadableDataset, require_readable, split_readable
from monai_assim.handlers import ERRORS_COLUMNS, PredictionSaver, prediction_columns

INFERENCE = "bundles/chest_ct/inference.json"
CLASS_NAMES = ["normal or benign", "malignant"]  # chest_ct's, recorded in the run summary


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished one-epoch chest CT run on 32 px synthetic images (``TINY``'s settings, trained in-process)."""
    root = tmp_path_factory.mktemp("infer_run")
    data, out = tiny_dataset(root, "chest_ct", n=4), root / "run"
    workflow = train_workflow(data, out, bundle="chest_ct", **TINY_KW)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return out


def _good_images(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"good_{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _bad_images(folder: Path) -> list[Path]:
    """A truncated JPEG and a ``.png`` that is no image at all."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = folder / "whole.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)).save(whole, quality=95)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[:400])
    whole.unlink()
    not_png = folder / "notes.png"
    not_png.write_text("this is a text file with a .png suffix\n")
    return [truncated, not_png]


def _previous_outputs(pred_dir: Path) -> None:
    """A previous run's predictions.csv and errors.csv in ``pred_dir`` (written here rather than by a run of its
    own: the saver removes them by name, whatever they hold)."""
    pred_dir.mkdir(parents=True, exist_ok=True)
    (pred_dir / "predictions.csv").write_text("file,predicted_class\nold.png,0\n")
    (pred_dir / "errors.csv").write_text("file,reason\nold_bad.png,OSError\n")


def _infer(run_dir: Path, input_dir: Path, pred_dir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = bundle_cmd(INFERENCE, "--output_dir", str(run_dir), "--backbone", "mobilenet_v2", "--input", str(input_dir),
                     "--predictions_dir", str(pred_dir), *args)  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=600)


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_unreadable_files_skipped_listed_and_predictions_format(run_dir, tmp_path):
    """Good images + a truncated JPEG + a non-image PNG: exit 0, all good ones predicted, both bad ones listed."""
    folder = tmp_path / "images"
    good, bad = _good_images(folder), _bad_images(folder)
    pred_dir = tmp_path / "pred"
    proc = _infer(run_dir, folder, pred_dir)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]

    rows = _read_csv(pred_dir / "predictions.csv")
    header = rows[0]
    assert tuple(header) == prediction_columns(CLASS_NAMES)
    assert header == ["file", "predicted_class", "predicted_index", "prob_normal or benign", "prob_malignant"]
    assert [r[0] for r in rows[1:]] == sorted(str(p.resolve()) for p in good)
    probs = torch.tensor([[float(v) for v in r[3:]] for r in rows[1:]])
    assert torch.allclose(probs.sum(1), torch.ones(len(good)), atol=1e-6)
    for r, p in zip(rows[1:], probs):
        assert int(r[2]) == int(p.argmax()) and r[1] == CLASS_NAMES[int(r[2])]

    errors = _read_csv(pred_dir / "errors.csv")
    assert tuple(errors[0]) == ERRORS_COLUMNS
    listed = {Path(f).name: reason for f, reason in errors[1:]}
    assert set(listed) == {p.name for p in bad}
    assert "truncated" in listed["truncated.jpg"].lower() and "cannot identify image" in listed["notes.png"]
    for p in bad:  # each named in the log, and the outputs' paths at the end
        assert f"unreadable image skipped: {p.resolve()}" in log
    assert f"written to {pred_dir / 'predictions.csv'}" in log and str(pred_dir / "errors.csv") in log


@pytest.mark.slow
def test_same_folder_twice_gives_the_same_predictions(run_dir, tmp_path):
    folder = tmp_path / "images"
    _good_images(folder, n=5)
    _bad_images(folder)
    first, second = tmp_path / "p1", tmp_path / "p2"
    for pred_dir in (first, second):
        proc = _infer(run_dir, folder, pred_dir, "--batch_size", "2")
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert (first / "predictions.csv").read_bytes() == (second / "predictions.csv").read_bytes()
    assert len(_read_csv(first / "predictions.csv")) == 6


@pytest.mark.slow
def test_strict_fails_listing_all_and_leaves_no_stale_predictions(run_dir, tmp_path):
    """--strict True: non-zero exit naming both files; the earlier run's predictions.csv is gone."""
    folder, pred_dir = tmp_path / "images", tmp_path / "pred"
    _good_images(folder)
    _previous_outputs(pred_dir)  # an earlier run's result ...
    bad = _bad_images(folder)
    proc = _infer(run_dir, folder, pred_dir, "--strict", "True")
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "strict mode: 2 of 5 input images cannot be read" in log
    for p in bad:
        assert str(p.resolve()) in log
    assert not (pred_dir / "predictions.csv").exists()  # ... is not left to be taken for this run's
    assert {Path(r[0]).name for r in _read_csv(pred_dir / "errors.csv")[1:]} == {p.name for p in bad}


@pytest.mark.slow
def test_nothing_readable_fails_clearly(run_dir, tmp_path):
    folder, pred_dir = tmp_path / "images", tmp_path / "pred"
    bad = _bad_images(folder)
    pred_dir.mkdir()
    (pred_dir / "predictions.csv").write_text("file,predicted_class\nold.png,0\n")  # a previous run's
    proc = _infer(run_dir, folder, pred_dir)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "none of the 2 input images can be read" in log
    for p in bad:
        assert str(p.resolve()) in log
    assert not (pred_dir / "predictions.csv").exists()


@pytest.mark.slow
def test_failed_run_removes_old_predictions(run_dir, tmp_path):
    """A run that fails for another reason (no such input, missing checkpoint) leaves no predictions.csv either."""
    folder, pred_dir = tmp_path / "images", tmp_path / "pred"
    _good_images(folder)
    for input_dir, args, message in (
        (tmp_path / "no_such_folder", (), "no_such_folder does not exist"),  # fails while listing the input
        (folder, ("--checkpoint", str(tmp_path / "missing.pt")), "missing.pt not found"),  # after listing it
    ):
        _previous_outputs(pred_dir)
        proc = _infer(run_dir, input_dir, pred_dir, *args)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr
        assert not (pred_dir / "predictions.csv").exists() and not (pred_dir / "errors.csv").exists()


@pytest.mark.slow
def test_load_failure_after_the_check_does_not_stop_the_run(run_dir, tmp_path):
    """Files that reach LoadImaged unchecked (datalist without the check) are skipped and listed, not fatal."""
    folder, pred_dir = tmp_path / "images", tmp_path / "pred"
    good, bad = _good_images(folder), _bad_images(folder)
    proc = _infer(run_dir, folder, pred_dir, "--datalist", "$monai_assim.bundle.list_images(@input, @output_dir)")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert [r[0] for r in _read_csv(pred_dir / "predictions.csv")[1:]] == sorted(str(p.resolve()) for p in good)
    assert {Path(r[0]).name for r in _read_csv(pred_dir / "errors.csv")[1:]} == {p.name for p in bad}


@pytest.mark.slow
def test_evaluation_fails_naming_every_unreadable_test_image(run_dir, tmp_path):
    """evaluate.json on a labelled split with unreadable files stops before attacking, naming all of them."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("inference", "eval", "tensorboard"))
    bad = _bad_images(tmp_path / "bad")
    splits_path = run / "datalists" / "splits.json"
    splits = json.loads(splits_path.read_text())
    splits["test"] += [{"image": str(p), "label": 0} for p in bad]
    splits_path.write_text(json.dumps(splits))
    cmd = bundle_cmd("bundles/chest_ct/evaluate.json", "--output_dir", str(run), *TINY_EVAL)
    proc = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"2 of {len(splits['test'])} images cannot be read" in log
    for p in bad:
        assert str(p) in log


# --- the pieces, without a bundle --------------------------------------------------------------------------------


def test_split_and_require_readable(tmp_path):
    good, bad = _good_images(tmp_path, n=2), _bad_images(tmp_path)
    datalist = [{"image": str(p), "label": 0} for p in sorted(good + bad)]
    readable, unreadable = split_readable(datalist)
    assert [d["image"] for d in readable] == sorted(str(p) for p in good)
    assert [Path(f).name for f, _ in unreadable] == sorted(p.name for p in bad)
    assert require_readable(readable) == readable
    with pytest.raises(ValueError, match="2 of 4 images cannot be read") as e:
        require_readable(datalist)
    assert all(str(p) in str(e.value) for p in bad)


def test_readable_dataset_marks_failures_and_substitutes():
    def transform(d):
        if d["image"].startswith("bad"):
            raise OSError(f"cannot decode {d['image']}")
        return {"image": torch.full((1, 2, 2), float(d["image"][-1]))}

    ds = ReadableDataset([{"image": n} for n in ("ok1", "bad1", "ok2", "bad2")], transform=transform)
    items = [ds[i] for i in range(len(ds))]
    assert [(d[SOURCE_KEY], bool(d[ERROR_KEY])) for d in items] == [
        ("ok1", False), ("bad1", True), ("ok2", False), ("bad2", True)
    ]  # fmt: skip
    assert items[1][ERROR_KEY] == "OSError: cannot decode bad1"
    assert float(items[1]["image"][0, 0, 0]) == 2.0 and float(items[3]["image"][0, 0, 0]) == 1.0  # next, wrapping
    with pytest.raises(ValueError, match="no image of the dataset could be loaded"):
        ReadableDataset([{"image": "bad1"}], transform=transform)[0]


def _engine(batches):
    """A minimal stand-in of a decollating MONAI evaluator: state.batch and state.output as lists of dicts."""
    from ignite.engine import Engine

    def step(engine, batch):
        engine.state.batch = [{SOURCE_KEY: f, ERROR_KEY: e} for f, e, _ in batch]
        return [{"pred": torch.tensor(p)} for _, _, p in batch]

    return Engine(step), batches


def test_prediction_saver_writes_once_with_header(tmp_path):
    from ignite.engine import Events

    saver = PredictionSaver(tmp_path, class_names=["cat", "dog"])
    engine, batches = _engine(
        [[("a.png", "", [0.2, 0.8]), ("x.png", "OSError: bad", [0.5, 0.5])], [("b.png", "", [0.9, 0.1])]]
    )
    saver.attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(saver.path.exists()))
    engine.run(batches)
    assert seen == [False, False]  # written once, at the end
    assert _read_csv(saver.path) == [
        ["file", "predicted_class", "predicted_index", "prob_cat", "prob_dog"],
        ["a.png", "dog", "1", "0.2", "0.8"],
        ["b.png", "cat", "0", "0.9", "0.1"],
    ]
    assert _read_csv(saver.errors_path) == [["file", "reason"], ["x.png", "OSError: bad"]]

    strict = PredictionSaver(tmp_path, class_names=["cat", "dog"], strict=True)
    engine, batches = _engine([[("a.png", "", [0.2, 0.8]), ("x.png", "OSError: bad", [0.5, 0.5])]])
    strict.attach(engine)
    with pytest.raises(ValueError, match="strict mode: 1 input images cannot be read"):
        engine.run(batches)
    assert not saver.path.exists() and saver.errors_path.is_file()


def test_prediction_saver_checks_class_names(tmp_path):
    with pytest.raises(ValueError, match="at least two distinct class names"):
        PredictionSaver(tmp_path, class_names="auto")
    with pytest.raises(ValueError, match="at least two distinct class names"):
        PredictionSaver(tmp_path, class_names=["a", "a"])
    assert PredictionSaver(tmp_path, ["a", "b"], strict="false").strict is False
    assert PredictionSaver(tmp_path, ["a", "b"], strict="True").strict is True
    with pytest.raises(ValueError, match="strict must be True or False"):
        PredictionSaver(tmp_path, ["a", "b"], strict="yes please")
    saver = PredictionSaver(tmp_path, class_names=["a", "b", "c"])
    engine, batches = _engine([[("a.png", "", [0.2, 0.8])]])
    saver.attach(engine)
    with pytest.raises(ValueError, match="2 class probabilities for a.png but 3 class names"):
        engine.run(batches)


def test_class_names_from_the_run_summary(tmp_path):
    from monai_assim.bundle import run_class_names

    (tmp_path / "run_summary.json").write_text(json.dumps({"class_names": ["no tumour", "tumour"]}))
    assert run_class_names("auto", tmp_path) == ["no tumour", "tumour"]
    assert run_class_names(["no tumour", "tumour"], tmp_path) == ["no tumour", "tumour"]
    with pytest.raises(ValueError, match=r"--class_names \['x', 'y'\] conflicts with the run's class_names"):
        run_class_names(["x", "y"], tmp_path)  # the run's class names, or an error
    assert run_class_names(["x", "y"], tmp_path / "elsewhere") == ["x", "y"]  # no run to compare with
    config = json.loads((REPO / INFERENCE).read_text())
    assert config["class_names"] == "auto"  # a top-level key an exported bundle can set
