"""
Preparation of a bundle training run: real data or the synthetic demo set, settings, split lists, summary.

The bundles' ``train.json`` instantiates one :class:`RunSetup` and reads everything that depends on
the data from it, so that the same command trains with the paper's settings on a real data set and
falls back, loudly, to a small synthetic demo set when no data set is there.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from monai_assim.bundle.settings import (
    AUTO,
    DERIVED_SETTINGS,
    FIXED_DEFAULTS,
    RECORDED_BEFORE,
    RESUME_CHANGEABLE,
    SETTING_KEYS,
    check_settings,
    is_unset as _is_unset,
    same as _same,
)
from monai_assim.errors import MissingInputError, UserInputError, set_debug
from monai_assim.utils import atomic_write_text, get_rank

__all__ = [
    "DEMO_NOTICE_FILE",
    "RESUME_CHANGEABLE",
    "SUMMARY_FILE",
    "RunSetup",
    "default_output_dir",
    "find_dataset",
]

logger = logging.getLogger(__name__)

#: file written into the output folder of a run trained on the synthetic demo set.
DEMO_NOTICE_FILE = "DEMO_DATA.txt"
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


def default_output_dir(
    bundle_root: str | os.PathLike, dataset_dir: str | os.PathLike | None, variant: str, backbone: str
) -> str:
    """
    ``<bundle_root>/runs/<variant>_<backbone>``, or ``<bundle_root>/runs/demo_<variant>_<backbone>``
    when :func:`find_dataset` selects the demo set, so demo and real runs never share a folder; ``"auto"``
    stands for the training default (:data:`FIXED_DEFAULTS`: ``assimilated``, ``resnet18``).
    """
    demo = find_dataset(dataset_dir, bundle_root) is None
    if _is_unset("variant", variant):
        variant = FIXED_DEFAULTS["variant"]
    if _is_unset("backbone", backbone):
        backbone = FIXED_DEFAULTS["backbone"]
    return str(Path(bundle_root) / "runs" / f"{'demo_' if demo else ''}{variant}_{backbone}")


def _check_bundle_root(bundle_root: str | os.PathLike) -> Path:
    root = Path(bundle_root).expanduser()
    if not (root / "metadata.json").is_file():
        raise MissingInputError(
            f"bundle_root {str(bundle_root)!r} (resolved from {os.getcwd()}) is not a bundle folder: "
            f"{root / 'metadata.json'} not found.",
            "run the command from the repository root, or pass --bundle_root <path to bundles/<modality>>.",
        )
    return root.resolve()


class RunSetup:
    """
    Everything a training bundle decides before it trains, checked before anything is written.

    1. The data: :func:`find_dataset` of ``dataset_dir``. Without a data set, a deterministic
       synthetic demo set in ``modality``'s real folder layout is generated into
       ``<output_dir>/demo_data`` (:func:`monai_assim.data.make_synthetic_dataset`), a banner is logged
       at WARNING level, ``<output_dir>/DEMO_DATA.txt`` is written and the run summary says
       ``"demo_data": true``. With a data set, a stale ``DEMO_DATA.txt`` is removed.
    2. The settings: every value of ``settings`` equal to ``"auto"`` (``mean``/``std``: ``None``) is
       taken, on resume, from the settings the run recorded in its ``run_summary.json``, otherwise from
       ``real_data_defaults`` (the paper's: 300 epochs, lr 1e-4, batch 32, 224x224, ImageNet weights,
       early-stopping patience 30) or ``demo_defaults`` (sized for a few minutes on a CPU, no
       pretrained weights since none can be downloaded offline), then :data:`FIXED_DEFAULTS`; explicit
       values win. All are validated, with the backbone name, the variant and (for ``pretrained``
       ``"imagenet"``) that the ImageNet weights are cached or can be downloaded.
    3. Resume: ``<output_dir>/checkpoints/last.pt`` must exist; an explicit setting (or ``seed``,
       ``val_fraction``, ``test_fraction``, data set, split lists) that differs from what the run
       recorded stops with an error naming the setting, the recorded and the new value, unless it is
       in :data:`RESUME_CHANGEABLE` or ``resume_force`` is set (then the change is logged and recorded).
    4. The split lists (:func:`monai_assim.data.plan_datalists`, balanced, stratified, seeded). Bad
       data raises a :class:`~monai_assim.errors.UserInputError` listing every bad path, before any
       network is built or trained.

    The output folder is an input too: it must be creatable and writable (checked, leaving nothing behind),
    and no live run may hold it (:class:`~monai_assim.bundle.run_lock.RunLock`; the run takes the lock before
    its first write and gives it back at the end). The data set folder and its layout are checked before
    the ImageNet weights, so that a wrong ``dataset_dir`` is reported as such.

    Nothing is written into ``output_dir`` (the demo set aside) until :meth:`run` (or :meth:`start`)
    is called, after every input has been checked and the trainer built: a fresh run that fails on its
    inputs leaves no run folder, and a resume that fails on them leaves the run's files as they were.
    :meth:`start` writes ``<output_dir>/datalists`` and ``<output_dir>/run_summary.json`` (data,
    settings, seed, versions, resume point, ``"status": "running"``; on resume the previous sessions
    are kept in its ``"history"`` list); :meth:`run` marks the summary ``"failed"`` with the error
    when training raises, and :meth:`finish` completes it (``"completed"``, epochs run, best
    validation accuracy).

    Under ``torch.distributed`` only rank 0 writes files; the other ranks wait for the demo set and
    compute the same (deterministic) split.

    Args:
        bundle_root: the bundle folder (holds ``metadata.json``); checked, so that a command run from the
            wrong folder fails with a message saying to pass ``--bundle_root``.
        modality: ``"chest_xray"``, ``"brain_mri"``, ``"chest_ct"`` or ``"breast_ultrasound"``.
        output_dir: the run's output folder.
        dataset_dir: see :func:`find_dataset`; on resume ``"auto"`` is the data set the run recorded.
        settings: the bundle's settings (:data:`monai_assim.bundle.settings.SETTINGS`), values or ``"auto"``.
        real_data_defaults: values of the ``"auto"`` settings with a real data set.
        demo_defaults: values of the ``"auto"`` settings with the demo set, plus ``n_per_class`` and
            ``file_size`` of the generated images.
        seed: seed of the demo set, the split and (in the bundle) ``set_determinism``.
        val_fraction: validation fraction of the training pool, per label.
        test_fraction: test fraction where the data set has no own test split.
        resume: the run resumes from ``<output_dir>/checkpoints/last.pt``, which must exist.
        check_images: decode every image while building the split lists.
        resume_force: on resume, continue with settings that conflict with the recorded ones (logged
            as a warning and recorded in the summary's ``"changed_on_resume"``).
        debug: print the full traceback of user errors (:func:`monai_assim.errors.set_debug`), as the
            environment variable ``MONAI_ASSIM_DEBUG=1`` does.
    """

    def __init__(
        self,
        bundle_root: str | os.PathLike,
        modality: str,
        output_dir: str | os.PathLike,
        dataset_dir: str | os.PathLike | None = AUTO,
        settings: Mapping[str, Any] | None = None,
        real_data_defaults: Mapping[str, Any] | None = None,
        demo_defaults: Mapping[str, Any] | None = None,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        resume: bool = False,
        check_images: bool = True,
        resume_force: bool = False,
        debug: bool = False,
    ) -> None:
        from monai_assim.data import get_layout

        if debug:
            set_debug(True)
        self.bundle_root = _check_bundle_root(bundle_root)
        self.layout = get_layout(modality)
        self.modality = modality
        self.output_dir = Path(output_dir).expanduser().resolve()
        self.seed = int(seed)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.resume = bool(resume)
        self.resume_force = bool(resume_force)
        self.check_images = bool(check_images)
        self.demo_defaults = dict(demo_defaults or {})
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.resumed_from_epoch: int | None = self._check_resume() if self.resume else None
        self.recorded: dict[str, Any] | None = self._recorded_summary() if self.resume else None
        #: setting -> {"recorded": value, "new": value} of every change made on resume (allowed or forced).
        self.changed_on_resume: dict[str, dict[str, Any]] = {}
        self._conflicts: list[tuple[str, Any, Any]] = []

        found = self._resume_dataset(dataset_dir) if self.recorded else find_dataset(dataset_dir, bundle_root)
        self.demo = found is None
        self.dataset_dir = self.output_dir / "demo_data" if found is None else found.resolve()
        recorded_settings = (self.recorded or {}).get("settings") or None
        self._defaults = self.demo_defaults if self.demo else dict(real_data_defaults or {})
        self.settings = self._resolve(settings or {}, self._defaults, recorded=recorded_settings)
        if self.recorded:
            self._compare_run_arguments()
            self._settle_conflicts()
        self.log_settings(settings or {})
        self._check_output_dir()
        self._check_data_folder()  # before the weights: a typo in --dataset_dir is reported as such
        self._check_weights_available()
        self._plan: Any = None
        self._datalists: dict[str, list[dict]] | None = None
        from monai_assim.bundle.run_lock import RunLock

        #: the run folder's lock (one writer per run), taken before the first write (:meth:`hold_folder`)
        self.lock = RunLock(self.output_dir)
        if get_rank() == 0:
            self.lock.check()  # a live run in this folder: stop now, before anything is written
        #: per-epoch validation records (:meth:`record_epoch`); on resume, those up to the checkpoint's epoch
        #: the collapse guard's warnings (:meth:`record_warning`); on resume, those up to the checkpoint's epoch
        self.warnings: list[dict[str, Any]] = [
            w
            for w in (self.recorded or {}).get("warnings") or []
            if isinstance(w, dict) and int(w.get("epoch", 0)) <= int(self.resumed_from_epoch or 0)
        ]
        self.epochs: list[dict[str, Any]] = [
            e
            for e in (self.recorded or {}).get("epochs") or []
            if isinstance(e, dict) and int(e.get("epoch", 0)) <= int(self.resumed_from_epoch or 0)
        ]

    # ------------------------------------------------------------------ settings
    def _resolve(
        self,
        settings: Mapping[str, Any],
        defaults: Mapping[str, Any],
        recorded: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """
        The settings with ``"auto"`` (``mean``/``std``: ``None``) replaced, validated; with ``recorded``
        (resume), unset settings take the recorded values and explicit ones that differ are noted.
        """
        unknown = sorted(set(settings) - set(SETTING_KEYS))
        if unknown:
            raise UserInputError(
                f"unknown settings {unknown}; expected keys among {', '.join(SETTING_KEYS)}.",
                "check the spelling of the --<setting> options.",
            )
        out: dict[str, Any] = {}
        explicit: list[str] = []
        defaults = {**FIXED_DEFAULTS, **defaults}
        for key in SETTING_KEYS:
            value = settings.get(key, AUTO)
            if _is_unset(key, value):
                if recorded is not None and key in recorded:
                    out[key] = recorded[key]
                    continue
                if recorded is not None and key in RECORDED_BEFORE:  # a run older than the setting
                    out[key] = RECORDED_BEFORE[key]
                    continue
                if key in DERIVED_SETTINGS:  # resolved from the setting it follows, in _validate
                    out[key] = AUTO
                    continue
                if value is None:  # mean / std: the backbone's own normalisation
                    out[key] = None
                    continue
                if key not in defaults:
                    raise UserInputError(f"setting {key!r} is 'auto' but the bundle gives no default for it.")
                value = defaults[key]
            elif recorded is not None:
                explicit.append(key)
            out[key] = value
        check_settings(out)
        for key in explicit:
            if key in recorded and not _same(out[key], recorded[key]):
                self._note_change(key, recorded[key], out[key])
        return out

    def _note_change(self, key: str, recorded: Any, new: Any) -> None:
        self.changed_on_resume[key] = {"recorded": recorded, "new": new}
        if key in RESUME_CHANGEABLE:
            logger.info(f"resume: {key} changes from the recorded {recorded!r} to {new!r} (allowed on resume).")
        else:
            self._conflicts.append((key, recorded, new))

    def log_settings(self, given: Mapping[str, Any]) -> None:
        """
        Log the resolved settings at start, one per line, marking those that were ``"auto"`` in ``given``
        (the bundle's values) and which defaults they came from; the same values go to the run summary.
        """
        defaults = "demo_defaults" if self.demo else "real_data_defaults"
        recorded = (self.recorded or {}).get("settings") or {}
        lines = []
        for key, value in self.settings.items():
            raw = given.get(key, AUTO)
            auto = isinstance(raw, str) and raw.lower() == AUTO
            if key in recorded:
                source = "the resumed run's summary"
            elif key in DERIVED_SETTINGS:
                source = f"{DERIVED_SETTINGS[key]} = {self.settings[DERIVED_SETTINGS[key]]!r}"
            else:
                source = defaults if key in self._defaults else "FIXED_DEFAULTS"
            lines.append(f"  {key:<22} {value!r}" + (f"   ('auto': from {source})" if auto else ""))
        logger.info("\n".join([f"run settings ({'demo set' if self.demo else 'real data set'}):", *lines]))

    def _check_output_dir(self) -> None:
        """The output folder can be created and written (rank 0; the check leaves nothing behind)."""
        if get_rank() == 0:
            from monai_assim.bundle.run_files import check_writable_dir

            check_writable_dir(self.output_dir)

    def _check_data_folder(self) -> None:
        """
        The data set folder and its layout (folders only, no image decoded), checked before the ImageNet
        weights so that a wrong ``--dataset_dir`` is reported as such and not as missing weights; the
        images themselves are checked when the split lists are built.
        """
        if not self.demo:
            from monai_assim.data import discover_images

            discover_images(self.dataset_dir, self.modality, check_images=False)

    def _check_weights_available(self) -> None:
        """``pretrained`` ``"imagenet"``: the weights file is cached, or downloaded into the cache now."""
        if self.settings["pretrained"] == "imagenet":
            from monai_assim.networks import imagenet_weights_file

            imagenet_weights_file(self.settings["backbone"])

    # ------------------------------------------------------------------ resume
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

    # ------------------------------------------------------------------ checkpoint selection
    @property
    def robust_validation(self) -> bool:
        """Whether validation also measures robust accuracy: under adversarial training, or with select_by robust."""
        return self.settings["select_by"] == "robust" or self.settings["adversarial_training"] != "none"

    @property
    def other_checkpoint(self) -> tuple[str, str]:
        """
        ``(file name, score metric)`` of the checkpoint the other rule would keep, saved beside ``best.pt``
        when validation measures robust accuracy: ``best_clean.pt`` (``val_acc``) under robust selection,
        ``best_robust.pt`` (``val_select_robust``) under clean selection.
        """
        if self.settings["select_by"] == "robust":
            return "best_clean.pt", "val_acc"
        return "best_robust.pt", "val_select_robust"

    def _validation_images(self) -> int | None:
        if self._datalists is None:
            return None
        per_class = self.settings["val_robust_per_class"]
        counts: dict[int, int] = {}
        for item in self._datalists.get("validation", []):
            counts[int(item["label"])] = counts.get(int(item["label"]), 0) + 1
        return sum(n if per_class is None else min(n, per_class) for n in counts.values())

    def selection(self) -> dict[str, Any]:
        """How ``best.pt`` is chosen, as recorded in the run summary and an exported bundle's metadata."""
        s = self.settings
        robust = s["select_by"] == "robust"
        out: dict[str, Any] = {"select_by": s["select_by"], "metric": "val_robust_acc" if robust else "val_acc"}
        if self.robust_validation:
            eps = f"{s['val_robust_eps']:g}/255"
            steps = s["val_robust_steps"]
            label = {"PGD": "PGD", "APGD": "APGD-CE", "APGDMargin": "APGD-margin"}[s["val_robust_attack"]]
            out["robust_validation"] = {
                "metric": "val_robust_acc",
                "attack": s["val_robust_attack"],
                "steps": steps,
                "eps_255": s["val_robust_eps"],
                "per_class": s["val_robust_per_class"],
                "images": self._validation_images(),
                "seed": self.seed,
                "description": f"{label}-{steps} at {eps}",
            }
            other, _ = self.other_checkpoint
        if robust:
            out["rule"] = (
                f"the epoch with the highest robust validation accuracy (val_robust_acc, {label}-{steps} at {eps} "
                "through the whole model), ties broken by clean validation accuracy (val_acc); an epoch whose model "
                "predicts a single class for every validation image ranks below every epoch that predicts two or more"
            )
        else:
            out["rule"] = "the epoch with the highest clean validation accuracy (val_acc)"
        out["checkpoints"] = {"best.pt": f"select_by {s['select_by']}", "last.pt": "the last epoch"}
        if self.robust_validation:
            out["checkpoints"][other] = "select_by clean" if robust else "select_by robust"
        return out

    def record_epoch(self, record: dict[str, Any]) -> None:
        """
        Add one epoch's validation record (:class:`~monai_assim.engines.EpochSelection` calls this) to the
        summary's ``"epochs"`` list and rewrite the summary, so a killed run keeps every finished epoch.
        """
        self.epochs = [e for e in self.epochs if int(e.get("epoch", 0)) < int(record["epoch"])] + [dict(record)]
        if get_rank() == 0:
            self.write_summary(epochs=self.epochs)

    def record_warning(self, record: dict[str, Any]) -> None:
        """Add a warning of the :class:`~monai_assim.engines.CollapseGuard` to the summary's ``"warnings"``."""
        self.warnings.append(dict(record))
        if get_rank() == 0:
            self.write_summary(warnings=self.warnings)

    # ------------------------------------------------------------------ data
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

    # ------------------------------------------------------------------ start, run, finish
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

    # ------------------------------------------------------------------ summary
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
        if self.warnings:
            epochs = sorted({int(w["epoch"]) for w in self.warnings})
            logger.warning(
                f"COLLAPSE GUARD: {len(self.warnings)} warning(s) in epoch(s) {', '.join(map(str, epochs))}; "
                f"see 'warnings' in {self.output_dir / SUMMARY_FILE} before trusting this run."
            )
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
