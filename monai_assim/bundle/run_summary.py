"""The run summary of a bundle training run: its start, its epochs and warnings, its end."""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from monai_assim.bundle.data_choice import DEMO_NOTICE_FILE
from monai_assim.utils import atomic_write_text, get_rank

__all__ = ["HISTORY_KEYS", "SUMMARY_FILE", "RunSummary"]

logger = logging.getLogger("monai_assim.bundle.run_setup")

#: the run summary written into the output folder.
SUMMARY_FILE = "run_summary.json"

#: what a ``run_summary.json`` entry of ``"history"`` keeps of an earlier session of a resumed run.
HISTORY_KEYS = (
    "started",
    "finished",
    "status",
    "error",
    "settings",
    "seed",
    "dataset_dir",
    "resumed_from_epoch",
    "changed_on_resume",
    "epochs_completed",
    "iterations_completed",
    "max_epochs",
    "stopped_early",
    "best_metric",
    "best_epoch",
    "versions",
)


def _by_guard(warnings: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The warnings grouped by the guard that gave them, named as its log lines start."""
    out: dict[str, list[dict[str, Any]]] = {}
    for w in warnings:
        guard = "CATASTROPHIC OVERFITTING" if str(w.get("kind", "")).startswith("catastrophic") else "COLLAPSE GUARD"
        out.setdefault(guard, []).append(w)
    return out


def _guard_line(guard: str, found: list[dict[str, Any]], best: dict[str, Any] | None, summary: Path) -> str:
    """The end-of-run line of one guard; it says when the kept checkpoint is a later epoch that recovered."""
    epochs = sorted({int(w["epoch"]) for w in found})
    line = f"{guard}: {len(found)} warning(s) in epoch(s) {', '.join(map(str, epochs))}; "
    classes = None if best is None else best.get("val_pred_classes")
    if guard == "COLLAPSE GUARD" and best is not None and int(best["epoch"]) > epochs[-1] and (classes or 0) >= 2:
        return line + (
            f"the kept checkpoint is epoch {int(best['epoch'])}, later, which predicts {int(classes)} classes on the "
            f"validation set: the run recovered (details under 'warnings' in {summary})."
        )
    return line + f"see 'warnings' in {summary} before trusting this run."


class RunSummary:
    """RunSetup's run summary: the folder's lock, start, run, per-epoch records, finish and the next steps."""

    def record_epoch(self, record: dict[str, Any]) -> None:
        """
        Add one epoch's validation record (:class:`~monai_assim.engines.EpochSelection` calls this) to the
        summary's ``"epochs"`` list and rewrite the summary, so a killed run keeps every finished epoch.
        """
        self.epochs = [e for e in self.epochs if int(e.get("epoch", 0)) < int(record["epoch"])] + [dict(record)]
        if get_rank() == 0:
            self.write_summary(epochs=self.epochs)

    def record_warning(self, record: dict[str, Any]) -> None:
        """
        Add a warning of the :class:`~monai_assim.engines.CollapseGuard` or the
        :class:`~monai_assim.engines.CatastrophicOverfittingGuard` to the summary's ``"warnings"``.
        """
        self.warnings.append(dict(record))
        if get_rank() == 0:
            self.write_summary(warnings=self.warnings)

    def hold_folder(self) -> None:
        """
        Take the run folder's lock (rank 0; :class:`~monai_assim.bundle.run_lock.RunLock`): a second
        training into a folder that a live run holds stops here with an error naming that run, before it
        writes anything; the lock of a run that has ended (``--resume True`` after a kill) is taken over.
        """
        if get_rank() == 0:
            self.lock.acquire()

    def release_folder(self) -> None:
        """Give the run folder's lock back (end of the run; also done at exit)."""
        self.lock.release()

    def start(self) -> None:
        """
        Write the run's files once every input is known good: the split lists, ``DEMO_DATA.txt`` (or
        remove a stale one) and a fresh ``run_summary.json`` with ``"status": "running"``; on resume
        the previous summary becomes the last entry of ``"history"``.
        """
        lists = self.datalists
        if get_rank() != 0:
            return
        self.hold_folder()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        notice = self.output_dir / DEMO_NOTICE_FILE
        if self.demo:
            atomic_write_text(notice, self._demo_text())
        elif notice.exists():
            notice.unlink()
            logger.info(f"removed the stale {notice}: this run trains on the real data set {self.dataset_dir}.")
        self._plan.write(self.output_dir / "datalists")
        history = []
        if self.resume:
            previous = self._current_summary_file() or {}
            history = list(previous.get("history") or [])
            if previous:
                entry = {k: previous[k] for k in HISTORY_KEYS if k in previous}
                entry["checkpoint_epoch"] = self.resumed_from_epoch
                history.append(entry)
        self.write_summary(
            fresh=True,
            started=time.strftime("%Y-%m-%dT%H:%M:%S"),
            status="running",
            counts={k: len(v) for k, v in lists.items()},
            history=history,
            epochs=self.epochs,
            warnings=self.warnings,
        )

    def run(self, trainer: Any) -> None:
        """:meth:`start`, then ``trainer.run()``; an error while training marks the summary ``"failed"``."""
        self.start()
        try:
            trainer.run()
        except BaseException as e:
            if get_rank() == 0:
                status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                self.write_summary(
                    status=status, error=f"{type(e).__name__}: {e}", failed_at=time.strftime("%Y-%m-%dT%H:%M:%S")
                )
            self.release_folder()
            raise

    def _current_summary_file(self) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.output_dir / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def summary(self) -> dict[str, Any]:
        """The run summary as a dict (what :meth:`write_summary` writes)."""
        import monai
        import torchvision

        import monai_assim

        return {
            "demo_data": self.demo,
            "modality": self.modality,
            "dataset": self.layout.title,
            "dataset_dir": str(self.dataset_dir),
            "output_dir": str(self.output_dir),
            "bundle_root": str(self.bundle_root),
            "class_names": list(self.layout.class_names),
            "settings": dict(self.settings),
            "selection": self.selection(),
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": None if self.layout.has_test_split else self.test_fraction,
            "own_test_split": self.layout.has_test_split,
            "resumed_from_epoch": self.resumed_from_epoch,
            "changed_on_resume": dict(self.changed_on_resume) if self.resume else None,
            "resume_forced": bool(self.resume and self.resume_force and self._conflicts),
            "versions": {
                "monai_assim": monai_assim.__version__,
                "monai": monai.__version__,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "python": platform.python_version(),
            },
        }

    def write_summary(self, fresh: bool = False, **extra: Any) -> Path:
        """
        Write (replace, atomically) ``<output_dir>/run_summary.json`` with :meth:`summary` and ``extra``,
        updating the existing summary unless ``fresh``.
        """
        path = self.output_dir / SUMMARY_FILE
        doc: dict[str, Any] = {} if fresh else (self._current_summary_file() or {})
        doc.update(self.summary())
        doc.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
        doc.update(extra)
        return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")

    def finish(self, trainer: Any, best_saver: Any = None, other_saver: Any = None) -> None:
        """
        Complete the run summary after training: epochs completed, early stop, the epoch ``best.pt`` holds
        and its validation metrics (``best_metric`` is the rule's metric, ``val_robust_acc`` or ``val_acc``,
        at that epoch), and the epoch of the other rule's checkpoint (``other_saver``).
        """
        if get_rank() != 0:
            return
        state = trainer.state
        by_epoch = {int(e["epoch"]): e for e in self.epochs if "epoch" in e}
        selection = self.selection()
        best_epoch = getattr(best_saver, "best_epoch", None)
        best = by_epoch.get(int(best_epoch)) if best_epoch is not None else None
        metric = selection["metric"]
        selection["best_epoch"] = best_epoch
        if other_saver is not None and "robust_validation" in selection:
            selection["other_checkpoint"] = {
                "file": self.other_checkpoint[0],
                "epoch": getattr(other_saver, "best_epoch", None),
            }
        best_metric = best.get(metric) if best is not None else getattr(best_saver, "best_metric", None)
        self.write_summary(
            selection=selection,
            best_validation=best,
            status="completed",
            finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
            epochs_completed=int(state.epoch),
            iterations_completed=int(state.iteration),
            max_epochs=int(state.max_epochs),
            stopped_early=int(state.epoch) < int(state.max_epochs),
            best_metric=best_metric,
            best_epoch=best_epoch,
            best_metric_name=metric if best_saver is not None else None,
            warnings=self.warnings,
        )
        for guard, found in _by_guard(self.warnings).items():
            logger.warning(_guard_line(guard, found, best, self.output_dir / SUMMARY_FILE))
        self.release_folder()
        if self.demo:
            logger.warning(
                f"DEMO DATA: this run trained on the synthetic demo set; see {self.output_dir / DEMO_NOTICE_FILE}"
            )
        logger.info(self.next_steps(best_metric, metric, best_epoch, int(state.epoch)))

    def next_steps(self, best_metric: Any, metric: str, best_epoch: Any, epochs: int) -> str:
        """
        The block that ends a training run: where the run is, its best validation metric, and the commands
        that evaluate it, apply it to images and export it (they need only the run folder, since evaluate,
        inference and export read the network's settings from its summary).
        """

        def shown(path: Path) -> str:
            try:
                return str(path.relative_to(Path.cwd()))
            except ValueError:
                return str(path)

        out, root = shown(self.output_dir), shown(self.bundle_root)
        best = f"{best_metric:.4f}" if isinstance(best_metric, float) else str(best_metric)
        bar = "=" * 100
        return "\n".join(
            [
                bar,
                f"training finished{' (DEMO DATA)' if self.demo else ''}: {epochs} epochs",
                f"  run folder: {out}",
                f"  best {metric}: {best} (epoch {best_epoch}, checkpoints/best.pt; summary in {SUMMARY_FILE})",
                "next steps:",
                "  # clean and adversarial accuracy on the test split -> <run>/eval/",
                f"  python -m monai.bundle run --config_file {root}/evaluate.json --output_dir {out}",
                "  # class probabilities of images -> <run>/inference/predictions.csv",
                f"  python -m monai.bundle run --config_file {root}/inference.json --output_dir {out} --input <images>",
                "  # a stand-alone bundle in MONAI's model-zoo layout",
                f"  python -m monai_assim.bundle export {out} exports/{self.output_dir.name}",
                bar,
            ]
        )
