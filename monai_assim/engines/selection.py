r"""
Which epoch a training run keeps: the selection score that ``best.pt`` and early stopping follow.

- ``select_by="clean"``: the score is the clean validation accuracy ``val_acc``, as in every MONAI
  bundle.
- ``select_by="robust"``: the score ranks epochs by robust validation accuracy ``val_robust_acc``
  (:class:`~monai_assim.metrics.RobustAccuracy`), ties broken by ``val_acc``, and puts every epoch whose
  model predicts a single class for the whole validation set (``val_pred_classes < 2``,
  :class:`~monai_assim.metrics.PredictedClassCount`) below every epoch that predicts two or more:

  .. math::
      s = r + 10^{-6}\,a - 2\,[\text{one class predicted}]

  with :math:`r` the robust and :math:`a` the clean accuracy. Robust accuracies differ by at least
  :math:`1/n` for :math:`n` attacked images, so the :math:`10^{-6}` term only breaks ties (for
  :math:`n < 10^6`); :math:`r - 2 < 0 \le` the score of any epoch that predicts both classes.

A constant classifier's robust accuracy equals its class share (0.5 on a balanced set), which can beat a
real but fragile model's: robust selection without the single-class rule would keep a collapsed model.

Adversarial training overfits robustly (Rice, Wong & Kolter, ICML 2020): robust accuracy peaks and falls
while clean accuracy keeps rising, so under adversarial training the clean-best epoch is an early,
fragile model; selecting on robust validation accuracy is the standard remedy (also Wong, Rice & Kolter,
ICLR 2020, for fast adversarial training).
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

__all__ = ["SELECT_BY", "EpochSelection", "selection_score"]

#: the selection rules
SELECT_BY = ("clean", "robust")
#: weight of the clean accuracy in the robust score (tie-break only)
TIE_BREAK_WEIGHT = 1e-6
#: subtracted from the robust score of an epoch that predicts a single class
SINGLE_CLASS_PENALTY = 2.0


def selection_score(
    select_by: str, clean: float, robust: float | None = None, pred_classes: int | None = None
) -> float:
    """
    The score of one epoch under rule ``select_by`` (see the module docstring); higher is better.

    Args:
        select_by: ``"clean"`` or ``"robust"``.
        clean: clean validation accuracy.
        robust: robust validation accuracy (required for ``"robust"``).
        pred_classes: how many classes the epoch's model predicts on the validation set (``None``: unknown,
            no single-class rule).
    """
    if select_by == "clean":
        return float(clean)
    if select_by != "robust":
        raise ValueError(f"select_by must be one of {', '.join(SELECT_BY)}, got {select_by!r}.")
    if robust is None:
        raise ValueError("select_by='robust' needs the robust validation accuracy.")
    score = float(robust) + TIE_BREAK_WEIGHT * float(clean)
    if pred_classes is not None and int(pred_classes) < 2:
        score -= SINGLE_CLASS_PENALTY
    return score


class EpochSelection:
    """
    Handler of the validation evaluator that writes the selection score of each epoch into
    ``engine.state.metrics``, for the "best" :class:`~monai_assim.handlers.AtomicCheckpointSaver` and
    MONAI's ``EarlyStopHandler`` to follow (``key_metric_name=score_key``,
    ``stopping_fn_from_metric(score_key)``):

    - ``<score_key>`` (``val_select``): :func:`selection_score` under the run's rule;
    - ``<score_key>_robust`` (``val_select_robust``): the robust score, whenever the robust metric is
      there, so that a second saver can keep the other rule's choice.

    It must run after the metrics (MONAI attaches those when the engine is built) and before the saver and
    the early stopping: list it before them in ``val_handlers``. An epoch whose model predicts a single
    class is logged as a warning; each epoch's validation metrics go to ``on_epoch`` (the bundles' run
    summary) as a dict with ``epoch``, every numeric metric, ``single_class`` and ``val_seconds`` (the
    evaluator's epoch time).

    Args:
        select_by: ``"clean"`` or ``"robust"``.
        clean_key, robust_key, classes_key: names of the clean accuracy, robust accuracy and
            :class:`~monai_assim.metrics.PredictedClassCount` metrics.
        score_key: name of the score metric.
        on_epoch: called with each epoch's record.
        name: logger name.
    """

    def __init__(
        self,
        select_by: str = "clean",
        clean_key: str = "val_acc",
        robust_key: str = "val_robust_acc",
        classes_key: str = "val_pred_classes",
        score_key: str = "val_select",
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        name: str | None = None,
    ) -> None:
        if select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {', '.join(SELECT_BY)}, got {select_by!r}.")
        self.select_by = select_by
        self.clean_key = clean_key
        self.robust_key = robust_key
        self.classes_key = classes_key
        self.score_key = score_key
        self.on_epoch = on_epoch
        self.logger = logging.getLogger(name or __name__)

    @property
    def metric_name(self) -> str:
        """The metric the rule ranks by."""
        return self.robust_key if self.select_by == "robust" else self.clean_key

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        metrics = engine.state.metrics
        if self.clean_key not in metrics:
            raise KeyError(f"selection needs the metric {self.clean_key!r}; the evaluator has {', '.join(metrics)}.")
        if self.select_by == "robust" and self.robust_key not in metrics:
            raise KeyError(
                f"select_by='robust' needs the metric {self.robust_key!r} (a RobustAccuracy among the evaluator's "
                f"metrics); the evaluator has {', '.join(metrics)}."
            )
        clean = float(metrics[self.clean_key])
        robust = float(metrics[self.robust_key]) if self.robust_key in metrics else None
        classes = int(metrics[self.classes_key]) if self.classes_key in metrics else None
        single = classes is not None and classes < 2
        metrics[self.score_key] = selection_score(self.select_by, clean, robust, classes)
        if robust is not None:
            metrics[f"{self.score_key}_robust"] = selection_score("robust", clean, robust, classes)
        epoch = int(engine.state.epoch)
        if single:
            robust_text = f" and robust accuracy {robust:.4f}" if robust is not None else ""
            ranked = (
                "ranked below every epoch that predicts two or more classes"
                if self.select_by == "robust"
                else "selection is by clean accuracy"
            )
            self.logger.warning(
                f"epoch {epoch}: the model predicts a single class for every validation image; its clean accuracy "
                f"{clean:.4f}{robust_text} equal the class share, not skill or robustness ({ranked})."
            )
        if self.on_epoch is not None:
            record: dict[str, Any] = {"epoch": epoch}
            record.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
            record["single_class"] = single
            times: Mapping[str, Any] = getattr(engine.state, "times", None) or {}
            if times.get("EPOCH_COMPLETED") is not None:
                record["val_seconds"] = float(times["EPOCH_COMPLETED"])
            self.on_epoch(record)
