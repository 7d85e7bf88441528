"""The checks of a resumed bundle run against what it recorded."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from monai_assim.bundle.data_choice import find_dataset
from monai_assim.bundle.run_summary import SUMMARY_FILE
from monai_assim.bundle.settings import (
    AUTO,
    RESUME_CHANGEABLE,
    same as _same,
)
from monai_assim.errors import MissingInputError, UserInputError

__all__ = ["ResumeChecks"]

logger = logging.getLogger("monai_assim.bundle.run_setup")


class ResumeChecks:
    """RunSetup's resume checks: the checkpoint, the recorded summary and data set, the settings that may change."""

    def _note_change(self, key: str, recorded: Any, new: Any) -> None:
        self.changed_on_resume[key] = {"recorded": recorded, "new": new}
        if key in RESUME_CHANGEABLE:
            logger.info(f"resume: {key} changes from the recorded {recorded!r} to {new!r} (allowed on resume).")
        else:
            self._conflicts.append((key, recorded, new))

    def _check_resume(self) -> int:
        last = self.ckpt_dir / "last.pt"
        if not last.is_file():
            raise MissingInputError(
                f"resume=True but there is no last checkpoint {last}.",
                "run without --resume to start afresh, or pass the --output_dir (or the --dataset_dir, "
                "--variant and --backbone) of the run to resume.",
            )
        from monai_assim.bundle.run_files import check_checkpoint

        check_checkpoint(
            last,
            "the run cannot resume from it: train afresh into another --output_dir (or without --resume, which "
            "starts this run over).",
        )
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        return int(ckpt.get("epoch", ckpt.get("trainer", {}).get("epoch", 0)))

    def _recorded_summary(self) -> dict[str, Any] | None:
        doc = self._current_summary_file()
        if doc is None or not isinstance(doc.get("settings"), dict):
            logger.warning(
                f"resume: the run summary {self.output_dir / SUMMARY_FILE} is missing, unreadable or holds no "
                "settings; the settings of this command are used as given, without checking them against the run's."
            )
            return None
        return doc

    def _resume_dataset(self, dataset_dir: str | os.PathLike | None) -> Path | None:
        """The data set of a resumed run: the recorded one for ``"auto"``, else ``dataset_dir`` (compared)."""
        recorded = self.recorded or {}
        recorded_demo = bool(recorded.get("demo_data"))
        recorded_dir = None if recorded_demo else recorded.get("dataset_dir")
        if str(dataset_dir).lower() == AUTO and (recorded_demo or recorded_dir):
            return None if recorded_demo else Path(recorded_dir)
        found = find_dataset(dataset_dir, self.bundle_root)
        new = None if found is None else str(found.expanduser().resolve())
        if (recorded_demo or recorded_dir) and new != (None if recorded_demo else str(Path(recorded_dir))):
            self.changed_on_resume["dataset_dir"] = {"recorded": recorded.get("dataset_dir"), "new": new or "demo"}
            self._conflicts.append(("dataset_dir", "demo" if recorded_demo else recorded_dir, new or "demo"))
        return found

    def _compare_run_arguments(self) -> None:
        """Seed and fractions (they decide the split) against the recorded ones."""
        recorded = self.recorded or {}
        pairs = [("seed", self.seed), ("val_fraction", self.val_fraction)]
        if not self.layout.has_test_split:
            pairs.append(("test_fraction", self.test_fraction))
        for key, new in pairs:
            if recorded.get(key) is not None and not _same(recorded[key], new):
                self._note_change(key, recorded[key], new)

    def _settle_conflicts(self) -> None:
        if not self._conflicts:
            return
        lines = [
            f"  - {key}: the run recorded {old!r}, this command gives {new!r}" for key, old, new in self._conflicts
        ]
        if self.resume_force:
            logger.warning(
                f"resume_force: resuming {self.output_dir} with settings that differ from the recorded ones:\n"
                + "\n".join(lines)
            )
            return
        keys = ", ".join(key for key, _, _ in self._conflicts)
        raise UserInputError(
            f"cannot resume the run in {self.output_dir}: {len(lines)} setting(s) differ from the ones it "
            f"recorded in {SUMMARY_FILE} ({keys}):\n" + "\n".join(lines),
            f"leave {keys} unset ('auto') to take the recorded values, or pass the recorded values; only "
            f"{', '.join(RESUME_CHANGEABLE)} may change on resume. To continue with the new values anyway "
            "pass --resume_force True (recorded in the summary), or train afresh into another --output_dir.",
        )
