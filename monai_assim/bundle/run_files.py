"""
Reading what a bundle training run left in its output folder: summary, split lists, checkpoints, and
the images an inference run classifies.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_assim.bundle.run_setup import SUMMARY_FILE
from monai_assim.bundle.settings import RECORDED_BEFORE
from monai_assim.errors import MissingInputError, UserInputError

__all__ = [
    "CHECKPOINT_NAMES",
    "check_checkpoint",
    "check_writable_dir",
    "checkpoint_path",
    "list_images",
    "load_datalist",
    "load_run_summary",
    "recorded_setting",
    "run_class_names",
    "run_setting",
]

logger = logging.getLogger(__name__)


def _no_run(output_dir: Path, what: Path) -> MissingInputError:
    return MissingInputError(
        f"{what} not found: {output_dir} holds no finished training run.",
        "train first, e.g. `python -m monai.bundle run --config_file bundles/<modality>/train.json` with the same "
        "--variant/--backbone/--dataset_dir (or pass --output_dir <run folder>).",
    )


def check_writable_dir(path: str | os.PathLike, option: str = "--output_dir") -> str:
    """
    Check that the folder ``path`` can be created (where absent) and written, and return ``str(path)``
    (for a config expression): the missing folders are made, a probe file is written and removed, and the folders made
    are removed again, so that the check leaves nothing behind (a fresh run that fails on its inputs
    leaves no run folder). Trying is the only reliable test (permissions, read-only mounts, ``/proc``).

    Raises:
        UserInputError: naming the folder and why it cannot be written, with a hint naming ``option``.
    """
    folder = Path(path).expanduser().absolute()
    created: list[Path] = []
    try:
        missing, existing = [], folder
        while not existing.exists():
            missing.append(existing)
            existing = existing.parent
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file, not a folder")
        for sub in reversed(missing):
            sub.mkdir()
            created.append(sub)
        fd, probe = tempfile.mkstemp(prefix=".write_check_", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = f"{e.strerror}: {e.filename}" if e.strerror and e.filename else str(e)
        raise UserInputError(
            f"output folder {folder} cannot be created or written ({reason}).",
            f"pass {option} <a folder you can write to>, or make {folder} writable.",
        ) from e
    finally:
        for sub in reversed(created):
            try:
                sub.rmdir()
            except OSError:
                pass
    return str(path)


def load_run_summary(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``run_summary.json`` a training run wrote to ``output_dir``."""
    output_dir = Path(output_dir)
    path = output_dir / SUMMARY_FILE
    if not path.is_file():
        raise _no_run(output_dir, path)
    return json.loads(path.read_text())


_MISSING = object()


