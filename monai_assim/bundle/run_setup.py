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

from monai_assim.utils import atomic_write_text, get_rank

__all__ = ["DEMO_NOTICE_FILE", "SUMMARY_FILE", "RunSetup", "default_output_dir", "find_dataset"]

logger = logging.getLogger(__name__)

#: file written into the output folder of a run trained on the synthetic demo set.
DEMO_NOTICE_FILE = "DEMO_DATA.txt"
#: the run summary written into the output folder.
SUMMARY_FILE = "run_summary.json"

#: settings a bundle passes to :class:`RunSetup`; ``"auto"`` picks the real-data or the demo default.
SETTING_KEYS = (
    "variant",
    "backbone",
    "pretrained",
    "alpha",
    "image_size",
    "epochs",
    "batch_size",
    "learning_rate",
    "assimilation_lr",
    "assimilation_init",
    "max_per_class",
    "patience",
    "mean",
    "std",
    "num_workers",
    "adversarial_training",
    "at_eps",
    "at_steps",
    "at_ratio",
    "trades_beta",
)
AUTO = "auto"
#: values of settings that a bundle (or a caller) may leave out entirely: ``assimilation_lr`` ``None``
#: trains T and C at ``learning_rate``; ``assimilation_init`` ``"identity"`` is the identity start.
OPTIONAL_SETTINGS = {"assimilation_lr": None, "assimilation_init": "identity"}

