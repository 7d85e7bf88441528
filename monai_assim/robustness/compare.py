"""
Comparing robustness results: of several runs side by side (:func:`compare_runs`, the one comparison that
the study's table, :func:`compare_results`, and the two-run table, :func:`comparison_rows`, are read from),
and of two models image by image on the same test images (:func:`read_per_image`, :func:`paired_flips`, with
the exact McNemar test). Every result is identified by :func:`~monai_assim.robustness.results.row_key`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from monai_assim.robustness.results import PER_IMAGE_COLUMNS, load_per_image_rows, load_robustness_rows, row_key
from monai_assim.robustness.stats import mcnemar_exact

__all__ = [
    "COMPARE_COLUMNS",
    "COMPARISON_COLUMNS",
    "PER_IMAGE_COLUMNS",
    "compare_results",
    "compare_runs",
    "comparison_rows",
    "paired_flips",
    "read_per_image",
    "row_key",
]

Rows = Sequence[Mapping[str, Any]]

COMPARE_COLUMNS = (
    "attack",
    "role",
    "eps_255",
    "accuracy_this",
    "accuracy_other",
    "difference",
    "n_this",
    "n_other",
)
"""Columns of :func:`comparison_rows` (a run against one other, ``compare_<other>.csv``): one row per
(attack, role, eps) of either run; ``difference`` is ``accuracy_this - accuracy_other``; a result only one
run has leaves the other's columns empty."""

#: columns of :func:`compare_results` (the study's ``comparison.csv``); ``<name>`` stands for each run
COMPARISON_COLUMNS = (
    "attack",
    "eps",
    "eps_255",
    "role",
    "n",
    "<name>_accuracy",
    "<name>_success_rate",
    "delta_accuracy",
)


def compare_runs(results: Mapping[str, Rows]) -> list[tuple[tuple[str, float, str], dict[str, Any]]]:
    """
    The results of several runs side by side: ``[(row_key, {run name: its row or None}), ...]``, in the
    first run's order, then the results only the other runs have.
    """
    keyed = {name: {row_key(r): r for r in rows} for name, rows in results.items()}
    keys = dict.fromkeys(k for rows in keyed.values() for k in rows)
    return [(key, {name: rows.get(key) for name, rows in keyed.items()}) for key in keys]


def compare_results(results: Mapping[str, Rows]) -> list[dict[str, Any]]:
    """
    Side-by-side rows (:data:`COMPARISON_COLUMNS`) from the result rows of each run (``name -> rows``).

    One row per (attack, eps, role) found in the first run, in its order, with ``<name>_accuracy`` and
    ``<name>_success_rate`` for every run, and ``delta_accuracy = assimilated - vanilla`` where both runs
    are present.

    Raises:
        ValueError: a run lacks an (attack, eps) of the first run, or the runs used different sample
            counts (they must be evaluated on the same test images).
    """
    names = list(results)
    if not names:
        raise ValueError("compare_results needs the rows of at least one run.")
    out = []
    for key, by_run in compare_runs(results):
        first = by_run[names[0]]
        if first is None:
            continue  # a result only the other runs have
        row: dict[str, Any] = {
            "attack": key[0],
            "eps": float(first["eps"]),
            "eps_255": key[1],
            "role": key[2],
            "n": int(first["n"]),
        }
        for name, other in by_run.items():
            if other is None:
                raise ValueError(f"run {name!r} has no result for attack {key[0]} at eps {first['eps']} ({key[2]}).")
            if int(other["n"]) != row["n"]:
                raise ValueError(f"run {name!r} was evaluated on n={other['n']} images, {names[0]!r} on n={row['n']}.")
            row[f"{name}_accuracy"] = other["accuracy"]
            row[f"{name}_success_rate"] = other.get("success_rate")
        if "vanilla" in names and "assimilated" in names:
            row["delta_accuracy"] = row["assimilated_accuracy"] - row["vanilla_accuracy"]
        out.append(row)
    return out


