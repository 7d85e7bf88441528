"""The data a bundle run trains on: the data set or the synthetic demo set, and its split lists."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from monai_assim.bundle.settings import (
    AUTO,
)
from monai_assim.errors import UserInputError
from monai_assim.utils import get_rank

__all__ = ["DEMO_NOTICE_FILE", "DataChoice", "find_dataset"]

logger = logging.getLogger("monai_assim.bundle.run_setup")


def _barrier() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def find_dataset(dataset_dir: str | os.PathLike | None, bundle_root: str | os.PathLike) -> Path | None:
    """
    The data set folder a run uses, or ``None`` for the synthetic demo set.

    - ``"auto"`` (the bundles' default): ``<bundle_root>/data`` when that folder exists, else ``None``;
    - ``"demo"`` or ``None``: ``None`` (force the demo set);
    - anything else: that path, which must then hold the data set (checked when the split lists are
      built, with an error naming the path), never silently replaced by the demo set.
    """
    if dataset_dir is None or str(dataset_dir).lower() == "demo":
        return None
    if str(dataset_dir).lower() == AUTO:
        default = Path(bundle_root) / "data"
        return default if default.is_dir() else None
    return Path(dataset_dir).expanduser()


#: file written into the output folder of a run trained on the synthetic demo set.
DEMO_NOTICE_FILE = "DEMO_DATA.txt"


class DataChoice:
    """RunSetup's data choice: the data folder's check, the split lists (built once), the demo set and its notice."""

    def _check_data_folder(self) -> None:
        """
        The data set folder and its layout (folders only, no image decoded), checked before the ImageNet
        weights so that a wrong ``--dataset_dir`` is reported as such and not as missing weights; the
        images themselves are checked when the split lists are built.
        """
        if not self.demo:
            from monai_assim.data import discover_images

            discover_images(self.dataset_dir, self.modality, check_images=False)

    @property
    def datalists(self) -> dict[str, list[dict]]:
        """``{"train", "validation", "test"}`` lists of ``{"image", "label"}`` (built once, see class doc)."""
        if self._datalists is None:
            self._datalists = self._build()
        return self._datalists

    def _build(self) -> dict[str, list[dict]]:
        from monai_assim.data import make_synthetic_dataset, plan_datalists

        if self.demo:
            self.hold_folder()  # before the demo set is written into the folder
        if self.demo and get_rank() == 0:
            self._announce_demo()
            n, size = int(self.demo_defaults.get("n_per_class", 40)), int(self.demo_defaults.get("file_size", 96))
            make_synthetic_dataset(self.dataset_dir, self.modality, n_per_class=n, size=size, seed=self.seed)
        _barrier()
        self._plan = plan_datalists(
            self.dataset_dir,
            self.modality,
            seed=self.seed,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            max_per_class=self.settings["max_per_class"],
            check_images=self.check_images,
        )
        if self.resume:
            self._compare_split_lists(self._plan.datalists)
        return self._plan.datalists

    def _compare_split_lists(self, lists: Mapping[str, list[dict]]) -> None:
        """On resume: the split lists must be those the run recorded (the data set folder may have changed)."""
        path = self.output_dir / "datalists" / "splits.json"
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        diffs = []
        for split, items in lists.items():
            new_set = {(d["image"], int(d["label"])) for d in items}
            old_set = {(d["image"], int(d["label"])) for d in old.get(split, [])}
            if new_set != old_set:
                diffs.append(
                    f"  - {split}: {len(new_set - old_set)} images not in the recorded list, "
                    f"{len(old_set - new_set)} recorded images no longer in it"
                )
        if not diffs:
            return
        if self.resume_force:
            logger.warning(f"resume_force: the split lists differ from the recorded {path}:\n" + "\n".join(diffs))
            self.changed_on_resume["split_lists"] = {"recorded": str(path), "new": "rebuilt"}
            return
        raise UserInputError(
            f"cannot resume the run in {self.output_dir}: the split lists of {self.dataset_dir} differ from the "
            f"ones the run recorded in {path} (files added to or removed from the data set?):\n" + "\n".join(diffs),
            "restore the data set as it was, pass --resume_force True to continue on the new lists, or train "
            "afresh into another --output_dir.",
        )

    def _demo_text(self) -> str:
        return (
            "DEMO DATA: this run was trained on a SYNTHETIC demo set, not on real images.\n\n"
            f"No data set was found (dataset_dir='auto' looks for {self.bundle_root / 'data'}), so\n"
            f"monai_assim generated {self.dataset_dir}\n"
            f"(deterministic, seed {self.seed}, in the {self.layout.title} folder layout) and trained with\n"
            "demo-sized settings. Its accuracy and robustness figures say nothing about medical images.\n\n"
            f"To train on the real data set put it in {self.bundle_root / 'data'} or pass\n"
            "--dataset_dir <folder>; see the bundle's README.md for the expected layout.\n"
        )

    def _announce_demo(self) -> None:
        bar = "#" * 100
        lines = self._demo_text().splitlines()
        logger.warning("\n".join([bar, *[f"#  {line}" for line in lines], bar]))