#: adversarial-training settings used when a bundle does not give them (``at_eps`` in units of 1/255)
AT_DEFAULTS = {"adversarial_training": "none", "at_eps": 2.0, "at_steps": 5, "at_ratio": 1.0, "trades_beta": 6.0}


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
    when :func:`find_dataset` selects the demo set, so demo and real runs never share a folder.
    """
    demo = find_dataset(dataset_dir, bundle_root) is None
    return str(Path(bundle_root) / "runs" / f"{'demo_' if demo else ''}{variant}_{backbone}")


def _check_bundle_root(bundle_root: str | os.PathLike) -> Path:
    root = Path(bundle_root).expanduser()
    if not (root / "metadata.json").is_file():
        raise ValueError(
            f"bundle_root {str(bundle_root)!r} (resolved from {os.getcwd()}) is not a bundle folder: "
            f"{root / 'metadata.json'} not found. Run the command from the repository root, or pass "
            "--bundle_root <path to bundles/<modality>>."
        )
    return root.resolve()


def _positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}.")
    return int(value)


def _check_adversarial_settings(out: dict[str, Any]) -> None:
    """Validate (and normalise) the adversarial-training settings in place; ``at_eps`` is in units of 1/255."""
    from monai_assim.engines.adversarial_training import ADVERSARIAL_TRAINING_MODES

    mode = str(out["adversarial_training"]).lower()
    if mode not in ADVERSARIAL_TRAINING_MODES:
        raise ValueError(f"adversarial_training must be one of {', '.join(ADVERSARIAL_TRAINING_MODES)}, got {mode!r}.")
    out["adversarial_training"] = mode
    for key in ("at_eps", "at_ratio", "trades_beta"):
        if isinstance(out[key], bool) or not isinstance(out[key], (int, float)):
            raise ValueError(f"{key} must be a number, got {out[key]!r}.")
        out[key] = float(out[key])
    if not 0.0 <= out["at_eps"] <= 255.0:
        raise ValueError(f"at_eps is in units of 1/255 and must lie in [0, 255], got {out['at_eps']}.")
    if not 0.0 < out["at_ratio"] <= 1.0:
        raise ValueError(f"at_ratio must lie in (0, 1], got {out['at_ratio']}.")
    if out["trades_beta"] < 0:
        raise ValueError(f"trades_beta must be >= 0, got {out['trades_beta']}.")
    out["at_steps"] = _positive_int("at_steps", out["at_steps"])


class RunSetup:
    """
    Everything a training bundle decides before it trains.

    1. The data: :func:`find_dataset` of ``dataset_dir``. Without a data set, a deterministic
       synthetic demo set in ``modality``'s real folder layout is generated into
       ``<output_dir>/demo_data`` (:func:`monai_assim.data.make_synthetic_dataset`), a banner is logged
       at WARNING level, ``<output_dir>/DEMO_DATA.txt`` is written and the run summary says
       ``"demo_data": true``. With a data set, a stale ``DEMO_DATA.txt`` is removed.
    2. The settings: every value of ``settings`` equal to ``"auto"`` is taken from
       ``real_data_defaults`` (the paper's: 300 epochs, lr 1e-4, batch 32, 224x224, ImageNet weights,
       early-stopping patience 30) or ``demo_defaults`` (sized for a few minutes on a CPU, no
       pretrained weights since none can be downloaded offline); explicit values always win.
    3. The split lists (:func:`monai_assim.data.build_datalists`, balanced, stratified, seeded), written
       to ``<output_dir>/datalists``. Bad data raises a ``ValueError`` naming the path here, before
       any network is built or trained.
    4. ``<output_dir>/run_summary.json``: data, settings, seed, versions, resume point; completed by
       :meth:`finish` with the epochs run and the best validation accuracy.

    Under ``torch.distributed`` only rank 0 writes files; the other ranks wait for it and read the same
    (deterministic) split.

    Args:
        bundle_root: the bundle folder (holds ``metadata.json``); checked, so that a command run from the
            wrong folder fails with a message saying to pass ``--bundle_root``.
        modality: ``"chest_xray"``, ``"brain_mri"``, ``"chest_ct"`` or ``"breast_ultrasound"``.
        output_dir: the run's output folder.
        dataset_dir: see :func:`find_dataset`.
        settings: the bundle's settings (keys of :data:`SETTING_KEYS`), values or ``"auto"``.
        real_data_defaults: values of the ``"auto"`` settings with a real data set.
        demo_defaults: values of the ``"auto"`` settings with the demo set, plus ``n_per_class`` and
            ``file_size`` of the generated images.
        seed: seed of the demo set, the split and (in the bundle) ``set_determinism``.
        val_fraction: validation fraction of the training pool, per label.
        test_fraction: test fraction where the data set has no own test split.
        resume: the run resumes from ``<output_dir>/checkpoints/last.pt``, which must exist.
        check_images: decode every image while building the split lists.
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
    ) -> None:
        from monai_assim.data import get_layout

        self.bundle_root = _check_bundle_root(bundle_root)
        self.layout = get_layout(modality)
        self.modality = modality
        self.output_dir = Path(output_dir).expanduser().resolve()
        found = find_dataset(dataset_dir, bundle_root)
        self.demo = found is None
        self.seed = int(seed)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.resume = bool(resume)
        self.check_images = bool(check_images)
        self.demo_defaults = dict(demo_defaults or {})
        self.settings = self._resolve(
            settings or {}, self.demo_defaults if self.demo else dict(real_data_defaults or {})
        )
        self.log_settings(settings or {})
        self.dataset_dir = self.output_dir / "demo_data" if found is None else found.resolve()
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.resumed_from_epoch: int | None = self._check_resume() if self.resume else None
        self._datalists: dict[str, list[dict]] | None = None

    # ------------------------------------------------------------------ settings
    def _resolve(self, settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(settings) - set(SETTING_KEYS))
        if unknown:
            raise ValueError(f"unknown settings {unknown}; expected keys among {', '.join(SETTING_KEYS)}.")
        out: dict[str, Any] = {}
        defaults = {**AT_DEFAULTS, **defaults}
        for key in SETTING_KEYS:
            value = settings.get(key, AUTO)
            if isinstance(value, str) and value.lower() == AUTO:
                if key not in defaults and key in OPTIONAL_SETTINGS:
                    out[key] = OPTIONAL_SETTINGS[key]
                    continue
                if key not in defaults:
                    raise ValueError(f"setting {key!r} is 'auto' but the bundle gives no default for it.")
                value = defaults[key]
            out[key] = value
        for key in ("epochs", "batch_size", "image_size", "patience"):
            out[key] = _positive_int(key, out[key])
        caps = out["max_per_class"]
        if isinstance(caps, Mapping):  # per split, e.g. {"train": 300, "validation": 50, "test": 100}
            out["max_per_class"] = {
                k: _positive_int(f"max_per_class[{k!r}]", v, allow_none=True) for k, v in caps.items()
            }
        else:
            out["max_per_class"] = _positive_int("max_per_class", caps, allow_none=True)
        if isinstance(out["num_workers"], bool) or not isinstance(out["num_workers"], int) or out["num_workers"] < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {out['num_workers']!r}.")
        for key in ("learning_rate", "alpha"):
            if isinstance(out[key], bool) or not isinstance(out[key], (int, float)):
                raise ValueError(f"{key} must be a number, got {out[key]!r}.")
            out[key] = float(out[key])
        alr = out["assimilation_lr"]
        if alr is not None and not (isinstance(alr, str) and alr.lower() == "none"):
            if isinstance(alr, bool) or not isinstance(alr, (int, float)) or alr <= 0:
                raise ValueError(f"assimilation_lr must be a number > 0 or None, got {alr!r}.")
            out["assimilation_lr"] = float(alr)
        else:
            out["assimilation_lr"] = None
        from monai_assim.networks.texture_module import INITS

        if out["assimilation_init"] not in INITS:
            raise ValueError(f"assimilation_init must be one of {', '.join(INITS)}, got {out['assimilation_init']!r}.")
        if out["learning_rate"] <= 0:
            raise ValueError(f"learning_rate must be > 0, got {out['learning_rate']}.")
        if not 0.0 <= out["alpha"] <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {out['alpha']}.")
        _check_adversarial_settings(out)
        pretrained = out["pretrained"]
        if pretrained is None or str(pretrained).lower() == "none":
            out["pretrained"] = "none"
        elif str(pretrained).lower() != "imagenet":
            path = Path(str(pretrained)).expanduser()
            if not path.is_file():
                raise ValueError(
                    f"pretrained must be 'imagenet', 'none' or the path of a state dict file; {path} does not exist."
                )
            out["pretrained"] = str(path.resolve())
        return out

    def log_settings(self, given: Mapping[str, Any]) -> None:
        """
        Log the resolved settings at start, one per line, marking those that were ``"auto"`` in ``given``
        (the bundle's values) and which defaults they came from; the same values go to the run summary.
        """
        source = "demo_defaults" if self.demo else "real_data_defaults"
        lines = []
        for key, value in self.settings.items():
            raw = given.get(key, AUTO)
            auto = isinstance(raw, str) and raw.lower() == AUTO
            lines.append(f"  {key:<22} {value!r}" + (f"   ('auto': from {source})" if auto else ""))
        logger.info("\n".join([f"run settings ({'demo set' if self.demo else 'real data set'}):", *lines]))

    def _check_resume(self) -> int:
        last = self.ckpt_dir / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(
                f"resume=True but there is no last checkpoint {last}; run without --resume to start afresh."
            )
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        return int(ckpt.get("epoch", ckpt.get("trainer", {}).get("epoch", 0)))

    # ------------------------------------------------------------------ data
    @property
    def datalists(self) -> dict[str, list[dict]]:
        """``{"train", "validation", "test"}`` lists of ``{"image", "label"}`` (built once, see class doc)."""
        if self._datalists is None:
            self._datalists = self._build()
        return self._datalists

    def _build(self) -> dict[str, list[dict]]:
        from monai_assim.data import build_datalists, make_synthetic_dataset

        writer = get_rank() == 0
        if writer:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            notice = self.output_dir / DEMO_NOTICE_FILE
            if self.demo:
                self._announce_demo()
                n, size = int(self.demo_defaults.get("n_per_class", 40)), int(self.demo_defaults.get("file_size", 96))
                make_synthetic_dataset(self.dataset_dir, self.modality, n_per_class=n, size=size, seed=self.seed)
                notice.write_text(self._demo_text())
            elif notice.exists():
                notice.unlink()
                logger.info(f"removed the stale {notice}: this run trains on the real data set {self.dataset_dir}.")
        _barrier()
        lists = build_datalists(
            self.dataset_dir,
            self.modality,
            output_dir=self.output_dir / "datalists" if writer else None,
            seed=self.seed,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            max_per_class=self.settings["max_per_class"],
            check_images=self.check_images,
        )
        if writer:
            self.write_summary(fresh=not self.resume, counts={k: len(v) for k, v in lists.items()})
        return lists

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
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": None if self.layout.has_test_split else self.test_fraction,
            "own_test_split": self.layout.has_test_split,
            "resumed_from_epoch": self.resumed_from_epoch,
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
        doc: dict[str, Any] = {}
        if path.is_file() and not fresh:
            try:
                doc = json.loads(path.read_text())
            except ValueError:
                doc = {}
        doc.update(self.summary())
        doc.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
        doc.update(extra)
        return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")

    def finish(self, trainer: Any, best_saver: Any = None) -> None:
        """Complete the run summary after training: epochs completed, best validation accuracy, early stop."""
        if get_rank() != 0:
            return
        state = trainer.state
        self.write_summary(
            finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
            epochs_completed=int(state.epoch),
            iterations_completed=int(state.iteration),
            max_epochs=int(state.max_epochs),
            stopped_early=int(state.epoch) < int(state.max_epochs),
            best_metric=getattr(best_saver, "best_metric", None),
            best_epoch=getattr(best_saver, "best_epoch", None),
            best_metric_name=getattr(best_saver, "key_metric_name", None),
        )
        if self.demo:
            logger.warning(
                f"DEMO DATA: this run trained on the synthetic demo set; see {self.output_dir / DEMO_NOTICE_FILE}"
            )
