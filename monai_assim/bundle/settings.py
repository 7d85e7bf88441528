"""
The bundles' training settings, each in one place: its name, its default and its check (:data:`SETTINGS`).

A setting's ``"auto"`` (``mean``/``std``: ``None``) is resolved by :class:`~monai_assim.bundle.RunSetup`
from the resumed run's record, else from the bundle's ``real_data_defaults`` / ``demo_defaults``, else
from :attr:`Setting.default`. The bundles' ``train.json`` lists every setting as a top-level ``"auto"``
and passes it to ``RunSetup``; :mod:`monai_assim.bundle.generate` writes both from this table, so a new
setting is one row here and its use in a template (or in code).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_assim.errors import MissingInputError, UserInputError

__all__ = [
    "AUTO",
    "FIXED_DEFAULTS",
    "NETWORK_SETTINGS",
    "RECORDED_BEFORE",
    "RESUME_CHANGEABLE",
    "SETTINGS",
    "SETTING_KEYS",
    "Setting",
    "check_settings",
    "is_unset",
    "same",
]

AUTO = "auto"
#: no default of its own: the bundle's ``real_data_defaults`` / ``demo_defaults`` must give one
REQUIRED = object()
#: checks take ``(name, value, settings)``, the settings resolved so far (table order), and return the value
Check = Callable[[str, Any, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Setting:
    """
    One training setting.

    Attributes:
        name: the key in the bundle config and in the run summary's ``settings``.
        default: the value of ``"auto"`` when the bundle's data defaults do not give one (:data:`REQUIRED`: they must).
        check: validates and normalises the resolved value (raises :class:`~monai_assim.errors.UserInputError`).
        follows: ``"auto"`` is derived from this (earlier) setting by ``check``, not from a default.
        unset_none: ``None`` means unset (the backbone's own normalisation) instead of ``"auto"``.
        resume_changeable: may differ from the recorded value on resume without ``resume_force``.
        recorded_before: the value a run summary written before the setting existed implies.
        network: defines the network or its preprocessing (evaluate / inference / export take the run's).
    """

    name: str
    default: Any = REQUIRED
    check: Check | None = None
    follows: str | None = None
    unset_none: bool = False
    resume_changeable: bool = False
    recorded_before: Any = REQUIRED
    network: bool = False


def is_unset(key: str, value: Any) -> bool:
    """``value`` leaves ``key`` to its default: ``"auto"``, or ``None`` for ``mean``/``std``."""
    return (isinstance(value, str) and value.lower() == AUTO) or (value is None and key in _UNSET_NONE)


def same(a: Any, b: Any) -> bool:
    """Equal as recorded in JSON (tuples and lists alike, ``2`` and ``2.0`` alike)."""
    try:
        return json.loads(json.dumps(a)) == json.loads(json.dumps(b))
    except (TypeError, ValueError):
        return a == b


# ---------------------------------------------------------------------------------------------- checks
def positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}.")
    return int(value)


def _positive(name: str, value: Any, _: Mapping) -> int:
    return positive_int(name, value)


def _number(low: float, high: float, message: str = "", hint: str = "", open_low: bool = False) -> Check:
    """A number in [low, high] (``open_low``: (low, high]) as float; ``message`` overrides the range error."""

    def check(name: str, value: Any, _: Mapping) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserInputError(f"{name} must be a number, got {value!r}.")
        value = float(value)
        if value < low or value > high or (open_low and value == low):
            raise UserInputError(message.format(name=name, value=value) or f"{name} out of range: {value}.", hint)
        return value

    return check


def _choice(options: Callable[[], tuple[str, ...]], hint: str = "", lower: bool = False) -> Check:
    def check(name: str, value: Any, _: Mapping) -> str:
        allowed = options()
        value = str(value).lower() if lower else value
        if value not in allowed:
            raise UserInputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}.", hint)
        return value

    return check


def _variant(name: str, value: Any, _: Mapping) -> str:
    from monai_assim.networks import VARIANTS

    if str(value) not in VARIANTS:
        raise UserInputError(
            f"unknown variant {value!r}; choose one of {', '.join(VARIANTS)}.",
            "pass --variant assimilated or --variant vanilla.",
        )
    return value


def _backbone(name: str, value: Any, _: Mapping) -> str:
    from monai_assim.networks import BACKBONES

    if not isinstance(value, str) or value.lower() not in BACKBONES:
        raise UserInputError(
            f"unknown backbone {value!r}; choose one of {', '.join(BACKBONES)}.",
            f"pass --backbone {BACKBONES[0]} (or another of {', '.join(BACKBONES)}).",
        )
    return value


def _pretrained(name: str, value: Any, _: Mapping) -> str:
    if value is None or str(value).lower() == "none":
        return "none"
    if str(value).lower() == "imagenet":
        return "imagenet"
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise MissingInputError(
            f"pretrained must be 'imagenet', 'none' or the path of a state dict file; {path} does not exist.",
            "pass --pretrained <existing file>, --pretrained imagenet or --pretrained none.",
        )
    return str(path.resolve())


def _max_per_class(name: str, value: Any, _: Mapping) -> Any:
    if isinstance(value, Mapping):  # per split, e.g. {"train": 300, "validation": 50, "test": 100}
        return {k: positive_int(f"{name}[{k!r}]", v, allow_none=True) for k, v in value.items()}
    return positive_int(name, value, allow_none=True)


def _workers(name: str, value: Any, _: Mapping) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserInputError(f"{name} must be an int >= 0, got {value!r}.")
    return value


def _probe_every(name: str, value: Any, _: Mapping) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserInputError(
            f"{name} must be an int >= 0 (training iterations between two checks; 0: none), got {value!r}.",
            "e.g. --co_probe_every 50 attacks a fixed held-out batch every 50 iterations.",
        )
    return value


def _assimilation_lr(name: str, value: Any, _: Mapping) -> float | None:
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UserInputError(f"{name} must be a number > 0 or None, got {value!r}.")
    return float(value)


def _select_by(name: str, value: Any, settings: Mapping) -> str:
    from monai_assim.engines.selection import SELECT_BY

    if is_unset(name, value):
        value = "clean" if settings["adversarial_training"] == "none" else "robust"
    value = str(value).lower()
    if value not in SELECT_BY:
        raise UserInputError(
            f"select_by must be one of {', '.join(SELECT_BY)}, got {value!r}.",
            "--select_by robust keeps the epoch with the best robust validation accuracy, --select_by clean the "
            "one with the best clean validation accuracy.",
        )
    return value


def _val_robust_eps(name: str, value: Any, settings: Mapping) -> float:
    if is_unset(name, value):
        value = settings["at_eps"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 255.0:
        raise UserInputError(
            f"val_robust_eps is in units of 1/255 and must be a number in [0, 255], got {value!r}.",
            "e.g. --val_robust_eps 2 selects by robust accuracy at 2/255.",
        )
    return float(value)


def _val_robust_attack(name: str, value: Any, _: Mapping) -> str:
    from monai_assim.metrics.robust_accuracy import ROBUST_VALIDATION_ATTACKS

    lookup = {a.lower(): a for a in ROBUST_VALIDATION_ATTACKS}
    attack = str(value).lower()
    attack = "apgd" if attack in ("apgd-ce", "apgd_ce") else attack
    if attack not in lookup:
        raise UserInputError(
            f"val_robust_attack must be one of {', '.join(ROBUST_VALIDATION_ATTACKS)}, got {value!r}.",
            "PGD: PGD with a random start; APGD: APGD on the cross-entropy; APGDMargin: APGD on the margin loss.",
        )
    return lookup[attack]


def _inits() -> tuple[str, ...]:
    from monai_assim.networks.texture_module import INITS

    return tuple(INITS)


def _maps() -> tuple[str, ...]:
    from monai_assim.networks.output_map import OUTPUT_MAPS

    return tuple(OUTPUT_MAPS)


def _lr_schedules() -> tuple[str, ...]:
    from monai_assim.engines.schedules import LR_SCHEDULES

    return tuple(LR_SCHEDULES)


def _modes() -> tuple[str, ...]:
    from monai_assim.engines.adversarial_training import ADVERSARIAL_TRAINING_MODES

    return tuple(ADVERSARIAL_TRAINING_MODES)


_ALPHA = "alpha must be in [0, 1], got {value}."
_ALPHA_HINT = "alpha weighs the cross-entropy against the GLCM loss; the paper uses --alpha 0.99."
_EPS = "{name} is in units of 1/255 and must lie in [0, 255], got {value}."
_INF = float("inf")

#: every training setting, in the order of the run summary (a derived setting after the one it follows)
SETTINGS: tuple[Setting, ...] = (
    Setting("variant", "assimilated", _variant, network=True),
    Setting("backbone", "resnet18", _backbone, network=True),
    Setting("pretrained", check=_pretrained),
    Setting("alpha", 0.99, _number(0.0, 1.0, _ALPHA, _ALPHA_HINT)),
    Setting("image_size", check=_positive, network=True),
    Setting("epochs", check=_positive, resume_changeable=True),
    Setting("batch_size", check=_positive),
    Setting("learning_rate", check=_number(0.0, _INF, "learning_rate must be > 0, got {value}.", open_low=True)),
    Setting("assimilation_lr", None, _assimilation_lr),
    Setting(
        "lr_schedule",
        "none",
        _choice(
            _lr_schedules,
            "none keeps the learning rate; cosine anneals it to 0 over the run; step divides it by 10 at 50% and 75% "
            "of the iterations (each stepped per iteration).",
            lower=True,
        ),
        recorded_before="none",
    ),
    Setting("assimilation_init", "identity", _choice(_inits)),
    Setting(
        "assimilation_map",
        "sigmoid",
        _choice(
            _maps,
            "sigmoid (the default) cannot die; clamp is the hard clip of runs before the setting; clamp_st is "
            "that clip with a straight-through training gradient; clamp_return the clip whose training gradient "
            "pulls pushed-out values back (docs/networks.md).",
        ),
        recorded_before="clamp",
        network=True,
    ),
    Setting("max_per_class", check=_max_per_class),
    Setting("patience", check=_positive, resume_changeable=True),
    Setting("mean", None, unset_none=True, network=True),
    Setting("std", None, unset_none=True, network=True),
    Setting("num_workers", check=_workers, resume_changeable=True),
    Setting("adversarial_training", "none", _choice(_modes, lower=True)),
    Setting("at_eps", 2.0, _number(0.0, 255.0, _EPS)),
    Setting("at_steps", 5, _positive),
    Setting("at_ratio", 1.0, _number(0.0, 1.0, "at_ratio must lie in (0, 1], got {value}.", open_low=True)),
    Setting("trades_beta", 6.0, _number(0.0, _INF, "trades_beta must be >= 0, got {value}.")),
    Setting(
        "at_eps_warmup_epochs",
        0.0,
        _number(0.0, _INF, "at_eps_warmup_epochs must be >= 0 (0: no warm-up), got {value}."),
        recorded_before=0.0,
    ),
    Setting("select_by", check=_select_by, follows="adversarial_training"),
    Setting("val_robust_eps", check=_val_robust_eps, follows="at_eps"),
    Setting("val_robust_attack", "PGD", _val_robust_attack),
    Setting("val_robust_steps", 10, _positive),
    Setting("val_robust_per_class", None, lambda n, v, _: positive_int(n, v, allow_none=True)),
    Setting("co_probe_every", 0, _probe_every, resume_changeable=True, recorded_before=0),
    Setting("texture_features", 8, _positive, recorded_before=8, network=True),
    Setting("texture_layers", 3, _positive, recorded_before=3, network=True),
    Setting("color_features", 16, _positive, recorded_before=16, network=True),
)

#: the setting names, in table order
SETTING_KEYS = tuple(s.name for s in SETTINGS)
_BY_NAME = {s.name: s for s in SETTINGS}
_UNSET_NONE = tuple(s.name for s in SETTINGS if s.unset_none)
#: the values of ``"auto"`` that do not depend on the data (the bundles' data defaults may override them)
FIXED_DEFAULTS = {s.name: s.default for s in SETTINGS if s.default is not REQUIRED and not s.unset_none}
#: settings that may differ from the run's recorded ones on resume (no ``resume_force`` needed)
RESUME_CHANGEABLE = tuple(s.name for s in SETTINGS if s.resume_changeable)
#: the value a run summary written before a setting existed implies for it (the value that run used)
RECORDED_BEFORE = {s.name: s.recorded_before for s in SETTINGS if s.recorded_before is not REQUIRED}
#: settings that define the network and its preprocessing (``num_classes``: the run's ``class_names``)
NETWORK_SETTINGS = (*(s.name for s in SETTINGS if s.network), "num_classes")
#: settings whose ``"auto"`` follows another setting
DERIVED_SETTINGS = {s.name: s.follows for s in SETTINGS if s.follows}


def check_settings(out: dict[str, Any]) -> None:
    """Validate and normalise resolved settings in place, in table order (derived ones after their source)."""
    for setting in SETTINGS:
        if setting.check is not None:
            out[setting.name] = setting.check(setting.name, out[setting.name], out)


def setting(name: str) -> Setting:
    """The table row of ``name``."""
    return _BY_NAME[name]
