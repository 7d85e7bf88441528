"""Atomic file writes: a reader, or a process killed at any moment, sees the old file or the new one."""

from __future__ import annotations

import csv
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["atomic_torch_save", "atomic_write", "atomic_write_csv", "atomic_write_text"]

_RW_ALL = stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], binary: bool = True) -> Path:
    """
    Call ``write(f)`` on a temporary file in ``path``'s folder, flush and ``fsync`` it, then rename it
    onto ``path`` with ``os.replace`` (atomic on POSIX and Windows within one file system) and, on
    POSIX, ``fsync`` the folder so that the rename itself is durable. ``path`` is therefore never seen
    half-written; on any error the temporary file is removed and ``path`` is left as it was. The
    folder is created if needed, and the file gets the usual ``0o666 & ~umask`` permissions
    (``tempfile.mkstemp`` alone would leave ``0o600``).

    Args:
        path: the file to (re)place.
        write: writes the content into the open file object it is given.
        binary: open the temporary file in ``"wb"`` mode, else in text mode ``"w"`` (UTF-8, no newline
            translation).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text_kwargs = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, "wb" if binary else "w", **text_kwargs) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, _RW_ALL & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_csv(
    path: str | os.PathLike,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
    lineterminator: str = "\n",
) -> Path:
    """
    Write a CSV file atomically (:func:`atomic_write`): the header ``columns``, then one line per row. A
    row is a sequence of cells in column order, or a mapping from column name to cell (a missing column
    is an empty cell). ``rows`` may be a generator; an error it raises leaves ``path`` as it was.
    """

    def write(f: IO) -> None:
        writer = csv.writer(f, lineterminator=lineterminator)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns] if isinstance(row, Mapping) else row)

    return atomic_write(path, write, binary=False)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` such that ``path`` is never seen half-written (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f), binary=True)
