"""
One writer per run folder (monai_assim/bundle/run_lock.py): a second RunSetup into a folder in use stops
before writing, a lock of a live process is respected and one of a dead (or killed) process is taken over.
"""

from __future__ import annotations

import os
import signal

import pytest
from helpers.run_setup import setup

from monai_assim.errors import UserInputError


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


def test_second_writer_in_one_process_stops(tmp_path, tiny_chest_xray):
    """A run that holds its folder: a second RunSetup into it stops before writing, naming pid and host."""
    import os
    import socket

    out = tmp_path / "run"
    first = setup(out, tiny_chest_xray)
    first.start()
    assert (out / "run.lock").is_file()
    before = (out / "run_summary.json").read_text()
    with pytest.raises(UserInputError, match=rf"in use by another training run \(pid {os.getpid()} on ") as err:
        setup(out, tiny_chest_xray, epochs=2)
    assert socket.gethostname() in err.value.message and "--output_dir" in err.value.hint
    assert (out / "run_summary.json").read_text() == before
    first.release_folder()
    assert not (out / "run.lock").exists()
    setup(out, tiny_chest_xray, epochs=2).start()  # the folder is free again


def test_lock_of_a_live_process_stops_and_of_a_dead_one_is_taken_over(tmp_path, tiny_chest_xray, caplog):
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
        setup(out, tiny_chest_xray)
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


def test_resume_of_a_killed_run_takes_its_lock_over(tmp_path, tiny_chest_xray):
    """--resume True of a run whose process was killed (its run.lock left behind) resumes."""
    import torch

    out = tmp_path / "run"
    setup(out, tiny_chest_xray).start()
    (out / "checkpoints").mkdir()
    torch.save({"epoch": 1}, out / "checkpoints" / "last.pt")
    (out / "run.lock").write_text(_lock_doc(_dead_pid()))
    resumed = setup(out, tiny_chest_xray, resume=True)
    resumed.start()
    assert resumed.lock.held and resumed.resumed_from_epoch == 1
    resumed.release_folder()


def test_a_forked_child_does_not_keep_a_killed_runs_lock(tmp_path):
    """A training's DataLoader workers are forked while it holds the lock; when the training is killed, the lock
    must go with it at once (a --resume True started right after is not refused because an orphaned worker
    still holds the flock)."""
    import subprocess
    import sys

    from monai_assim.bundle.run_lock import RunLock

    out = tmp_path / "run"
    holder = (
        "import os, signal, sys, time\n"
        "from monai_assim.bundle.run_lock import RunLock\n"
        f"lock = RunLock({str(out)!r}).acquire()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    time.sleep(30)\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        proc.kill()  # the training, killed; its forked child (a worker) lives on for a while
        proc.wait()
        os.kill(child, 0)  # still there
        RunLock(out).acquire().release()  # the killed run's lock is taken over at once
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_forked_child_leaves_the_parents_lock_alone(tmp_path):
    """The child's exit does not release or remove the lock its parent still holds."""
    from monai_assim.bundle.run_lock import RunLock

    lock = RunLock(tmp_path / "run").acquire()
    pid = os.fork()
    if pid == 0:  # the child: runs the lock's finalizer, as at an interpreter exit
        lock.release()
        os._exit(0)
    os.waitpid(pid, 0)
    assert lock.path.is_file() and lock.held
    with pytest.raises(UserInputError):
        RunLock(tmp_path / "run").acquire()
    lock.release()