def recorded_setting(summary: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    """
    The setting ``key`` a run summary records: its ``"settings"`` entry; ``num_classes`` is the number of its
    ``class_names``; a setting the summary lacks because it was written before the setting existed takes the
    value such runs used (:data:`~monai_assim.bundle.settings.RECORDED_BEFORE`).

    Raises:
        KeyError: the summary records no value of ``key`` (and ``default`` is not given).
    """

    settings = summary.get("settings") or {}
    if key in settings:
        return settings[key]
    if key == "num_classes" and summary.get("class_names"):
        return len(summary["class_names"])
    if key in RECORDED_BEFORE:
        return RECORDED_BEFORE[key]
    if default is not _MISSING:
        return default
    raise KeyError(key)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _conflict(key: str, value: Any, recorded: Any, output_dir: str | os.PathLike) -> UserInputError:
    return UserInputError(
        f"--{key} {_shown(value)} conflicts with the run's {key} {_shown(recorded)} "
        f"({Path(output_dir) / SUMMARY_FILE}).",
        f"leave --{key} out to use the run's, or pass the --output_dir of a run trained with {key} {_shown(value)}.",
    )


def run_setting(value: Any, output_dir: str | os.PathLike, key: str) -> Any:
    """
    A setting of the network or its preprocessing (variant, backbone, class count, sizes of T and C, image
    size, mean, std) for evaluate and inference: when ``value`` is ``"auto"``, the value the training run in
    ``output_dir`` recorded (:func:`recorded_setting`; logged, so that the log shows every value an ``"auto"``
    became); an explicit ``value`` must equal the recorded one.

    Raises:
        UserInputError: an explicit ``value`` differs from the run's (the message names both), or the run
            records no ``key`` and ``value`` is ``"auto"``.
    """
    from monai_assim.bundle.settings import same as _same

    auto = isinstance(value, str) and value.lower() == "auto"
    path = Path(output_dir) / SUMMARY_FILE
    if not auto and not path.is_file():
        return value  # nothing to compare with (the errors of a missing run come from the run's files)
    try:
        recorded = recorded_setting(load_run_summary(output_dir), key)
    except KeyError:
        if not auto:
            return value
        raise UserInputError(f"the run summary {path} records no setting {key!r}.", f"pass --{key} <value>.") from None
    if auto:
        logger.info(f"setting {key} = {recorded!r}   ('auto': from {path})")
        return recorded
    if not _same(value, recorded):
        raise _conflict(key, value, recorded, output_dir)
    return value


def run_class_names(value: Any, output_dir: str | os.PathLike) -> list[str]:
    """
    ``value`` (a list of class names, in the order of the network's outputs), or, when it is ``"auto"``,
    the ``class_names`` the training run in ``output_dir`` recorded in its summary; explicit names must be
    the run's (an error names both lists).
    """
    auto = isinstance(value, str) and value.lower() == "auto"
    recorded = None
    if auto or (Path(output_dir) / SUMMARY_FILE).is_file():
        recorded = load_run_summary(output_dir).get("class_names")
    if auto:
        if recorded is None:
            raise UserInputError(
                f"the run summary in {output_dir} has no 'class_names'.",
                "pass them, e.g. --class_names \"['normal', 'pneumonia']\".",
            )
        value = recorded
    if isinstance(value, str) or not all(isinstance(c, str) for c in value):
        raise UserInputError(
            f"class_names must be a list of class names or 'auto', got {value!r}.",
            "e.g. --class_names \"['normal', 'abnormal']\"",
        )
    if recorded is not None and list(value) != list(recorded):
        raise _conflict("class_names", list(value), list(recorded), output_dir)
    return list(value)


def load_datalist(output_dir: str | os.PathLike, split: str = "test") -> list[dict]:
    """The ``split`` list (``{"image", "label"}`` dicts) that the training run in ``output_dir`` recorded."""
    output_dir = Path(output_dir)
    path = output_dir / "datalists" / "splits.json"
    if not path.is_file():
        raise _no_run(output_dir, path)
    doc = json.loads(path.read_text())
    if split not in doc:
        raise UserInputError(f"split {split!r} not in {path}.", "pass --split train, validation or test.")
    return [{"image": d["image"], "label": int(d["label"])} for d in doc[split]]


def check_checkpoint(path: str | os.PathLike, hint: str | None = None) -> str:
    """
    Check that the checkpoint file ``path`` can be read (``torch.load(..., weights_only=True)``, as MONAI's
    ``CheckpointLoader`` reads it) and return ``str(path)``; the whole file is read once.

    Raises:
        UserInputError: naming the file and saying that it is unreadable (truncated or corrupt), with the
            reader's first line of error; the hint (default) points at the run's other checkpoint or a retrain.
    """
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (zip reader, unpickler, OS errors: all mean "cannot be read")
        reason = (str(e).strip().splitlines() or [""])[0]
        if hint is None:
            other = "best" if Path(path).name == "last.pt" else "last"
            hint = (
                f"pass --checkpoint {other} to use the run's {other} checkpoint, or retrain (train.json into a "
                "new --output_dir)."
            )
        raise UserInputError(
            f"checkpoint {path} is unreadable (truncated or corrupt?): {type(e).__name__}: {reason}", hint
        ) from e
    return str(path)


def checkpoint_epoch(path: str | os.PathLike) -> int | None:
    """
    The training epoch a checkpoint file of a run records (``"epoch"``, as
    :class:`monai_assim.handlers.checkpoint.AtomicCheckpointSaver` writes it into ``best.pt``, ``last.pt`` and
    the other rule's checkpoint); None for a file that records none (an exported bundle's bare state dict) or
    cannot be read.
    """
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (informative only: the loader reports an unreadable file itself)
        return None
    if not isinstance(ckpt, dict):
        return None
    epoch = ckpt.get("epoch")
    return None if epoch is None else int(epoch)


#: checkpoint names :func:`checkpoint_path` resolves inside ``<output_dir>/checkpoints``
CHECKPOINT_NAMES = ("best", "last", "best_clean", "best_robust")


def checkpoint_path(output_dir: str | os.PathLike, checkpoint: str = "best") -> str:
    """
    ``<output_dir>/checkpoints/<name>.pt`` for a name of :data:`CHECKPOINT_NAMES` (``"best"``: the epoch the
    run's selection rule kept; ``"last"``; ``"best_clean"`` / ``"best_robust"``: the other rule's choice,
    saved when validation measured robust accuracy), otherwise ``checkpoint`` itself as a path; it must exist
    and be readable (:func:`check_checkpoint`).
    """
    output_dir = Path(output_dir)
    named = checkpoint in CHECKPOINT_NAMES
    path = output_dir / "checkpoints" / f"{checkpoint}.pt" if named else Path(checkpoint)
    if not path.is_file():
        if checkpoint in ("best", "last"):
            raise _no_run(output_dir, path)
        hint = (
            "the run saved it only when validation measured robust accuracy (adversarial training or "
            "--select_by robust); pass --checkpoint best or last."
            if named
            else f"pass --checkpoint {', '.join(CHECKPOINT_NAMES)} or an existing file."
        )
        raise MissingInputError(f"checkpoint {path} not found.", hint)
    return check_checkpoint(path)


def list_images(
    inputs: str | os.PathLike | Sequence[str | os.PathLike], output_dir: str | os.PathLike | None = None
) -> list[dict]:
    """
    The images an inference run classifies, as ``[{"image": path}, ...]`` sorted by path.

    ``inputs`` may be ``"auto"`` (the test split recorded by the training run in ``output_dir``), a
    folder (searched recursively for PNG/JPEG/DICOM/NIfTI files with the rule training uses,
    :func:`monai_assim.data.is_image_file`: segmentation masks named ``*_mask*`` and hidden files and
    folders such as ``.ipynb_checkpoints/`` or ``._*`` are skipped), one image file, or a list of image
    files and folders.
    """
    from monai_assim.data import IMAGE_SUFFIXES, is_image_file

    if inputs is None:
        raise UserInputError("no input given.", "pass --input <folder, image file or list of them>.")
    if isinstance(inputs, (str, os.PathLike)) and str(inputs).lower() == "auto":
        if output_dir is None:
            raise ValueError("inputs='auto' needs the output_dir of a training run.")
        return [{"image": d["image"]} for d in load_datalist(output_dir, "test")]
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise UserInputError("no inputs given (an empty list).", "pass --input <folder, image file or list of them>.")

    found: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if is_image_file(p, root=path))
            if not files:
                raise UserInputError(
                    f"folder {path} contains no images.",
                    f"expected {' / '.join(IMAGE_SUFFIXES)} files (hidden files and *_mask* files are skipped).",
                )
            found.extend(files)
        elif path.is_file():
            if not path.name.lower().endswith(IMAGE_SUFFIXES):
                raise UserInputError(f"{path} is not an image file.", f"expected one of {' / '.join(IMAGE_SUFFIXES)}.")
            found.append(path)
        else:
            raise MissingInputError(
                f"input {path} does not exist.", "pass --input <an image file or a folder of images>."
            )
    return [{"image": str(p.resolve())} for p in sorted(set(found))]
