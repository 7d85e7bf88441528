"""
What a user meets around a run: the checks of a run's inputs in the order that names the real
problem, an unwritable output folder, an unreadable checkpoint, one writer per run folder, the settings of a
run followed by evaluate/inference/export.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.run_setup import setup

from monai_assim.data import make_synthetic_dataset
from monai_assim.errors import MissingInputError, UserInputError, find_user_error


@pytest.fixture
def data(tmp_path) -> Path:
    return make_synthetic_dataset(tmp_path / "data", "chest_xray", n_per_class=4, size=16, seed=0)


# ------------------------------------------------------------------------------------------- check order
def test_data_path_error_comes_before_missing_weights(tmp_path, data, monkeypatch):
    """A typo in --dataset_dir with --pretrained imagenet offline: the data error, not 'download the weights'."""
    import monai_assim.networks

    def no_weights(name):
        raise MissingInputError(f"ImageNet weights for {name} are not cached and could not be downloaded.")

    monkeypatch.setattr(monai_assim.networks, "imagenet_weights_file", no_weights)
    typo = tmp_path / "dta"
    with pytest.raises(MissingInputError, match=rf"data set folder {typo} does not exist"):
        setup(tmp_path / "run", typo, pretrained="imagenet")
    (data / "test" / "NORMAL").rename(data / "test" / "NORMALS")  # a layout problem is a data problem too
    with pytest.raises(UserInputError, match="missing class folder"):
        setup(tmp_path / "run", data, pretrained="imagenet")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ unwritable output folder
def test_unwritable_output_dir_is_an_input_error(tmp_path, data):
    """--output_dir that cannot be created or written: a user error naming it, raised with the other input checks."""
    from monai_assim.bundle import check_writable_dir

    forbidden = Path("/proc/forbidden/run")
    with pytest.raises(UserInputError, match=rf"output folder {forbidden} cannot be created or written") as err:
        setup(forbidden, data)
    assert "--output_dir" in err.value.hint
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(UserInputError, match="is a file, not a folder") as err:
        check_writable_dir(a_file / "run", "--predictions_dir")
    assert "--predictions_dir" in err.value.hint
    # a writable folder passes, and the check leaves nothing behind: no folder made, no probe file
    fresh = tmp_path / "new" / "run"
    assert check_writable_dir(fresh) == str(fresh) and not (tmp_path / "new").exists()
    assert check_writable_dir(tmp_path) == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "data"]


# ------------------------------------------------------------------------------- unreadable checkpoint
def _truncate(path: Path, size: int = 5000) -> None:
    path.write_bytes(path.read_bytes()[:size])


def test_truncated_checkpoint_is_named(tmp_path, data):
    """best.pt cut to 5 kB: a user error naming the file, 'unreadable', and the way out (--checkpoint last)."""
    import torch

    from monai_assim.bundle import checkpoint_path

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    state = {"network": {"w": torch.zeros(4000)}, "epoch": 1}
    for name in ("best.pt", "last.pt"):
        torch.save(state, ckpts / name)
    _truncate(ckpts / "best.pt")
    assert checkpoint_path(tmp_path / "run", "last") == str(ckpts / "last.pt")
    with pytest.raises(
        UserInputError, match=rf"checkpoint {ckpts / 'best.pt'} is unreadable \(truncated or corrupt\?\)"
    ) as err:
        checkpoint_path(tmp_path / "run", "best")
    assert "--checkpoint last" in err.value.hint and "retrain" in err.value.hint
    assert "\n" not in err.value.message
    # a resume from a corrupt last.pt says so too, before anything is written
    _truncate(ckpts / "last.pt")
    with pytest.raises(UserInputError, match=rf"checkpoint {ckpts / 'last.pt'} is unreadable") as err:
        setup(tmp_path / "run", data, resume=True)
    assert "--output_dir" in err.value.hint


# ---------------------------------------------------------------------------------- one writer per run
def _lock_doc(pid: int, **extra) -> str:
    import json
    import socket

    return json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00", **extra})


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_writer_in_one_process_stops(tmp_path, data):
    """A run that holds its folder: a second RunSetup into it stops before writing, naming pid and host."""
    import os
    import socket

    out = tmp_path / "run"
    first = setup(out, data)
    first.start()
    assert (out / "run.lock").is_file()
    before = (out / "run_summary.json").read_text()
    with pytest.raises(UserInputError, match=rf"in use by another training run \(pid {os.getpid()} on ") as err:
        setup(out, data, epochs=2)
    assert socket.gethostname() in err.value.message and "--output_dir" in err.value.hint
    assert (out / "run_summary.json").read_text() == before
    first.release_folder()
    assert not (out / "run.lock").exists()
    setup(out, data, epochs=2).start()  # the folder is free again


def test_lock_of_a_live_process_stops_and_of_a_dead_one_is_taken_over(tmp_path, data, caplog):
    """A lock naming a live pid of this host (here the parent process) is respected; a dead pid's is stale."""
    import os

    from monai_assim.bundle.run_lock import RunLock, _process_start

    out = tmp_path / "run"
    out.mkdir()
    lock = out / "run.lock"
    lock.write_text(_lock_doc(os.getppid(), process_start=_process_start(os.getppid())))
    with pytest.raises(UserInputError, match=rf"in use by another training run \(pid {os.getppid()} "):
        RunLock(out).acquire()
    with pytest.raises(UserInputError, match="in use"):
        setup(out, data)
    # the same pid with another start time: the pid was reused by a new process, the lock is stale
    lock.write_text(_lock_doc(os.getppid(), process_start="1"))
    RunLock(out).acquire().release()

    dead = _dead_pid()
    lock.write_text(_lock_doc(dead))
    with caplog.at_level("WARNING"):
        held = RunLock(out).acquire()
    assert f"taking over the stale lock {lock} of pid {dead}" in caplog.text
    assert f'"pid": {os.getpid()}' in lock.read_text()
    held.release()
    assert not lock.exists() and out.is_dir()  # the folder existed before: it stays


