"""
What a user meets around a run (issue 27): the checks of a run's inputs in the order that names the real
problem, an unwritable output folder, an unreadable checkpoint, one writer per run folder, the settings of a
run followed by evaluate/inference/export.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_run_setup import setup

from monai_assim.data import make_synthetic_dataset
from monai_assim.errors import MissingInputError, UserInputError


@pytest.fixture
def data(tmp_path) -> Path:
    return make_synthetic_dataset(tmp_path / "data", "chest_xray", n_per_class=4, size=16, seed=0)


# ------------------------------------------------------------------------------------------- item 5: check order
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


# ------------------------------------------------------------------------------ item 3: unwritable output folder
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


# ------------------------------------------------------------------------------- item 2: unreadable checkpoint
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


# ---------------------------------------------------------------------------------- item 4: one writer per run
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
