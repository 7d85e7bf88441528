"""
A guard against collapsed training: a warning, with its cause and the settings to change, when a model
predicts one class for the whole validation set or its texture / colour module saturates.

A collapsed assimilated model looks like this: the texture or colour module pushed its output against
the ends of [0, 1], the backbone sees a (nearly) constant image, cross-entropy sits at ln 2 and the model
predicts one class; its accuracy under any attack is the class share, which a robustness report can
mistake for robustness. The guard reads the validation metrics each epoch (after they are computed):

- ``val_pred_classes`` (:class:`~monai_assim.metrics.PredictedClassCount`) below 2 for
  ``single_class_epochs`` validation epochs in a row (default 2: a first epoch that predicts one class is
  common in a healthy run and recovers), or for one epoch together with saturation: constant predictions;
- ``val_saturation_texture`` / ``val_saturation_color`` (and the ``train_`` ones when the trainer is given;
  :class:`~monai_assim.metrics.AssimilationMovement`, :func:`~monai_assim.networks.saturation`) above
  ``saturation_threshold``: the module is losing the image.

Each finding is logged as a warning and passed to ``on_warning`` (the bundles' run summary keeps them
under ``"warnings"``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["CollapseGuard", "DEFAULT_SATURATION_THRESHOLD"]

#: saturation (fraction of a module's output values) above which the guard warns
DEFAULT_SATURATION_THRESHOLD = 0.5


class CollapseGuard:
    """
    Handler of the validation evaluator that warns when training collapses (see the module docstring).

    Args:
        settings: the run's settings, to name the values to change (``assimilation_map``,
            ``assimilation_lr``, ``adversarial_training``, ``at_eps``); may be empty.
        saturation_threshold: the saturation above which the guard warns.
        single_class_epochs: how many validation epochs in a row must predict a single class (without
            saturation) before the guard warns.
        trainer: the trainer, whose ``train_saturation_*`` metrics are checked too (optional).
        on_warning: called with each warning as a dict (``epoch``, ``kind``: ``"single_class"`` or
            ``"saturation"``, the measured values, ``message``).
        prefix: prefix of the validation metrics.
        name: logger name.
    """

    def __init__(
        self,
        settings: Mapping[str, Any] | None = None,
        saturation_threshold: float = DEFAULT_SATURATION_THRESHOLD,
        single_class_epochs: int = 2,
        trainer: Engine | None = None,
        on_warning: Callable[[dict[str, Any]], None] | None = None,
        prefix: str = "val_",
        name: str | None = None,
    ) -> None:
        if not 0.0 < saturation_threshold <= 1.0:
            raise ValueError(f"saturation_threshold must be in (0, 1], got {saturation_threshold}.")
        self.settings = dict(settings or {})
        self.saturation_threshold = float(saturation_threshold)
        if int(single_class_epochs) < 1:
            raise ValueError(f"single_class_epochs must be at least 1, got {single_class_epochs}.")
        self.single_class_epochs = int(single_class_epochs)
        self._single_in_a_row = 0
        self.trainer = trainer
        self.on_warning = on_warning
        self.prefix = prefix
        self.logger = logging.getLogger(name or __name__)
        #: every warning given so far
        self.warnings: list[dict[str, Any]] = []

    def set_trainer(self, trainer: Engine) -> None:
        """Check the trainer's ``train_saturation_*`` metrics too (a bundle sets it when the run starts)."""
        self.trainer = trainer

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _saturation(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """The largest saturation of each module over the validation (and training) metrics."""
        sources = [(self.prefix, metrics)]
        if self.trainer is not None:
            sources.append(("train_", self.trainer.state.metrics))
        out: dict[str, float] = {}
        for prefix, values in sources:
            for module in ("texture", "color"):
                value = values.get(f"{prefix}saturation_{module}")
                if isinstance(value, (int, float)):
                    out[module] = max(out.get(module, 0.0), float(value))
        return out

    def _remedies(self) -> str:
        s = self.settings
        parts = []
        if s.get("assimilation_map") == "clamp":
            parts.append("--assimilation_map sigmoid (this run's clamp gives no gradient to saturated values)")
        lr = s.get("assimilation_lr")
        parts.append(f"a smaller --assimilation_lr (this run: {lr if lr is not None else 'learning_rate'}, e.g. 1e-3)")
        if s.get("adversarial_training") not in (None, "none"):
            parts.append(f"a smaller --at_eps (this run: {s.get('at_eps')}/255)")
        parts.append("--variant vanilla to check that the data and backbone train at all")
        return "; ".join(parts)

    def _warn(self, epoch: int, kind: str, values: dict[str, Any], text: str) -> None:
        message = f"epoch {epoch}: {text} Settings to change: {self._remedies()}."
        self.logger.warning(f"COLLAPSE GUARD: {message}")
        record = {"epoch": epoch, "kind": kind, **values, "message": message}
        self.warnings.append(record)
        if self.on_warning is not None:
            self.on_warning(record)

    def __call__(self, engine: Engine) -> None:
        metrics = engine.state.metrics
        epoch = int(self.trainer.state.epoch if self.trainer is not None else engine.state.epoch)
        saturation = self._saturation(metrics)
        saturated = {k: v for k, v in saturation.items() if v > self.saturation_threshold}
        sat_text = ", ".join(f"{'T' if k == 'texture' else 'C'} {100 * v:.1f}%" for k, v in saturation.items())
        classes = metrics.get(f"{self.prefix}pred_classes")
        single = isinstance(classes, (int, float)) and int(classes) < 2
        self._single_in_a_row = self._single_in_a_row + 1 if single else 0
        if single and (saturated or self._single_in_a_row >= self.single_class_epochs):
            cause = (
                f"the assimilation modules saturate ({sat_text} of their output values), so the backbone sees an "
                "almost constant image"
                if saturated
                else "the training diverged or the data carry no signal the model found"
            )
            self._warn(
                epoch,
                "single_class",
                {"pred_classes": int(classes), "saturation": saturation},
                f"the model predicts a single class for every validation image"
                f"{f' ({self._single_in_a_row} epochs in a row)' if self._single_in_a_row > 1 else ''}: it has "
                f"collapsed (its accuracy is the class share, under attack too). Likely cause: {cause}.",
            )
        elif saturated:
            self._warn(
                epoch,
                "saturation",
                {"saturation": saturation},
                f"the assimilation modules saturate {sat_text} of their output values (threshold "
                f"{100 * self.saturation_threshold:.0f}%): they are pushing the image against 0 or 1 and losing "
                "it; a collapse to one class may follow.",
            )
