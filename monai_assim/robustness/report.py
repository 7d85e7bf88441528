"""
The outcome of an adversarial evaluation: its summary rows, the report (the honesty checks of
:mod:`~monai_assim.robustness.checks` and the worst-case lines), the metrics and the result files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from monai_assim.robustness.checks import black_box_check, ensemble_checks, large_eps_check, single_class_lines
from monai_assim.robustness.plan import EvaluationPlan, metric_names_of
from monai_assim.robustness.results import WORST, eps_tag, per_image_path, write_per_image, write_results

__all__ = ["RobustnessResults", "robustness_report"]


def robustness_report(
    rows: Sequence[Mapping[str, Any]],
    plan: EvaluationPlan,
    seed: int,
    predicted_classes: Mapping[int, int],
    structure: Mapping[str, float],
) -> tuple[list[str], bool]:
    """The report lines, in order, and whether a check found possible gradient masking."""
    clean = rows[0]
    lines = [f"clean accuracy {clean['accuracy']:.4f} on n={clean['n']} ({clean['variant']}, seed {seed})"]
    lines += single_class_lines(predicted_classes, clean)
    masking = False
    for check in (large_eps_check, black_box_check, ensemble_checks):
        more, failed = check(rows, plan)
        lines += more
        masking = masking or failed
    worst = {r["eps"]: r for r in rows if r["role"] == WORST}
    checked = {r["eps"]: r for r in rows if r["role"] == "check_worst"}
    for e in sorted(set(worst) | set(checked)):
        parts = [f"worst case over the attacks {worst[e]['accuracy']:.4f}"] if e in worst else []
        if e in checked:
            parts.append(f"with the structure-aware checks {checked[e]['accuracy']:.4f}")
        lines.append(f"eps {eps_tag(e)}/255: " + ", ".join(parts))
    if structure:
        lines.append(
            f"saturation: T saturates {100 * structure['texture']:.2f}% and C {100 * structure['color']:.2f}% "
            "of their output values (beyond the range an untrained module gives [0, 1] inputs; clean images)."
        )
    return lines, masking


@dataclass
class RobustnessResults:
    """
    The results table of an evaluation and what is read from it.

    ``rows``: the summary rows (:data:`~monai_assim.robustness.results.RESULT_COLUMNS`), clean first;
    ``report``: the report lines; ``gradient_masking``: whether a check failed; ``predicted_classes``: clean
    predictions per class; ``structure``: the saturation of T and C (structure checks, networks with them);
    ``per_image``: ``(names, labels, [(attack, eps_255, role, correct), ...])`` over all ranks.
    """

    plan: EvaluationPlan
    rows: list[dict[str, Any]]
    seed: int = 0
    predicted_classes: dict[int, int] = field(default_factory=dict)
    structure: dict[str, float] = field(default_factory=dict)
    per_image: tuple[list[str], torch.Tensor, list[tuple[str, float, str, torch.Tensor]]] | None = None
    report: list[str] = field(init=False)
    gradient_masking: bool = field(init=False)

    def __post_init__(self) -> None:
        self.report, self.gradient_masking = robustness_report(
            self.rows, self.plan, self.seed, self.predicted_classes, self.structure
        )

    @property
    def single_class(self) -> bool:
        """Whether the model predicts one class for every image."""
        counts = self.predicted_classes.values()
        return sum(c > 0 for c in counts) < 2 and sum(counts) > 0

    def metrics(self, prefix: str = "adv_") -> dict[str, float]:
        """The metrics, named as :meth:`EvaluationPlan.metric_names` lists them, then the saturation."""
        metrics = {f"{prefix}clean_acc": self.rows[0]["accuracy"]}
        for r in self.rows[1:]:
            names = metric_names_of((r["role"], r["attack"], r["eps"]), prefix)
            metrics[names[0]] = r["accuracy"]
            if len(names) > 1:
                metrics[names[1]] = r["success_rate"]
        metrics[f"{prefix}gradient_masking"] = 1.0 if self.gradient_masking else 0.0
        metrics.update({f"{prefix}saturation_{k}": v for k, v in self.structure.items()})
        return metrics

    def write(self, output_dir: str | os.PathLike, file_prefix: str = "robustness") -> None:
        """``<prefix>.csv`` and ``.json`` (rows, report, settings) and ``<prefix>_per_image.csv``."""
        extra: dict[str, Any] = {
            "variant": self.rows[0]["variant"],
            "seed": self.seed,
            "epoch": self.rows[0]["epoch"],
            "attacks": self.plan.attacks,
            "report": self.report,
            "single_class": self.single_class,
            "predicted_classes": {str(k): v for k, v in self.predicted_classes.items()},
        }
        if self.plan.ensemble:
            extra["headline"] = self.plan.headline()
        if self.plan.structure_checks:
            extra["structure"] = {"saturation": dict(self.structure), "apgd_strong": self.plan.structure_check_kwargs}
        write_results(self.rows, output_dir, file_prefix, **extra)
        if self.per_image is not None:
            write_per_image(per_image_path(output_dir, file_prefix), *self.per_image)
