"""The outputs of an inference run: ``predictions.csv`` (one row per readable image) and ``errors.csv``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.handlers import from_engine
from monai.utils import IgniteInfo, min_version, optional_import

from monai_assim.data.readable import ERROR_KEY, SOURCE_KEY, split_readable, unreadable_message
from monai_assim.data.splits import check_image
from monai_assim.errors import UserInputError
from monai_assim.utils import atomic_write_csv, get_rank

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ERRORS_COLUMNS", "PredictionSaver", "prediction_columns"]

#: the columns of ``errors.csv``.
ERRORS_COLUMNS = ("file", "reason")


def prediction_columns(class_names: Sequence[str]) -> tuple[str, ...]:
    """The columns of ``predictions.csv``: file, predicted class name and index, ``prob_<class name>`` per class."""
    return ("file", "predicted_class", "predicted_index", *(f"prob_{name}" for name in class_names))


def _sources(batch: Sequence[dict]) -> list[tuple[str, str]]:
    """``(file, load error or "")`` of each item of a decollated batch (see ``ReadableDataset``)."""
    out = []
    for item in batch:
        if SOURCE_KEY in item:
            out.append((str(item[SOURCE_KEY]), str(item.get(ERROR_KEY, ""))))
        else:  # a plain monai.data.Dataset: the file the image was read from
            out.append((str(item["image"].meta["filename_or_obj"]), ""))
    return out


class PredictionSaver:
    """
    Write the class probabilities of an inference run to ``output_dir/filename`` (``predictions.csv``)
    once, atomically, when the run completes, and the files that could not be read to
    ``output_dir/errors_filename`` (``errors.csv``).

    ``predictions.csv`` has a header row and one row per readable image, in the order of the data:
    ``file, predicted_class, predicted_index, prob_<class 0 name>, prob_<class 1 name>, ...`` (the
    probabilities are the ``pred`` output, e.g. after a softmax, as float32 in their shortest exact
    form). ``errors.csv`` has the header ``file, reason`` and one row per unreadable file (none: the
    header alone).

    Unreadable files are found in two places: :meth:`select_readable` decodes every file of the
    datalist before the run (:func:`monai_assim.data.split_readable`), and items of a
    :class:`monai_assim.data.ReadableDataset` that failed to load during the run carry the failure
    (their output is dropped). The run fails (``ValueError`` naming every unreadable file and its
    reason, after ``errors.csv`` is written) when no image can be read, or, with ``strict=True``, when
    any cannot. Outputs of a previous run are removed first (:meth:`remove_outputs`: the bundle calls
    it in its ``initialize`` list, and :meth:`select_readable` and the engine's start call it again),
    so that a failed run never leaves an old ``predictions.csv`` that could be taken for its result.

    Why not MONAI's ``ClassificationSaver``: it appends rows without a header or class names and
    writes the file in place, and it has no notion of files that could not be read.

    Under ``torch.distributed`` the rows of all ranks are gathered (duplicates of a padding
    ``DistributedSampler`` dropped, rows sorted by file) and only ``save_rank`` writes.

    Args:
        output_dir: folder of the two files, created when missing.
        class_names: name of each class, in the order of the network's outputs.
        filename: file name of the predictions.
        errors_filename: file name of the list of unreadable files.
        strict: fail when any file cannot be read (default: skip it and list it); a bool or
            ``"true"`` / ``"false"``.
        output_transform: ``engine.state.output`` -> list of per-item class probabilities ``(num_classes,)``;
            default ``from_engine(["pred"])``.
        batch_transform: decollated batch -> list of ``(file, load error or "")``; the default reads the
            keys of ``ReadableDataset`` (or the image's ``filename_or_obj`` meta data).
        save_rank: the rank that writes under ``torch.distributed``.
        name: logger name, default ``monai_assim.handlers.prediction_saver``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        filename: str = "predictions.csv",
        errors_filename: str = "errors.csv",
        strict: bool = False,
        output_transform: Callable | None = None,
        batch_transform: Callable = _sources,
        save_rank: int = 0,
        name: str | None = None,
    ) -> None:
        if isinstance(class_names, str) or len(class_names) < 2 or len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must list at least two distinct class names, got {class_names!r}.")
        if isinstance(strict, str):
            if strict.lower() not in ("true", "false"):
                raise ValueError(f"strict must be True or False, got {strict!r}.")
            strict = strict.lower() == "true"
        for f in (filename, errors_filename):
            if not f or os.sep in f:
                raise ValueError(f"file names must be plain names, got {f!r}.")
        if filename == errors_filename:
            raise ValueError(f"filename and errors_filename must differ, both are {filename!r}.")
        self.output_dir = Path(output_dir)
        self.class_names = [str(c) for c in class_names]
        self.filename = filename
        self.errors_filename = errors_filename
        self.strict = bool(strict)
        self.output_transform = output_transform or from_engine(["pred"])
        self.batch_transform = batch_transform
        self.save_rank = save_rank
        self.logger = logging.getLogger(name or __name__)
        self.unreadable: list[tuple[str, str]] = []  # found by select_readable, before the run
        self._rows: list[tuple[str, list[float]]] = []
        self._failed: list[tuple[str, str]] = []  # failed to load during the run

    @property
    def path(self) -> Path:
        """Where the predictions are written."""
        return self.output_dir / self.filename

    @property
    def errors_path(self) -> Path:
        """Where the unreadable files are listed."""
        return self.output_dir / self.errors_filename

    def remove_outputs(self) -> None:
        """Remove the predictions and error list of a previous run (on ``save_rank``)."""
        if get_rank() == self.save_rank:
            for path in (self.path, self.errors_path):
                if path.is_file():
                    self.logger.info(f"removing the previous run's {path}")
                path.unlink(missing_ok=True)

    def select_readable(
        self, datalist: Sequence[dict], key: str = "image", check: Callable[[str], object] = check_image
    ) -> list[dict]:
        """
        The items of ``datalist`` whose ``key`` file decodes (``check``, default
        :func:`monai_assim.data.check_image`); the others are kept for ``errors.csv`` and logged.
        Removes the previous run's outputs first. ``ValueError`` naming every unreadable file (after
        writing ``errors.csv``) when none is readable, or when any is not and ``strict``.
        """
        self.remove_outputs()
        readable, self.unreadable = split_readable(datalist, key, check)
        if self.unreadable and (self.strict or not readable):
            self._write_errors(self.unreadable)
            what = (
                f"none of the {len(datalist)} input images can be read"
                if not readable
                else f"strict mode: {len(self.unreadable)} of {len(datalist)} input images cannot be read"
            )
            raise UserInputError(
                unreadable_message(self.unreadable, what) + f"\nThe list is in {self.errors_path}.",
                "repair or remove these files" + (" (or drop --strict True to skip them)." if readable else "."),
            )
        return readable

    def attach(self, engine: Engine) -> None:
        """Collect at ``ITERATION_COMPLETED``, write at ``COMPLETED``; start afresh at ``STARTED``."""
        if not engine.has_event_handler(self._started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._started)
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        if not engine.has_event_handler(self._finalize, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self._finalize)

    def _started(self, engine: Engine) -> None:
        self._rows, self._failed = [], []
        self.remove_outputs()

    def __call__(self, engine: Engine) -> None:
        """Keep the probabilities of each item of the iteration that loaded, and the failures of the others."""
        probs = self.output_transform(engine.state.output)
        sources = self.batch_transform(engine.state.batch)
        if len(probs) != len(sources):
            raise ValueError(
                f"{len(probs)} outputs but {len(sources)} batch items in iteration {engine.state.iteration}."
            )
        for p, (source, error) in zip(probs, sources):
            if error:
                self._failed.append((source, error))
                continue
            values = torch.as_tensor(p).detach().float().flatten().cpu().tolist()
            if len(values) != len(self.class_names):
                raise ValueError(
                    f"the network gives {len(values)} class probabilities for {source} but "
                    f"{len(self.class_names)} class names are given ({self.class_names}); set class_names to match."
                )
            self._rows.append((source, values))

    def _gather(self) -> tuple[list[tuple[str, list[float]]], list[tuple[str, str]]]:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self._rows, self._failed
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (self._rows, self._failed))
        rows = dict(r for part in gathered for r in part[0])
        failed = dict(f for part in gathered for f in part[1])
        return sorted(rows.items()), sorted(failed.items())

    def _write_errors(self, errors: Sequence[tuple[str, str]]) -> None:
        if get_rank() == self.save_rank:
            atomic_write_csv(self.errors_path, ERRORS_COLUMNS, errors)

    def _finalize(self, engine: Engine) -> None:
        rows, failed = self._gather()
        errors = [*self.unreadable, *failed]
        self._write_errors(errors)
        if errors:
            self.logger.warning(f"{len(errors)} unreadable image(s) skipped, listed in {self.errors_path}")
        if not rows or (self.strict and errors):
            what = (
                "no input image could be read"
                if not rows
                else f"strict mode: {len(errors)} input images cannot be read"
            )
            raise UserInputError(
                unreadable_message(errors, what) + f"\nThe list is in {self.errors_path}.",
                "repair or remove these files" + (" (or drop --strict True to skip them)." if rows else "."),
            )
        if get_rank() == self.save_rank:
            table = []
            for source, values in rows:
                index = max(range(len(values)), key=values.__getitem__)
                table.append([source, self.class_names[index], index, *(str(np.float32(v)) for v in values)])
            atomic_write_csv(self.path, prediction_columns(self.class_names), table)
            self.logger.info(f"predictions of {len(rows)} image(s) written to {self.path}")
