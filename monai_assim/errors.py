"""
Errors a user can cause and fix (a bad path, a bad folder layout, a corrupt image, an unknown backbone,
a setting out of range, ImageNet weights unavailable offline, a resume that conflicts with the run), and
how a bundle command reports them.

The checks raise :class:`UserInputError` (a ``ValueError``) or :class:`MissingInputError` (also a
``FileNotFoundError``), carrying the message and a hint saying how to fix it. MONAI's config parser
wraps whatever a config expression raises in a ``RuntimeError("Failed to evaluate ConfigExpression
...")``, so the message of a bundle command would end up 40 lines above the end of a 60-135 line
traceback. :func:`install_excepthook` (the first ``initialize`` step of every bundle config, and the
first step of the command-line entry points; importing the package changes nothing) therefore
replaces ``sys.excepthook`` for errors whose chain holds a
``UserInputError``: the full traceback goes to a log file (:func:`error_log_dir`), and stderr ends
with the message and the hint. Set ``MONAI_ASSIM_DEBUG=1`` (or pass ``--debug True`` to any bundle config)
to print the full traceback as well. Any other exception goes to the previous hook unchanged.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import TracebackType

__all__ = [
    "DEBUG_ENV",
    "LOG_DIR_ENV",
    "MissingInputError",
    "UserInputError",
    "error_log_dir",
    "find_user_error",
    "install_excepthook",
    "set_debug",
]

#: environment variable that makes a failed bundle command print its full traceback (``1``, ``true``).
DEBUG_ENV = "MONAI_ASSIM_DEBUG"
#: environment variable naming the folder of the error logs (default ``<tmp>/monai_assim_errors``).
LOG_DIR_ENV = "MONAI_ASSIM_LOG_DIR"
_HINT = "Hint: "
_debug = False


class UserInputError(ValueError):
    """
    An error in what the user gave (paths, data, settings) that the user can fix.

    Args:
        message: what is wrong, naming the path or value.
        hint: how to fix it; appended to ``str(error)`` on its own line as ``Hint: ...``.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = str(message)
        self.hint = hint
        super().__init__(self.message if not hint else f"{self.message}\n{_HINT}{hint}")


class MissingInputError(UserInputError, FileNotFoundError):
    """A :class:`UserInputError` for a file or folder that is not there (also a ``FileNotFoundError``)."""


def set_debug(debug: bool = True) -> bool:
    """Make (or stop making) the hook print the full traceback of user errors too; returns ``debug``."""
    global _debug
    _debug = bool(debug)
    return _debug


def _debug_on() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def error_log_dir() -> Path:
    """Folder of the error logs: ``$MONAI_ASSIM_LOG_DIR``, else ``<tempfile.gettempdir()>/monai_assim_errors``."""
    return Path(os.environ.get(LOG_DIR_ENV) or Path(tempfile.gettempdir()) / "monai_assim_errors")


def find_user_error(error: BaseException | None) -> UserInputError | None:
    """The innermost :class:`UserInputError` in the ``__cause__`` / ``__context__`` chain of ``error``."""
    found, seen = None, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, UserInputError):
            found = error
        error = error.__cause__ or error.__context__
    return found


def _write_log(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> Path | None:
    try:
        folder = error_log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"error_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}.log"
        text = f"command: {' '.join(sys.argv)}\ncwd: {os.getcwd()}\n\n" + "".join(
            traceback.format_exception(kind, value, tb)
        )
        path.write_text(text)
        return path
    except OSError:  # a read-only temp folder must not hide the message
        return None


def _hook(previous):
    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        user_error = find_user_error(value)
        if user_error is None:
            previous(kind, value, tb)
            return
        if _debug_on():
            previous(kind, value, tb)
        log = _write_log(kind, value, tb)
        where = f"full traceback in {log}" if log is not None else "full traceback not written (log folder unwritable)"
        lines = [
            "",
            f"{where}; set {DEBUG_ENV}=1 to print it.",
            f"ERROR ({type(user_error).__name__}): {user_error.message}",
        ]
        if user_error.hint:
            lines.append(f"{_HINT}{user_error.hint}")
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()

    hook._monai_assim = True  # type: ignore[attr-defined]
    return hook


def install_excepthook() -> None:
    """Install the user-error hook on ``sys.excepthook`` once, chaining to the hook in place before."""
    if not getattr(sys.excepthook, "_monai_assim", False):
        sys.excepthook = _hook(sys.excepthook)