def test_lock_held_by_another_process(tmp_path):
    """Two processes: while one holds the lock (flock) the other stops; after it is killed, its lock is taken over."""
    import subprocess
    import sys

    from monai_assim.bundle.run_lock import RunLock

    out = tmp_path / "run"
    holder = (
        "import fcntl, json, os, socket, sys, time\n"
        f"fd = os.open({str(out / 'run.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname()}).encode())\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(UserInputError, match=rf"pid {proc.pid} "):
            RunLock(out).check()
        with pytest.raises(UserInputError, match=rf"pid {proc.pid} "):
            RunLock(out).acquire()
    finally:
        proc.kill()
        proc.wait()
    RunLock(out).acquire().release()  # killed: its lock is stale (a --resume True of that run goes on)


def test_resume_of_a_killed_run_takes_its_lock_over(tmp_path, data):
    """--resume True of a run whose process was killed (its run.lock left behind) resumes."""
    import torch

    out = tmp_path / "run"
    setup(out, data).start()
    (out / "checkpoints").mkdir()
    torch.save({"epoch": 1}, out / "checkpoints" / "last.pt")
    (out / "run.lock").write_text(_lock_doc(_dead_pid()))
    resumed = setup(out, data, resume=True)
    resumed.start()
    assert resumed.lock.held and resumed.resumed_from_epoch == 1
    resumed.release_folder()


# ------------------------------------------------------------------------ a run's settings follow it
def _fake_run(run: Path, images: list[Path], **settings) -> Path:
    """A run folder as evaluate/inference read it: summary, split lists and best.pt of an untrained network."""
    import json

    import torch

    from monai_assim.networks import AssimilationNet

    (run / "datalists").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    settings = {"image_size": 32, "mean": None, "std": None, "assimilation_map": "sigmoid", **settings}
    summary = {"modality": "chest_xray", "settings": settings, "class_names": ["normal", "pneumonia"]}
    (run / "run_summary.json").write_text(json.dumps(summary))
    test = [{"image": str(p), "label": i % 2} for i, p in enumerate(images)]
    (run / "datalists" / "splits.json").write_text(json.dumps({"train": [], "validation": [], "test": test}))
    kwargs = {k: settings[k] for k in ("variant", "backbone", "texture_features", "color_features") if k in settings}
    net = AssimilationNet(num_classes=2, pretrained="none", output_map=settings["assimilation_map"], **kwargs)
    torch.save({"network": net.state_dict()}, run / "checkpoints" / "best.pt")
    return run


@pytest.mark.parametrize(
    "settings",
    [
        {"variant": "vanilla", "backbone": "mobilenet_v2"},
        {"variant": "assimilated", "backbone": "mobilenet_v2", "texture_features": 4, "color_features": 8},
    ],
)
def test_evaluate_and_inference_build_the_runs_network(tmp_path, data, settings):
    """--output_dir alone: the network of the run (variant, backbone, T/C sizes, classes), its weights load."""
    import torch
    from helpers.mixed_formats import parse

    images = sorted((data / "test").rglob("*.jpeg"))[:2]
    run = _fake_run(tmp_path / "run", images, **settings)
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["network"]
    for config in ("evaluate.json", "inference.json"):
        parser = parse(config, output_dir=str(run))
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(state)  # strict: "Error(s) in loading state_dict" when the network is not the run's
        assert (net.variant, net.backbone_name, net.num_classes) == (settings["variant"], "mobilenet_v2", 2)
    assert parser.get_parsed_content("prediction_saver").class_names == ["normal", "pneumonia"]
    onehot = parse("evaluate.json", output_dir=str(run)).get_parsed_content("postprocessing").transforms[-1]
    assert list(onehot.to_onehot) == [2]  # the run's class count


def test_a_run_older_than_the_output_map_evaluates_with_the_clamp(tmp_path, data):
    """A run summary without assimilation_map (written before the setting) and its checkpoint: the clamp map."""
    import json

    import torch
    from helpers.mixed_formats import parse

    images = sorted((data / "test").rglob("*.jpeg"))[:2]
    run = _fake_run(tmp_path / "run", images, variant="assimilated", backbone="mobilenet_v2", assimilation_map="clamp")
    summary = json.loads((run / "run_summary.json").read_text())
    del summary["settings"]["assimilation_map"]
    (run / "run_summary.json").write_text(json.dumps(summary))
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["network"]
    state = {k: v for k, v in state.items() if not k.endswith("output_map_id")}  # as written before the maps
    for config in ("evaluate.json", "inference.json"):
        net = parse(config, output_dir=str(run)).get_parsed_content("network_def")
        assert net.texture.output_map == net.color.output_map == "clamp"
        net.load_state_dict(state)


def test_explicit_setting_that_conflicts_with_the_run(tmp_path, data):
    """--backbone resnet18 against a mobilenet_v2 run: one line naming both values and the summary."""
    from helpers.mixed_formats import parse

    run = _fake_run(tmp_path / "run", [], variant="vanilla", backbone="mobilenet_v2")
    for config in ("evaluate.json", "inference.json"):
        with pytest.raises(Exception) as err:
            parse(config, output_dir=str(run), backbone="resnet18").get_parsed_content("network_def")
        error = find_user_error(err.value)
        assert error is not None and "\n" not in error.message, err.value
        assert error.message == (
            f"--backbone resnet18 conflicts with the run's backbone mobilenet_v2 ({run / 'run_summary.json'})."
        )
        assert "leave --backbone out" in error.hint
    # equal values are fine, and the other settings of the network too
    same = parse("evaluate.json", output_dir=str(run), variant="vanilla", backbone="mobilenet_v2", image_size=32)
    assert same.get_parsed_content("network_def").backbone_name == "mobilenet_v2"
    with pytest.raises(Exception) as err:
        parse("inference.json", output_dir=str(run), image_size=64).get_parsed_content("spatial_size")
    assert "--image_size 64 conflicts with the run's image_size 32" in find_user_error(err.value).message


def test_export_takes_the_network_from_the_run(tmp_path):
    """The exported configs hold the run's variant, backbone, class count and T/C sizes as values."""
    from monai_assim.bundle.export import exported_config

    summary = {
        "modality": "chest_xray",
        "class_names": ["normal", "pneumonia"],
        "settings": {"variant": "assimilated", "backbone": "mobilenet_v2", "image_size": 32, "mean": None,
                     "std": None, "texture_features": 4, "texture_layers": 2, "color_features": 8},
    }  # fmt: skip
    for name in ("inference.json", "evaluate.json"):
        config = exported_config(name, summary)
        got = {k: config[k] for k in ("variant", "backbone", "num_classes", "texture_features", "texture_layers")}
        assert got == {"variant": "assimilated", "backbone": "mobilenet_v2", "num_classes": 2,
                       "texture_features": 4, "texture_layers": 2}  # fmt: skip
        assert config["network_def"]["texture_features"] == "@texture_features"
    # a summary written before the T/C sizes were recorded: the sizes those runs used
    del summary["settings"]["texture_features"]
    assert exported_config("inference.json", summary)["texture_features"] == 8


# ------------------------------------------------------------------------------------ a demo that learns
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


def test_training_ends_with_next_steps(tmp_path, data, caplog):
    """The end of a run: its folder, its best metric, and the evaluate / inference / export commands for it."""
    from types import SimpleNamespace

    out = tmp_path / "run"
    rs = setup(out, data, epochs=3)
    rs.start()
    rs.record_epoch({"epoch": 2, "val_acc": 0.95, "val_select": 0.95})
    trainer = SimpleNamespace(state=SimpleNamespace(epoch=3, iteration=30, max_epochs=3))
    with caplog.at_level("INFO", logger="monai_assim.bundle"):
        rs.finish(trainer, SimpleNamespace(best_epoch=2, best_metric=0.95))
    text = caplog.text
    assert "training finished: 3 epochs" in text and f"run folder: {out}" in text
    assert "best val_acc: 0.9500 (epoch 2, checkpoints/best.pt" in text
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "chest_xray"
    for config in ("evaluate.json", "inference.json"):
        assert f"--config_file {bundle}/{config} --output_dir {out}" in text or (
            f"--config_file bundles/chest_xray/{config} --output_dir {out}" in text
        )
    assert f"python -m monai_assim.bundle export {out} exports/run" in text
    assert not rs.lock.held  # the folder is released at the end
