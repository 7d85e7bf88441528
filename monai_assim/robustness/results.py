"""
Robustness results: the row schema, writing (CSV/JSON, atomic), loading, and per-image results.

One home for what :class:`~monai_assim.handlers.AdversarialRobustnessHandler` writes and what the plots
and the study read back:

- summary rows, one per (attack, eps, role), columns :data:`RESULT_COLUMNS`, written to
  ``<prefix>.csv`` and ``<prefix>.json`` by :func:`write_results`, read by :func:`load_robustness_rows`;
- per-image rows, long format, columns :data:`PER_IMAGE_COLUMNS`, written to ``<prefix>_per_image.csv``
  by :func:`write_per_image`, read by :func:`load_per_image_rows`;
- the one key of a result row, :func:`row_key` ``(attack, eps_255, role)``, which the comparisons, the
  statistics over seeds and the paired tests all use, and the one constructor of a row, :func:`result_row`;
- the worst case over attacks, :func:`worst_case_correct`: an image counts as robust at eps only when it
  is classified correctly under EVERY attack run at that eps (a per-image AND), as AutoAttack reports.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a reader
never sees a half-written file.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from monai_assim.utils import atomic_write_csv, atomic_write_text

__all__ = [
    "PER_IMAGE_COLUMNS",
    "RESULT_COLUMNS",
    "WORST",
    "eps_tag",
    "load_per_image_rows",
    "load_robustness_rows",
    "per_image_path",
    "result_row",
    "row_key",
    "worst_case_correct",
    "write_per_image",
    "write_results",
]

RESULT_COLUMNS: tuple[str, ...] = (
    "attack",
    "eps",
    "eps_255",
    "role",
    "n",
    "n_clean_correct",
    "n_correct",
    "accuracy",
    "n_success",
    "success_rate",
    "seconds",
    "variant",
    "seed",
    "epoch",
)
"""Columns of the summary CSV file, and keys of each JSON row, one row per (attack, eps, role)."""

PER_IMAGE_COLUMNS: tuple[str, ...] = ("sample", "image", "label", "attack", "eps_255", "role", "correct")
"""Columns of the per-image CSV file (long format, one row per sample and (attack, eps, role)):
``sample`` the running index in evaluation order, ``image`` the file name (``""`` when unknown),
``label`` the class index, ``attack`` the attack name (``"clean"``, ``"worst"``), ``eps_255`` the budget
in units of 1/255 (0 for clean), ``role`` as in the summary rows, ``correct`` 1 or 0."""

WORST = "worst"
"""Attack name of the worst-case rows."""

_NUMERIC = ("eps", "eps_255", "n", "n_clean_correct", "n_correct", "accuracy", "n_success", "success_rate", "seconds")


def eps_tag(eps: float) -> str:
    """``eps`` in units of 1/255, as used in metric names and reports: 8/255 -> ``"8"``, 0.5/255 -> ``"0.5"``."""
    return f"{round(eps * 255, 4):g}"


def row_key(row: Mapping[str, Any]) -> tuple[str, float, str]:
    """
    ``(attack, eps_255, role)``: what identifies a result row (summary or per-image) across runs and seeds.
    ``eps_255`` is rounded to 4 decimals; a row without it takes ``eps * 255``; a row without a role is an
    ``"attack"`` row (files written before roles).
    """
    eps_255 = row.get("eps_255")
    if eps_255 is None or eps_255 == "" or (isinstance(eps_255, float) and math.isnan(eps_255)):
        eps_255 = float(row["eps"]) * 255
    return str(row["attack"]), round(float(eps_255), 4), str(row.get("role") or "attack")


def result_row(
    attack: str,
    eps: float,
    role: str,
    counts: Sequence[int],
    seconds: float,
    variant: str,
    seed: int,
    epoch: int,
) -> dict[str, Any]:
    """
    One summary row (columns :data:`RESULT_COLUMNS`) from ``counts = (n, n_clean_correct, n_correct,
    n_success)``: accuracy ``n_correct / n``, success rate ``n_success / n_clean_correct`` (NaN when a
    denominator is 0).
    """
    n, n_clean_correct, n_correct, n_success = (int(c) for c in counts)

    def ratio(a: int, b: int) -> float:
        return a / b if b > 0 else float("nan")

    values = (attack, eps, round(eps * 255, 4), role, n, n_clean_correct, n_correct, ratio(n_correct, n))
    values += (n_success, ratio(n_success, n_clean_correct), seconds, variant, seed, epoch)
    return dict(zip(RESULT_COLUMNS, values))


def _nan_to(value: Any, missing: Any) -> Any:
    return missing if isinstance(value, float) and math.isnan(value) else value


def write_results(
    rows: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike, file_prefix: str = "robustness", **extra: Any
) -> tuple[str, str]:
    """
    Write summary rows to ``<output_dir>/<file_prefix>.csv`` (columns :data:`RESULT_COLUMNS`, NaN as an
    empty cell) and ``.json`` (``{**extra, "rows": [...]}``, NaN as ``null``), each atomically.

    Returns:
        the CSV and JSON paths.
    """
    base = os.path.join(os.fspath(output_dir), file_prefix)
    atomic_write_csv(base + ".csv", RESULT_COLUMNS, [{k: _nan_to(v, "") for k, v in r.items()} for r in rows], "\r\n")
    payload = {**extra, "rows": [{k: _nan_to(v, None) for k, v in r.items()} for r in rows]}
    atomic_write_text(base + ".json", json.dumps(payload, indent=2))
    return base + ".csv", base + ".json"


def load_robustness_rows(source: str | os.PathLike | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """
    Rows of a result file written by :class:`~monai_assim.handlers.AdversarialRobustnessHandler`
    (``.csv`` or ``.json``), or already loaded rows (returned as dict copies). Numeric columns become
    floats (empty / ``null`` -> NaN).

    Raises:
        ValueError: unknown file type, or rows without the ``attack``/``eps``/``accuracy`` columns.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.endswith(".json"):
            with open(path) as f:
                data = json.load(f)
            rows = data["rows"] if isinstance(data, Mapping) else data
        elif path.endswith(".csv"):
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            raise ValueError(f"result file must be .csv or .json, got {path!r}.")
    else:
        rows = source
    out = []
    for r in rows:
        r = dict(r)
        missing = {"attack", "eps", "accuracy"} - set(r)
        if missing:
            raise ValueError(f"result row lacks {sorted(missing)}: {r}.")
        for k in _NUMERIC:
            if k in r:
                r[k] = float("nan") if r[k] in ("", None) else float(r[k])
        out.append(r)
    return out


