"""Atomic checkpoint saving for bundles: a ``last`` checkpoint every epoch and a ``best`` by a metric."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_assim.utils import atomic_torch_save, get_rank, unwrap_module

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["AtomicCheckpointSaver", "atomic_torch_save", "checkpoint_objects"]


def checkpoint_objects(**objects: Any) -> dict[str, Any]:
    """
    The objects a training checkpoint holds (``save_dict`` of the saver, ``load_dict`` of MONAI's
    ``CheckpointLoader``): those given, less the ones that are ``None``, an optional part such as the
    learning-rate scheduler of a run without a schedule. A run that had no such part writes no key for it,
    so its checkpoints, and those of runs from before the part existed, load with the same dict.
    """
    return {name: obj for name, obj in objects.items() if obj is not None}


def _state_dict(obj: Any) -> Any:
    """``obj.state_dict()``, unwrapping DataParallel / DistributedDataParallel as ignite's Checkpoint does."""
    return unwrap_module(obj, compiled=False).state_dict() if isinstance(obj, torch.nn.Module) else obj.state_dict()


class AtomicCheckpointSaver:
    """
    Save the ``state_dict`` of the objects in ``save_dict`` to ``save_dir/filename``, atomically
    (:func:`atomic_torch_save`), in one of two modes:

    - ``key_metric_name=None`` ("last"): every ``save_interval`` epochs of the attached engine (the
      trainer), overwriting the same file, so that a killed run can resume from its latest epoch with
      MONAI's ``CheckpointLoader``;
    - ``key_metric_name="val_acc"`` ("best"): attached to an evaluator, whenever
      ``engine.state.metrics[key_metric_name]`` improves on the best value seen so far (strictly, or
      ``>=`` with ``key_metric_greater_or_equal``).

    The file is a dict ``{name: state_dict}`` (the layout of ignite's ``Checkpoint`` and MONAI's
    ``CheckpointSaver``, so ``CheckpointLoader`` and ``python -m monai.bundle ckpt_export --key_in_ckpt
    network`` read it), plus ``"epoch"`` and, in "best" mode, the metric value under
    ``key_metric_name``.

    Why not MONAI's ``CheckpointSaver``: it writes through ignite's ``DiskSaver(atomic=False)``, and
    ignite's ``Checkpoint`` removes the previous file before writing the next one, so a process
    killed at the wrong moment leaves a truncated file or no checkpoint at all.

    The saver is itself a stateful object (``state_dict`` / ``load_state_dict`` hold the best value
    and its epoch): put the "best" saver in the ``save_dict`` of the "last" saver and in the
    ``load_dict`` of the resuming ``CheckpointLoader``, so that a resumed run does not overwrite a
    better ``best`` checkpoint. Under ``torch.distributed`` only ``save_rank`` writes; every rank
    tracks the metric.

    Args:
        save_dir: folder of the checkpoint, created when missing.
        save_dict: name -> object with ``state_dict()`` (network, optimizer, trainer, another saver);
            ``None`` values are skipped.
        filename: file name inside ``save_dir``.
        key_metric_name: metric that selects the best checkpoint; ``None`` saves every interval.
        key_metric_greater_or_equal: also save when the metric equals the best so far.
        save_interval: save every this many epochs ("last" mode).
        save_rank: the rank that writes under ``torch.distributed``.
        name: logger name, default ``monai_assim.handlers.checkpoint``.
        require_metric: "best" mode: a missing ``key_metric_name`` is an error (default); ``False`` skips
            the epoch instead, for a saver that applies only when an optional metric is computed (the
            bundles' ``best_robust.pt``, saved only when validation measures robust accuracy).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "last.pt",
        key_metric_name: str | None = None,
        key_metric_greater_or_equal: bool = False,
        save_interval: int = 1,
        save_rank: int = 0,
        name: str | None = None,
        require_metric: bool = True,
    ) -> None:
        if not isinstance(save_dict, Mapping) or not save_dict:
            raise ValueError("save_dict must be a non-empty mapping of name -> object with state_dict().")
        for k, v in save_dict.items():
            if v is not None and not callable(getattr(v, "state_dict", None)):
                raise TypeError(f"save_dict[{k!r}] ({type(v).__name__}) has no state_dict() method.")
        if not filename or os.sep in filename:
            raise ValueError(f"filename must be a plain file name, got {filename!r}.")
        if int(save_interval) < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}.")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.filename = filename
        self.key_metric_name = key_metric_name
        self.key_metric_greater_or_equal = key_metric_greater_or_equal
        self.save_interval = int(save_interval)
        self.save_rank = save_rank
        self.logger = logging.getLogger(name or __name__)
        self.require_metric = bool(require_metric)
        self.best_metric: float | None = None
        self.best_epoch: int | None = None

    @property
    def path(self) -> Path:
        """Where the checkpoint is written."""
        return self.save_dir / self.filename

    def state_dict(self) -> dict:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch, "key_metric_name": self.key_metric_name}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """
        Restore the best value and epoch; a state recorded for another key metric (a checkpoint written
        before the run's selection rule changed; states without a name were written for ``"val_acc"``)
        is not comparable, so the best starts afresh, with a warning.
        """
        recorded = state_dict.get("key_metric_name", "val_acc" if state_dict.get("best_metric") is not None else None)
        if recorded is not None and self.key_metric_name is not None and recorded != self.key_metric_name:
            self.logger.warning(
                f"{self.filename}: the checkpoint's best was recorded for {recorded!r}, this saver follows "
                f"{self.key_metric_name!r}; the best starts afresh (the next epoch writes {self.path})."
            )
            self.best_metric = self.best_epoch = None
            return
        self.best_metric = state_dict.get("best_metric")
        self.best_epoch = state_dict.get("best_epoch")

    def attach(self, engine: Engine) -> None:
        """Register at ``EPOCH_COMPLETED`` (every ``save_interval`` epochs in "last" mode)."""
        if get_rank() == self.save_rank:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.save_dir.glob(f".{self.filename}.*.tmp"):  # left by a process killed mid-write
                stale.unlink(missing_ok=True)
        event = Events.EPOCH_COMPLETED
        if self.key_metric_name is None and self.save_interval > 1:
            event = Events.EPOCH_COMPLETED(every=self.save_interval)
        if not engine.has_event_handler(self, event):
            engine.add_event_handler(event, self)

    def _improved(self, value: float) -> bool:
        if self.best_metric is None:
            return True
        if self.key_metric_greater_or_equal:
            return value >= self.best_metric
        return value > self.best_metric

    def __call__(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        extra: dict[str, Any] = {"epoch": epoch}
        if self.key_metric_name is not None:
            metrics = engine.state.metrics
            if self.key_metric_name not in metrics:
                if not self.require_metric:
                    return
                raise KeyError(
                    f"key metric {self.key_metric_name!r} not in engine.state.metrics ({', '.join(metrics) or 'none'})."
                )
            value = float(metrics[self.key_metric_name])
            if not self._improved(value):
                return
            self.best_metric, self.best_epoch = value, epoch
            extra[self.key_metric_name] = value
        if get_rank() != self.save_rank:
            return
        checkpoint = {k: _state_dict(v) for k, v in self.save_dict.items() if v is not None}
        checkpoint.update(extra)
        atomic_torch_save(checkpoint, self.path)
        what = f"{self.key_metric_name}={extra[self.key_metric_name]:.4f}, " if self.key_metric_name else ""
        self.logger.info(f"saved checkpoint {self.path} ({what}epoch {epoch})")
