"""
Compare the saved robustness results of two runs, without attacking again: a figure and a table of
their own, beside (never over) each run's ``robustness.png``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_assim.errors import MissingInputError, UserInputError
from monai_assim.robustness.compare import COMPARE_COLUMNS, comparison_rows
from monai_assim.utils import atomic_write_csv, atomic_write_text
from monai_assim.visualize.robustness_plot import plot_robustness

__all__ = [
    "COMPARE_COLUMNS",
    "compare_robustness",
    "comparison_rows",
    "needs_evaluation",
    "results_run_name",
    "robustness_results_path",
    "write_robustness_figures",
]

logger = logging.getLogger(__name__)


def robustness_results_path(path: str | os.PathLike, file_prefix: str = "robustness") -> Path:
    """
    The saved result file that ``path`` names: a run folder (``<run>/eval/robustness.json``), an eval
    folder (``robustness.json``) or the result file itself (``.json`` or ``.csv``).

    Raises:
        MissingInputError: nothing there, or a folder without saved results (a ``FileNotFoundError``);
            the hint says what is expected.
        UserInputError: a file that is not ``.json``/``.csv`` (a ``ValueError``).
    """
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix not in (".json", ".csv"):
            raise UserInputError(
                f"{p} is not a robustness result file.", "give the robustness.json (or .csv) written by evaluate.json."
            )
        return p
    if p.is_dir():
        for candidate in (p / f"{file_prefix}.json", p / "eval" / f"{file_prefix}.json"):
            if candidate.is_file():
                return candidate
        raise MissingInputError(
            f"{p} holds no saved robustness results ({file_prefix}.json or eval/{file_prefix}.json).",
            "give a run folder, its eval folder or the robustness.json file of a run evaluated with evaluate.json.",
        )
    raise MissingInputError(
        f"{p} does not exist.",
        "give a run folder, its eval folder or the robustness.json file of a run evaluated with evaluate.json.",
    )


def results_run_name(path: str | os.PathLike) -> str:
    """
    A file-name-safe name of the run a result file belongs to: ``runs/vanilla_resnet18/eval/robustness.json``
    -> ``"vanilla_resnet18"``; a file outside an ``eval`` folder is named by its folder.
    """
    p = Path(path).expanduser().resolve()
    if p.is_file() or p.suffix in (".json", ".csv"):
        p = p.parent
    if p.name == "eval":
        p = p.parent
    return re.sub(r"[^A-Za-z0-9._-]+", "_", p.name).strip("_") or "other"


def _cell(v: float, signed: bool = False) -> str:
    """An accuracy (or difference) with 4 decimals; empty when missing."""
    return "" if math.isnan(v) else f"{v:+.4f}" if signed else f"{v:.4f}"


def _markdown(rows: list[dict[str, Any]], labels: tuple[str, str], sources: tuple[str, str]) -> str:
    out = [
        f"# Robustness: {labels[0]} vs {labels[1]}",
        "",
        f"- {labels[0]} (this run): `{sources[0]}`",
        f"- {labels[1]}: `{sources[1]}`",
        "",
        f"| attack | role | eps (x1/255) | {labels[0]} | {labels[1]} | difference | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n = {f"{v:g}" for v in (r["n_this"], r["n_other"]) if not math.isnan(v)}
        out.append(
            f"| {r['attack']} | {r['role']} | {r['eps_255']:g} | {_cell(r['accuracy_this'])} | "
            f"{_cell(r['accuracy_other'])} | {_cell(r['difference'], signed=True)} | {' / '.join(sorted(n))} |"
        )
    return "\n".join(out) + "\n"


def compare_robustness(
    results: str | os.PathLike,
    other: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    name: str | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, str]:
    """
    Compare two runs' saved robustness results; nothing is attacked again.

    Writes, into ``output_dir`` (default: the folder of ``results``), with ``<other>`` the other run's
    name (:func:`results_run_name`):

    - ``compare_<other>.png``: this run solid with filled circles, the other dashed with hollow squares,
      one colour per attack, curves shifted slightly along eps so that equal ones stay visible
      (:func:`~monai_assim.visualize.robustness_lines`);
    - ``compare_<other>.csv`` (:data:`COMPARE_COLUMNS`) and ``compare_<other>.md``: every result of either
      run side by side with the difference, including clean accuracy and the checks the plot leaves out.

    Args:
        results: this run: a run folder, eval folder or result file (:func:`robustness_results_path`).
        other: the other run, in the same forms.
        output_dir: where to write; default the folder of this run's result file.
        name: file name part instead of the other run's name.
        labels: legend/table names of the two runs; default the run names.

    Returns:
        ``{"png": ..., "csv": ..., "md": ...}`` paths.
    """
    this_path, other_path = robustness_results_path(results), robustness_results_path(other)
    names = [results_run_name(this_path), results_run_name(other_path)]
    if labels is None:
        if names[0] == names[1]:
            names = [f"{names[0]} (this run)", f"{names[1]} (other)"]
        labels = names
    labels = (str(labels[0]), str(labels[1]))
    out_dir = Path(output_dir) if output_dir is not None else this_path.parent
    stem = f"compare_{name or results_run_name(other_path)}"
    rows = comparison_rows(this_path, other_path)
    cells = [{k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
    paths = {
        "csv": str(atomic_write_csv(out_dir / f"{stem}.csv", COMPARE_COLUMNS, cells)),
        "md": str(
            atomic_write_text(out_dir / f"{stem}.md", _markdown(rows, labels, (str(this_path), str(other_path))))
        ),
    }
    paths["png"] = plot_robustness(this_path, out_dir / f"{stem}.png", vanilla=other_path, labels=labels)
    return paths


def needs_evaluation(
    eval_dir: str | os.PathLike, compare_with: str | os.PathLike | None = None, file_prefix: str = "robustness"
) -> bool:
    """
    Whether ``evaluate.json`` must attack: always without ``compare_with``; with it, only when the run has
    no saved ``<eval_dir>/robustness.json`` yet (the comparison then reads the saved results of both
    runs). ``compare_with`` is checked first, so a wrong path fails before any attack.

    Raises:
        FileNotFoundError / ValueError: from :func:`robustness_results_path` for ``compare_with``.
    """
    if compare_with is None:
        return True
    other = robustness_results_path(compare_with, file_prefix)
    own = Path(eval_dir) / f"{file_prefix}.json"
    if own.is_file():
        written = time.strftime("%Y-%m-%d %H:%M", time.localtime(own.stat().st_mtime))
        logger.info(
            f"compare_with: comparing the saved results {own} (written {written}) with {other}; no attack is run "
            "again. To evaluate this run again, run evaluate.json without --compare_with (or delete that file)."
        )
        return False
    logger.info(f"compare_with: {own} does not exist yet, so this run is evaluated first, then compared with {other}.")
    return True


def write_robustness_figures(
    eval_dir: str | os.PathLike, compare_with: str | os.PathLike | None = None, file_prefix: str = "robustness"
) -> list[str]:
    """
    The figures of ``evaluate.json``'s last step.

    ``<eval_dir>/robustness.png`` is drawn from ``robustness.json`` when there is no comparison, or when it
    is missing or older than the results; a comparison (``compare_with``) goes to its own files
    (:func:`compare_robustness`) and leaves ``robustness.png`` as it was. The table is also logged.

    Returns:
        the paths written.
    """
    eval_dir = Path(eval_dir)
    own_json, own_png = eval_dir / f"{file_prefix}.json", eval_dir / f"{file_prefix}.png"
    written = []
    stale = not own_png.is_file() or own_png.stat().st_mtime_ns < own_json.stat().st_mtime_ns
    if compare_with is None or stale:
        written.append(plot_robustness(own_json, own_png))
    if compare_with is not None:
        paths = compare_robustness(own_json, compare_with, eval_dir)
        for line in Path(paths["md"]).read_text().splitlines():
            if line.startswith("|"):
                logger.info(line)
        logger.info(f"comparison written: {paths['png']}, {paths['csv']}, {paths['md']}")
        written += [paths["png"], paths["csv"], paths["md"]]
    return written