def per_image_path(output_dir: str | os.PathLike, file_prefix: str = "robustness") -> str:
    """``<output_dir>/<file_prefix>_per_image.csv``."""
    return os.path.join(os.fspath(output_dir), f"{file_prefix}_per_image.csv")


def write_per_image(
    path: str | os.PathLike,
    images: Sequence[str],
    labels: Sequence[int] | torch.Tensor,
    results: Sequence[tuple[str, float, str, Sequence[bool] | torch.Tensor]],
) -> str:
    """
    Write the per-image CSV (columns :data:`PER_IMAGE_COLUMNS`) atomically.

    Args:
        path: the CSV file.
        images: file name per sample (``""`` when unknown), in evaluation order.
        labels: class index per sample.
        results: ``(attack, eps_255, role, correct)`` with ``correct`` one bool per sample; rows are
            written grouped by result, samples in order within each.
    """
    labels = [int(v) for v in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} image names for {len(labels)} labels.")

    def lines():
        for attack, eps_255, role, correct in results:
            correct = correct.tolist() if isinstance(correct, torch.Tensor) else list(correct)
            if len(correct) != len(labels):
                raise ValueError(f"{attack} ({role}, eps {eps_255}): {len(correct)} results for {len(labels)} samples.")
            for i, (name, label, c) in enumerate(zip(images, labels, correct)):
                yield [i, name, label, attack, f"{float(eps_255):g}", role, int(bool(c))]

    atomic_write_csv(path, PER_IMAGE_COLUMNS, lines(), "\r\n")
    return os.fspath(path)


def load_per_image_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a per-image CSV with ``sample``, ``label``, ``correct`` as int and ``eps_255`` as float."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if set(PER_IMAGE_COLUMNS) - set(r):
            raise ValueError(f"per-image row lacks {sorted(set(PER_IMAGE_COLUMNS) - set(r))}: {r}.")
        r["sample"], r["label"], r["correct"] = int(r["sample"]), int(r["label"]), int(r["correct"])
        r["eps_255"] = float(r["eps_255"])
    return rows


def worst_case_correct(correct: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""
    Per-image worst case over attacks: :math:`w_i = \bigwedge_a c_{a,i}`.

    Args:
        correct: one bool tensor ``(N,)`` per attack run at the same eps (adversarial prediction correct).

    Returns:
        bool ``(N,)``: the samples that survive every attack. Its mean is the worst-case robust accuracy.
    """
    if not correct:
        raise ValueError("the worst case needs at least one attack.")
    out = correct[0].bool().clone()
    for c in correct[1:]:
        out &= c.bool()
    return out
