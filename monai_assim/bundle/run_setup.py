"""
Preparation of a bundle training run: real data or the synthetic demo set, settings, split lists, summary.

The bundles' ``train.json`` instantiates one :class:`RunSetup` and reads everything that depends on
the data from it, so that the same command trains with the paper's settings on a real data set and
falls back, loudly, to a small synthetic demo set when no data set is there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_assim.bundle.data_choice import DEMO_NOTICE_FILE, DataChoice, find_dataset
from monai_assim.bundle.resume_checks import ResumeChecks
from monai_assim.bundle.run_summary import SUMMARY_FILE, RunSummary
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
from monai_assim.utils import get_rank

__all__ = [
    "DEMO_NOTICE_FILE",
    "RESUME_CHANGEABLE",
    "SUMMARY_FILE",
    "RunSetup",
    "default_output_dir",
    "find_dataset",
]

logger = logging.getLogger(__name__)


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


class RunSetup(DataChoice, ResumeChecks, RunSummary):
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

    def _check_weights_available(self) -> None:
        """``pretrained`` ``"imagenet"``: the weights file is cached, or downloaded into the cache now."""
        if self.settings["pretrained"] == "imagenet":
            from monai_assim.networks import imagenet_weights_file

            imagenet_weights_file(self.settings["backbone"])

    # ------------------------------------------------------------------ resume

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

    # ------------------------------------------------------------------ data

    # ------------------------------------------------------------------ start, run, finish

    # ------------------------------------------------------------------ summary
