"""
One writer per run folder: the lock a training run holds on its output folder.

Two trainings started into the same ``--output_dir`` would write the same checkpoints, split lists and
run summary, and the folder would end with a mix of both and no word of it. :class:`RunLock` makes the
second one stop with an error naming the first (its pid, host and start time). The lock is the file
``<output_dir>/run.lock`` (JSON: pid, host, start time, the process's start tick, the command) held
with ``fcntl.flock``, which the kernel releases when the process ends, however it ends. A lock file left
by a process that has ended (killed, crashed) is stale: the next run (``--resume True`` of that run, or
a fresh one) takes it over with a warning. A lock whose owner is alive on this host, or that names
another host (whose processes cannot be checked from here), is not taken over.

A process forked while the lock is held (a ``DataLoader`` worker) closes its copy of the lock's file
descriptor at once: a flock belongs to the open file, so a forked copy would otherwise keep the folder
locked after its parent was killed, until the orphaned worker noticed and exited, and a ``--resume True``
started at once would be refused.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import weakref
from pathlib import Path
from typing import Any

from monai_assim.errors import UserInputError

try:  # POSIX; elsewhere the lock relies on the owner's pid alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunLock", "process_alive"]

logger = logging.getLogger(__name__)

#: the lock file in a run's output folder
LOCK_FILE = "run.lock"

#: the file descriptors of the locks this process holds, closed in every child forked from it
_HELD_FDS: set[int] = set()
_FORK_HOOK = False


def _close_held_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: a forked child lets go of the parent's locks."""
    for fd in list(_HELD_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_FDS.clear()


def _hold(fd: int) -> None:
    """Record ``fd`` as a held lock, registering the fork hook the first time a lock is taken."""
    global _FORK_HOOK
    if not _FORK_HOOK and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_close_held_in_child)
        _FORK_HOOK = True
    _HELD_FDS.add(fd)


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``), ``None`` if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2 :].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, process_start: str | None = None) -> bool:
    """
    Whether process ``pid`` runs on this host; with ``process_start`` (as recorded by :class:`RunLock`), a
    process of that pid that started at another time is a new process that reused the pid (not alive).
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    except OSError:
        return False
    current = _process_start(pid)
    return not (process_start and current and current != process_start)


class RunLock:
    """
    The lock of a run folder (see the module docstring). :meth:`acquire` creates ``folder`` when absent,
    and :meth:`release` (also run at interpreter exit and when the lock object is collected) removes the lock file,
    and the folder too when the lock created it and nothing else was written into it, so that a run that
    fails before writing leaves no folder.

    Args:
        folder: the run's output folder.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser().absolute()
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._made_folder = False
        self._finalizer: weakref.finalize | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def owner(self) -> dict[str, Any] | None:
        """The content of the lock file (pid, host, started, ...), ``None`` when absent or unreadable."""
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def _in_use(self, owner: dict[str, Any] | None) -> UserInputError:
        owner = owner or {}
        who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {owner.get('started', '?')}"
        command = f"; command: {owner['command']}" if owner.get("command") else ""
        return UserInputError(
            f"the run folder {self.folder} is in use by another training run ({who}{command}); a second "
            "run into the same folder would overwrite its checkpoints and summary.",
            f"wait for that run to end, or pass another --output_dir. If no such process runs any more, delete "
            f"{self.path}.",
        )

    def _stale(self, owner: dict[str, Any] | None) -> bool:
        """Whether the recorded owner has ended (a lock of another host or of this process is never stale)."""
        if not owner or "pid" not in owner:
            return True  # empty or unreadable: a process killed while writing it
        if owner.get("host") != socket.gethostname():
            return False
        pid = int(owner["pid"])
        if pid == os.getpid():
            return False
        return not process_alive(pid, owner.get("process_start"))

    def check(self) -> None:
        """
        Raise the error of :meth:`acquire` when a live process holds the folder, without writing anything
        (an input check before the run writes its first file; :meth:`acquire` takes the lock then).
        """
        if self.held or not self.path.is_file():
            return
        if fcntl is not None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._in_use(self.owner()) from None
            finally:
                os.close(fd)  # also drops the shared lock
        owner = self.owner()
        if owner and not self._stale(owner):
            raise self._in_use(owner)

    def acquire(self) -> RunLock:
        """
        Take the lock (idempotent for this object).

        Raises:
            UserInputError: another live process holds the folder (named in the message), or the lock
                names another host.
        """
        if self.held:
            return self
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made_folder = True
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise self._in_use(self.owner()) from None
                try:
                    replaced = os.fstat(fd).st_ino != os.stat(self.path).st_ino
                except FileNotFoundError:
                    replaced = True
                if replaced:  # its holder released (unlinked) it in between: take the new file
                    os.close(fd)
                    continue
                owner = self.owner()
                if owner and not self._stale(owner):  # a live owner that holds no flock (another host, NFS)
                    raise self._in_use(owner)
                if owner:
                    logger.warning(
                        f"taking over the stale lock {self.path} of pid {owner.get('pid')} on {owner.get('host')} "
                        f"(started {owner.get('started')}): that process has ended."
                    )
                self._write(fd)
            except BaseException:
                if self._fd is None:
                    os.close(fd)
                    self._remove_made_folder()
                raise
            self._fd = fd
            _hold(fd)
            # released by release(), when this object is collected, or at interpreter exit (of this process only)
            self._finalizer = weakref.finalize(
                self, RunLock._release_fd, fd, self.path, self.folder, self._made_folder, os.getpid()
            )
            return self
        raise RuntimeError(f"could not take the lock {self.path}: it was replaced 5 times while being taken.")

    def _write(self, fd: int) -> None:
        doc = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "process_start": _process_start(os.getpid()),
            "command": " ".join(sys.argv),
        }
        data = (json.dumps(doc, indent=2) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _remove_made_folder(self) -> None:
        if self._made_folder:
            try:
                self.folder.rmdir()
            except OSError:
                pass

    @staticmethod
    def _release_fd(fd: int, path: Path, folder: Path, made_folder: bool, pid: int) -> None:
        if os.getpid() != pid:  # a forked child: its copy of the descriptor is closed; the lock is the parent's
            return
        _HELD_FDS.discard(fd)
        try:
            path.unlink(missing_ok=True)  # while still holding the flock
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass
        if made_folder:
            try:
                folder.rmdir()  # only when empty: a run that wrote nothing leaves no folder
            except OSError:
                pass

    def release(self) -> None:
        """Remove the lock file and let the folder go (no-op when not held)."""
        if self._finalizer is not None:
            self._finalizer()  # runs _release_fd once
            self._finalizer = None
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