def comparison_rows(this: str | os.PathLike | Rows, other: str | os.PathLike | Rows) -> list[dict[str, Any]]:
    """
    One row per (attack, role, eps) of either result set (this run's order, then the other's extra
    results), columns :data:`COMPARE_COLUMNS`; a missing value is NaN.
    """

    def value(row: Mapping[str, Any] | None, column: str) -> float:
        return float(row.get(column, math.nan)) if row is not None else math.nan

    rows = []
    for (attack, eps_255, role), by_run in compare_runs(
        {"this": load_robustness_rows(this), "other": load_robustness_rows(other)}
    ):
        a, b = value(by_run["this"], "accuracy"), value(by_run["other"], "accuracy")
        rows.append(
            dict(
                attack=attack,
                role=role,
                eps_255=eps_255,
                accuracy_this=a,
                accuracy_other=b,
                difference=a - b,
                n_this=value(by_run["this"], "n"),
                n_other=value(by_run["other"], "n"),
            )
        )
    return rows


def read_per_image(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> dict[tuple[str, str, float, str], bool]:
    """
    ``(image, attack, eps_255, role) -> correct`` from a ``robustness_per_image.csv`` (columns
    :data:`PER_IMAGE_COLUMNS`; the image path identifies an image, the ``sample`` index where it is empty).
    With ``image_root``, paths under it are made relative to it, so that runs whose data set lies in
    different folders (each demo run generates its own copy) pair their images.
    """
    root = os.path.abspath(os.fspath(image_root)) if image_root is not None else None
    out = {}
    for r in load_per_image_rows(path):
        image = r["image"] or f"sample {r['sample']}"
        if root is not None and os.path.isabs(image) and os.path.abspath(image).startswith(root + os.sep):
            image = os.path.relpath(os.path.abspath(image), root)
        out[(image, *row_key(r))] = bool(r["correct"])
    return out


def paired_flips(
    per_image: Mapping[Any, Mapping[str, Mapping[tuple, bool]]], reference: str = "vanilla"
) -> list[dict[str, Any]]:
    """
    Paired comparison of each arm with ``reference`` on the same test images, per seed and pooled.

    Args:
        per_image: ``seed -> arm -> {(image, attack, eps_255, role): correct}`` (:func:`read_per_image`).
        reference: the arm the others are compared with.

    Returns:
        rows ``{"seed", "arm", "attack", "eps_255", "role", "n", "both_right", "ref_right_arm_wrong",
        "ref_wrong_arm_right", "both_wrong", "net_gain", "p_mcnemar"}``: for every image present in both
        files, whether each model classified it correctly under that attack and eps.
        ``ref_right_arm_wrong`` counts the images that flip from correct (``reference``) to wrong (arm),
        ``ref_wrong_arm_right`` the flips back; ``net_gain`` is their difference (arm's accuracy gain in
        images) and ``p_mcnemar`` the exact two-sided McNemar p-value (:func:`mcnemar_exact`). Rows with
        ``seed = "pooled"`` add the counts over seeds (each seed's own test images; the pooled test is
        the sign test on all discordant pairs).
    """
    rows: list[dict[str, Any]] = []
    pooled: dict[tuple, list[int]] = {}
    for seed, arms in per_image.items():
        if reference not in arms:
            continue
        ref = arms[reference]
        for arm, data in arms.items():
            if arm == reference:
                continue
            counts: dict[tuple, list[int]] = {}
            for key, right in data.items():
                if key not in ref:
                    continue
                c = counts.setdefault(key[1:], [0, 0, 0, 0])
                c[(0 if ref[key] else 2) + (0 if right else 1)] += 1
            for cond, c in counts.items():
                rows.append(_paired_row(seed, arm, cond, c))
                p = pooled.setdefault((arm, *cond), [0, 0, 0, 0])
                for i in range(4):
                    p[i] += c[i]
    for (arm, *cond), c in pooled.items():
        rows.append(_paired_row("pooled", arm, tuple(cond), c))
    return rows


def _paired_row(seed: Any, arm: str, cond: tuple, c: Sequence[int]) -> dict[str, Any]:
    both_right, lost, gained, both_wrong = c
    return {
        "seed": seed,
        "arm": arm,
        "attack": cond[0],
        "eps_255": cond[1],
        "role": cond[2],
        "n": sum(c),
        "both_right": both_right,
        "ref_right_arm_wrong": lost,
        "ref_wrong_arm_right": gained,
        "both_wrong": both_wrong,
        "net_gain": gained - lost,
        "p_mcnemar": mcnemar_exact(lost, gained),
    }
