"""
A study's report: per seed the comparison table, over seeds the aggregate (mean and spread, from
:mod:`monai_assim.robustness.stats`) and the paired per-image comparisons (:func:`paired_comparisons`:
with vanilla, assimilated against vanilla under the same training, robust against clean selection), the
runs' training time, checkpoint epochs and T/C saturation (``runs.csv`` and the tables' "Runs" sections),
the figures, and ``study.json``. Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_assim.metrics.assimilation import MOVEMENT_KEYS, assimilation_movement
from monai_assim.robustness.attacks import describe_attack
from monai_assim.robustness.compare import compare_results
from monai_assim.study.plan import (
    ARMS,
    COPIED_FILE,
    MOVEMENT_FILE,
    PER_IMAGE_FILE,
    SATURATION_KEYS,
    StudyOptions,
    StudyPlan,
    paired_comparisons,
)
from monai_assim.study.run import _example_images, _load_network
from monai_assim.utils import atomic_write_csv, atomic_write_text
from monai_assim.visualize.examples_plot import plot_examples

__all__ = ["RUN_COLUMNS", "training_time", "write_aggregate", "write_comparison", "write_paired", "write_reports"]

logger = logging.getLogger("monai_assim.study")

#: what the study measures of T and C per row (the movement table of ``aggregate.md``)
STUDY_MOVEMENT_KEYS = (*MOVEMENT_KEYS, *SATURATION_KEYS)

#: the columns of ``runs.csv``: one row per (seed, table row) with its training and its checkpoint
RUN_COLUMNS = (
    "seed",
    "arm",
    "trained_arm",
    "checkpoint",
    "checkpoint_epoch",
    "epochs",
    "epochs_run",
    "train_s",
    "train_s_per_epoch",
    "train_time_complete",
    "val_acc",
    "val_robust_acc",
    "val_robust_last",
    "val_robust_rise",
    "saturation_texture",
    "saturation_color",
    "single_class",
    "same_network_as",
)

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"

#: the epochs over which ``val_robust_rise`` is measured: the last one against this many epochs before it
RISE_EPOCHS = 3


def training_time(summary: Mapping[str, Any]) -> tuple[float | None, bool]:
    """
    The training wall-clock of a run in seconds, from its run summary: ``finished - started`` of each
    training session (the last one and, for a resumed run, those in ``"history"``), validation included;
    and whether every session recorded both times (a killed session did not: the sum is then a lower bound).
    ``(None, False)`` for a run that never finished a session.
    """
    total, complete, any_session = 0.0, True, False
    for session in [*(summary.get("history") or []), summary]:
        try:
            start = time.mktime(time.strptime(str(session["started"]), _TIME_FORMAT))
            end = time.mktime(time.strptime(str(session["finished"]), _TIME_FORMAT))
        except (KeyError, ValueError):
            complete = False
            continue
        total += max(0.0, end - start)
        any_session = True
    return (total if any_session else None), complete and any_session


def _read_rows(path: Path) -> list[dict[str, Any]]:
    from monai_assim.visualize import load_robustness_rows

    return load_robustness_rows(str(path))


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def write_comparison(
    rows: Sequence[Mapping[str, Any]],
    output_dir: Path,
    title: str = "",
    note: str = "",
    runs: Sequence[Mapping[str, Any]] = (),
) -> tuple[Path, Path]:
    """Write ``comparison.csv`` and ``comparison.md`` (accuracy per run and the assimilated - vanilla delta;
    with ``runs``, rows of :data:`RUN_COLUMNS`, a "Runs" section: checkpoint, training time, saturation)."""
    columns = list(rows[0])
    csv_path, md_path = output_dir / "comparison.csv", output_dir / "comparison.md"
    atomic_write_csv(csv_path, columns, rows, lineterminator="\r\n")
    shown = ["attack", "eps_255", "n"] + [c for c in columns if c.endswith("_accuracy")]
    lines = [f"# {title}".rstrip(), ""] if title else []
    lines += [note, ""] if note else []
    lines += [
        "| " + " | ".join("eps (x/255)" if c == "eps_255" else c for c in shown) + " |",
        "|" + "---|" * len(shown),
    ]
    for r in rows:
        label = r["attack"] + (" (large-eps check)" if r.get("role") == "check" else "")
        lines.append("| " + " | ".join([label] + [_fmt(r[c]) for c in shown[1:]]) + " |")
    lines += _runs_lines(runs)
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def _percent(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f}%"


def _robust_cell(r: Mapping[str, Any]) -> str:
    """``val robust`` of a Runs line: at the checkpoint's epoch, at the last epoch and its rise."""
    if r.get("val_robust_acc") is None and r.get("val_robust_last") is None:
        return "-"
    rise = r.get("val_robust_rise")
    shown = "" if rise is None else f" ({float(rise):+.3f})"
    return f"{_fmt(r.get('val_robust_acc'))} / {_fmt(r.get('val_robust_last'))}{shown}"


def _runs_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The "Runs" section of ``comparison.md``: one line per row of the table (one seed)."""
    if not runs:
        return []
    lines = [
        "",
        "Runs: the evaluated checkpoint (its epoch), epochs trained, training wall-clock (validation included; "
        "`>=`: a session of a resumed run left no end time), robust validation accuracy (the run's selection "
        f"attack) at the checkpoint's epoch / at the last epoch (its rise over the last {RISE_EPOCHS} epochs: "
        "above 0, robust accuracy was still rising when training stopped) and the fraction of the output values "
        "of T and C their output map saturates (test images, assimilated rows).",
        "",
        "| run | checkpoint (epoch) | epochs run | training (s) | s / epoch | val robust: checkpoint / last (rise) "
        "| T saturation | C saturation | note |",
        "|" + "---|" * 9,
    ]
    for r in runs:
        seconds = r.get("train_s")
        shown = "-" if seconds is None else f"{'' if r.get('train_time_complete') else '>= '}{seconds:.0f}"
        per_epoch = r.get("train_s_per_epoch")
        notes = []
        if r.get("single_class"):
            notes.append("SINGLE CLASS")
        if r.get("trained_arm", r["arm"]) != r["arm"]:
            notes.append(f"the training of {r['trained_arm']}")
        if r.get("same_network_as"):
            notes.append(f"same network as {r['same_network_as']} (results copied)")
        lines.append(
            f"| {r['arm']} | {r['checkpoint']}.pt ({_fmt(r.get('checkpoint_epoch'))}) | {_fmt(r.get('epochs_run'))} | "
            f"{shown} | {'-' if per_epoch is None else f'{per_epoch:.1f}'} | {_robust_cell(r)} | "
            f"{_percent(r.get('saturation_texture'))} | "
            f"{_percent(r.get('saturation_color'))} | {'; '.join(notes)} |"
        )
    return lines


def _runs_summary_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The "Runs" section of ``aggregate.md``: per row, mean [min, max] over seeds."""
    if not runs:
        return []
    from monai_assim.robustness.stats import mean_and_spread

    rows = list(dict.fromkeys(r["arm"] for r in runs))
    lines = [
        "",
        "Runs, mean [min, max] over seeds: epochs trained, training wall-clock in seconds (validation included; "
        "`>=`: a resumed run's session left no end time), seconds per epoch, and the fraction of the output "
        "values of T and C their output map saturates (test images); robust validation accuracy at the "
        f"checkpoint's epoch and its rise over the last {RISE_EPOCHS} epochs of training; single class: seeds "
        "whose model predicts one class for every test image.",
        "",
        "| run | checkpoint | epochs run | training (s) | s / epoch | val robust | val robust rise | T saturation "
        "| C saturation | single class |",
        "|" + "---|" * 10,
    ]

    def cell(values: list[Any], fmt: Any) -> str:
        values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if not values:
            return "-"
        m = mean_and_spread(values)
        return f"{fmt(m['mean'])} [{fmt(m['min'])}, {fmt(m['max'])}]"

    for row in rows:
        mine = [r for r in runs if r["arm"] == row]
        partial = "" if all(r.get("train_time_complete") for r in mine) else ">= "
        single = sum(bool(r.get("single_class")) for r in mine)
        lines.append(
            f"| {row} | {mine[0]['checkpoint']}.pt | {cell([r.get('epochs_run') for r in mine], lambda v: f'{v:g}')} | "
            f"{partial}{cell([r.get('train_s') for r in mine], lambda v: f'{v:.0f}')} | "
            f"{cell([r.get('train_s_per_epoch') for r in mine], lambda v: f'{v:.1f}')} | "
            f"{cell([r.get('val_robust_acc') for r in mine], lambda v: f'{v:.3f}')} | "
            f"{cell([r.get('val_robust_rise') for r in mine], lambda v: f'{v:+.3f}')} | "
            f"{cell([r.get('saturation_texture') for r in mine], _percent)} | "
            f"{cell([r.get('saturation_color') for r in mine], _percent)} | "
            f"{f'SINGLE CLASS in {single} of {len(mine)} seeds' if single else 'no'} |"
        )
    return lines


def _headline_note(headline: Mapping[str, Any]) -> str:
    """The tables' line naming what the worst case is (``""`` without an ensemble)."""
    if not headline:
        return ""
    bound = " These are UPPER BOUNDS (the quick budget)." if headline.get("upper_bound") else ""
    members = headline.get("convergence_check") or {}
    check = (
        " Convergence check on what it left: " + ", ".join(describe_attack(n, kw) for n, kw in members.items()) + "."
        if members
        else " No convergence check."
    )
    return f"Worst case ({headline.get('budget')} attack budget): {headline.get('description')}.{bound}{check}"


def _tables_note(headline: Mapping[str, Any], single_class: Sequence[str]) -> str:
    """The tables' note: what the worst case is, and which runs predict a single class (not robustness)."""
    note = _headline_note(headline)
    if single_class:
        runs = ", ".join(single_class)
        note = (note + " " if note else "") + (
            f"SINGLE CLASS: {runs} predict(s) one class for every test image; their accuracies equal the class "
            "share under every attack: a collapsed model, not robustness."
        )
    return note


def write_aggregate(
    rows: Sequence[Mapping[str, Any]],
    movement: Mapping[str, Any],
    output_dir: Path,
    title: str = "",
    note: str = "",
    runs: Sequence[Mapping[str, Any]] = (),
) -> tuple[Path, Path]:
    """``aggregate.csv`` (long: one row per arm, attack, eps) and ``aggregate.md`` (wide: mean ± std [min, max]
    per arm, then the assimilation movement and saturation per arm and, with ``runs`` (rows of
    :data:`RUN_COLUMNS`), the runs' checkpoint, training time and saturation over seeds)."""
    csv_path, md_path = output_dir / "aggregate.csv", output_dir / "aggregate.md"
    columns = ["arm", "attack", "eps_255", "role", "n_seeds", "n_images", "mean", "std", "min", "max"]
    atomic_write_csv(csv_path, columns, rows, lineterminator="\r\n")
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    conds = list(dict.fromkeys((r["attack"], r["eps_255"], r["role"]) for r in rows))
    by = {(r["arm"], r["attack"], r["eps_255"], r["role"]): r for r in rows}
    n_seeds = max((r["n_seeds"] for r in rows), default=0)
    lines = [f"# {title}".rstrip(), ""] if title else []
    lines += [f"Accuracy over {n_seeds} seeds: mean ± std (sample std) [min, max]; n = test images per seed.", ""]
    lines += [note, ""] if note else []
    lines += ["| attack | eps (x/255) | n | " + " | ".join(arms) + " |", "|" + "---|" * (3 + len(arms))]
    for cond in conds:
        label = cond[0] + {"attack": "", "clean": "", "worst": "", "check": " (large-eps check)"}.get(
            cond[2], f" ({cond[2]})"
        )
        cells = []
        n = "-"
        for arm in arms:
            r = by.get((arm, *cond))
            if r is None:
                cells.append("-")
                continue
            n = f"{r['n_images']:g}"
            std = f" ± {r['std']:.3f}" if r["std"] is not None else ""
            cells.append(f"{r['mean']:.3f}{std} [{r['min']:.2f}, {r['max']:.2f}]")
        lines.append(f"| {label} | {cond[1]:g} | {n} | " + " | ".join(cells) + " |")
    if movement:
        lines += [
            "",
            (
                "Assimilation movement on test images (mean over seeds; grey levels in 1/255 for shifts "
                "and chroma; GLCM term as the loss computes it; saturation: the fraction of the output values "
                "of T and C their output map saturates):"
            ),
            "",
            "| arm | " + " | ".join(STUDY_MOVEMENT_KEYS) + " |",
            "|" + "---|" * (1 + len(STUDY_MOVEMENT_KEYS)),
        ]
        for arm, m in movement.items():
            mean = m.get("mean") or {}
            cells = [
                "-"
                if mean.get(k) is None
                else _percent(mean[k])
                if k in SATURATION_KEYS
                else f"{mean[k]:.3f}"
                if k in ("glcm", "grey_correlation")
                else f"{255 * mean[k]:.2f}"
                for k in STUDY_MOVEMENT_KEYS
            ]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += _runs_summary_lines(runs)
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def write_paired(rows: Sequence[Mapping[str, Any]], output_dir: Path, title: str = "") -> tuple[Path, Path]:
    """``paired.csv`` (every row of :func:`monai_assim.robustness.stats.paired_flips`, with its ``reference``,
    default ``vanilla``) and ``paired.md`` (pooled rows, then per seed)."""
    csv_path, md_path = output_dir / "paired.csv", output_dir / "paired.md"
    rows = [dict(r, reference=r.get("reference", "vanilla")) for r in rows]
    columns = [
        "seed",
        "reference",
        "arm",
        "attack",
        "eps_255",
        "role",
        "n",
        "both_right",
        "ref_right_arm_wrong",
        "ref_wrong_arm_right",
        "both_wrong",
        "net_gain",
        "p_mcnemar",
    ]
    atomic_write_csv(csv_path, columns, rows, lineterminator="\r\n")
    lines = [f"# {title}".rstrip(), ""] if title else []
    lines += [
        (
            "Each arm against its reference on the same test images: every arm against vanilla, each assimilated "
            "arm against the vanilla arm with the same training (and epochs), and an adversarial arm's robust-selected "
            "checkpoint against its clean-selected one (`<arm>_cleansel`, the same training). `lost`: images "
            "the reference classifies correctly and the arm does not (under that attack and eps); `gained`: the "
            "reverse; p: exact two-sided McNemar (sign) test on lost vs gained. `pooled` adds the seeds' counts."
        ),
        "",
        "| seed | reference | arm | attack | eps (x/255) | n | lost | gained | net | p |",
        "|" + "---|" * 10,
    ]
    ordered = [r for r in rows if r["seed"] == "pooled"] + [r for r in rows if r["seed"] != "pooled"]
    for r in ordered:
        label = r["attack"] + {"attack": "", "clean": "", "worst": "", "check": " (check)"}.get(
            r["role"], f" ({r['role']})"
        )
        lines.append(
            f"| {r['seed']} | {r['reference']} | {r['arm']} | {label} | {r['eps_255']:g} | {r['n']} | "
            f"{r['ref_right_arm_wrong']} | "
            f"{r['ref_wrong_arm_right']} | {r['net_gain']:+d} | {r['p_mcnemar']:.3g} |"
        )
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def _write_examples(
    out: Path, bundle: str, seed: int, runs: Sequence[tuple[str, Path]], n: int, device: str | None
) -> Path:
    """examples.png: original / alpha = 1 / default alpha, on the test images of the first seed."""
    from monai_assim.bundle import load_run_summary

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = load_run_summary(runs[0][1])["settings"]["image_size"]
    images, labels = _example_images(runs[0][1], n, size)
    nets, notes = {}, {}
    for _, run_dir in runs:
        settings = load_run_summary(run_dir)["settings"]
        a = settings["alpha"]
        title = f"assimilated, alpha = {a:g}\n" + ("(no GLCM loss)" if a == 1 else "(with GLCM loss)")
        nets[title] = _load_network(run_dir, dev)
        m = assimilation_movement(nets[title], images)
        notes[title] = (
            f"grey shift {255 * m['grey_shift']:.1f}/255\nchroma {255 * m['chroma']:.1f}/255, GLCM {m['glcm']:.2f}"
        )
    return plot_examples(
        images,
        nets,
        out / "examples.png",
        labels,
        notes=notes,
        title=f"{bundle}: test images (seed {seed}) and their assimilated versions C(T(x))",
    )


def _checkpoint_epoch(summary: Mapping[str, Any], checkpoint: str) -> tuple[int | None, dict[str, Any]]:
    """
    The epoch of a run's checkpoint (``best``: the one its rule kept; another, e.g. ``best_clean``: the run
    summary's ``selection.other_checkpoint`` where it names that file) and that epoch's record of the
    summary's per-epoch ``"epochs"`` (``val_acc`` ...; ``{}`` where absent). Read from the summary only, as
    the study's report runs after ``--prune`` may have removed the checkpoints (which is why
    :mod:`monai_assim.bundle.export_docs`, which reads the epoch from the checkpoint file, is not used).
    """
    selection = summary.get("selection") or {}
    if checkpoint == "best":
        epoch = summary.get("best_epoch", selection.get("best_epoch"))
    else:
        other = selection.get("other_checkpoint") or {}
        epoch = other.get("epoch") if other.get("file") in (None, f"{checkpoint}.pt") else None
    records = [e for e in summary.get("epochs") or [] if epoch is not None and e.get("epoch") == epoch]
    return epoch, dict(records[-1]) if records else {}


def _robust_trend(summary: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The robust validation accuracy of a run's last epoch and its rise over the :data:`RISE_EPOCHS` epochs
    before (against the first epoch in a shorter run); ``(None, None)`` where validation measured none."""
    by_epoch = {  # a repeated epoch (a summary of an earlier version's resume): its later record
        int(e["epoch"]): float(e["val_robust_acc"])
        for e in summary.get("epochs") or []
        if e.get("val_robust_acc") is not None and e.get("epoch") is not None
    }
    values = sorted((e, v) for e, v in by_epoch.items() if math.isfinite(v))
    if not values:
        return None, None
    last_epoch, last = values[-1]
    earlier = [v for e, v in values if e <= last_epoch - RISE_EPOCHS] or [values[0][1]]
    return last, round(last - earlier[-1], 6) if len(values) > 1 else None  # no float noise in the CSV


def _evaluation_plan(saved: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``robustness.json`` records of how the model was attacked: the attacks and their settings, the
    headline (ensemble budget, members, eps) and the (attack, eps, role) of its rows (the eps grids)."""
    from monai_assim.robustness.results import row_key

    return {
        "attacks": saved.get("attacks"),
        "headline": saved.get("headline") or {},
        "rows": sorted(row_key(r) for r in saved.get("rows") or []),
    }


def _run_row(
    plan: StudyPlan, seed: int, row: str, summary: Mapping[str, Any], movement: Mapping[str, Any] | None, single: bool
) -> dict[str, Any]:
    """One row of ``runs.csv`` (:data:`RUN_COLUMNS`) from a run summary and the row's evaluation folder."""
    checkpoint = plan.checkpoint_of(row)
    epoch, record = _checkpoint_epoch(summary, checkpoint)
    robust_last, robust_rise = _robust_trend(summary)
    seconds, complete = training_time(summary)
    epochs_run = summary.get("epochs_completed")
    copied = plan.eval_dir(seed, row) / COPIED_FILE
    same = ""
    if copied.is_file():
        source = json.loads(copied.read_text()).get("from", "eval")
        twins = [r for r in plan.rows if r != row and plan.arm_of(r) == plan.arm_of(row)]
        same = next((r for r in twins if plan.eval_dir(seed, r).name == source), source)
    return {
        "seed": seed,
        "arm": row,
        "trained_arm": plan.arm_of(row),
        "checkpoint": checkpoint,
        "checkpoint_epoch": epoch,
        "epochs": (summary.get("settings") or {}).get("epochs"),
        "epochs_run": epochs_run,
        "train_s": seconds,
        "train_s_per_epoch": seconds / epochs_run if seconds is not None and complete and epochs_run else None,
        "train_time_complete": complete,
        "val_acc": record.get("val_acc"),
        "val_robust_acc": record.get("val_robust_acc"),
        "val_robust_last": robust_last,
        "val_robust_rise": robust_rise,
        "saturation_texture": (movement or {}).get("saturation_texture"),
        "saturation_color": (movement or {}).get("saturation_color"),
        "single_class": single,
        "same_network_as": same,
    }


def _check_same_evaluation(plan: StudyPlan, seed: int, row: str, evaluated: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse to pair an evaluation-only row (``<arm>_cleansel``) with its arm when the two were attacked
    differently (:func:`_evaluation_plan`; e.g. the arm evaluated again with other eps, and the row not)."""
    from monai_assim.errors import UserInputError

    arm = plan.arm_of(row)
    differ = [k for k in evaluated[row] if evaluated[row][k] != evaluated[arm][k]]
    if differ:
        folder = plan.eval_dir(seed, row)
        raise UserInputError(
            f"the row {row} ({folder / 'robustness.json'}) was attacked with other settings than the row {arm} "
            f"({plan.eval_dir(seed, arm) / 'robustness.json'}): {', '.join(differ)} differ, so the two cannot be "
            "compared image by image.",
            f"delete {folder} and run the study again: it evaluates {row} with {arm}'s evaluation.",
        )


def write_reports(o: StudyOptions, plan: StudyPlan, timings: Mapping[str, Any]) -> dict[str, Any]:
    """
    After the jobs: the tables (``comparison``, with several seeds ``aggregate``; ``paired`` where the
    per-image files are; ``runs.csv``), the figures and ``study.json``, whose content it returns. ``prune``
    then removes the runs' checkpoints. The tables have one column (or row) per :attr:`StudyPlan.rows`: the
    arms and, with ``clean_selection``, the clean-selected checkpoints of the adversarial arms.
    """
    bundle, backbone, out, multi = o.bundle, o.backbone, plan.out, plan.multi
    seed_list, names, attacks, worst_case = plan.seeds, plan.names, plan.attacks, plan.worst_case
    rows = plan.rows
    n_examples, device, prune, jobs, eps, attack_eps = o.n_examples, o.device, o.prune, o.jobs, o.eps, o.attack_eps

    from monai_assim.bundle import load_run_summary
    from monai_assim.robustness.compare import paired_flips, read_per_image
    from monai_assim.robustness.stats import aggregate_over_seeds, mean_and_spread, mean_over_seeds
    from monai_assim.visualize import plot_robustness

    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    reports: dict[str, list[str]] = {}
    headline: dict[str, Any] = {}
    summaries: dict[str, dict[str, Any]] = {}
    per_image: dict[int, dict[str, dict]] = {}
    movement: dict[str, dict[str, Any]] = {}
    single_class: list[str] = []
    runs: list[dict[str, Any]] = []
    for s in seed_list:
        results[s] = {}
        evaluated: dict[str, dict[str, Any]] = {}  # row -> its evaluation plan
        for name in rows:
            run_dir, eval_dir = plan.run_dir(s, plan.arm_of(name)), plan.eval_dir(s, name)
            label = f"seed{s}/{name}" if multi else name
            results[s][name] = _read_rows(eval_dir / "robustness.csv")
            saved = json.loads((eval_dir / "robustness.json").read_text())
            evaluated[name] = _evaluation_plan(saved)
            if plan.checkpoint_of(name) != "best":
                _check_same_evaluation(plan, s, name, evaluated)
            reports[label] = saved.get("report", [])
            headline = headline or saved.get("headline") or {}
            if saved.get("single_class"):
                single_class.append(label)
            summaries[label] = load_run_summary(run_dir)
            if (eval_dir / PER_IMAGE_FILE).is_file():
                per_image.setdefault(s, {})[name] = read_per_image(
                    eval_dir / PER_IMAGE_FILE, summaries[label].get("dataset_dir")
                )
            mfile = eval_dir / MOVEMENT_FILE
            m = json.loads(mfile.read_text()).get("movement") if mfile.is_file() else None
            if m is not None:
                movement.setdefault(name, {"per_seed": {}})["per_seed"][s] = m
            runs.append(_run_row(plan, s, name, summaries[label], m, bool(saved.get("single_class"))))
        title = (
            f"{bundle}, {backbone}, seed {s}: accuracy under attack"
            if multi
            else f"{bundle}, {backbone}: accuracy under attack"
        )
        write_comparison(
            compare_results(results[s]),
            out / "runs" / f"seed{s}" if multi else out,
            title,
            _tables_note(headline, [x for x in single_class if not multi or x.startswith(f"seed{s}/")]),
            [r for r in runs if r["seed"] == s],
        )
    for m in movement.values():
        # a key a file lacks (saturation, measured since the study reports it) is left out of its mean
        values = {k: [v[k] for v in m["per_seed"].values() if v.get(k) is not None] for k in STUDY_MOVEMENT_KEYS}
        spread = {k: mean_and_spread(v) if v else {"mean": None, "std": None} for k, v in values.items()}
        m["mean"] = {k: spread[k]["mean"] for k in STUDY_MOVEMENT_KEYS}
        m["std"] = {k: spread[k]["std"] for k in STUDY_MOVEMENT_KEYS}
    atomic_write_csv(out / "runs.csv", RUN_COLUMNS, runs, lineterminator="\r\n")

    files: dict[str, Any] = {
        "comparison": None if multi else "comparison.csv",
        "table": None if multi else "comparison.md",
        "runs": "runs.csv",
    }
    aggregate = aggregate_over_seeds(results)
    if multi:
        write_aggregate(
            aggregate,
            movement,
            out,
            f"{bundle}, {backbone}: accuracy over seeds {seed_list}",
            _tables_note(headline, single_class),
            runs,
        )
        files.update(
            aggregate="aggregate.csv",
            aggregate_table="aggregate.md",
            comparisons=[f"runs/seed{s}/comparison.md" for s in seed_list],
        )
        if worst_case:
            from monai_assim.visualize import plot_worst_case_by_arm

            plot_worst_case_by_arm(aggregate, out / "worst_case.png", f"{bundle}, {backbone}: worst case over attacks")
            files["worst_case_figure"] = "worst_case.png"
    pairs = paired_comparisons(rows, plan.epochs)
    paired: list[dict[str, Any]] = []
    for reference, name in pairs:
        both = {
            s: {reference: d[reference], name: d[name]} for s, d in per_image.items() if reference in d and name in d
        }
        paired += [dict(r, reference=reference) for r in paired_flips(both, reference=reference)]
    if paired:
        write_paired(paired, out, f"{bundle}, {backbone}: paired comparisons")
        files.update(paired="paired.csv", paired_table="paired.md")

    figure = None
    if "vanilla" in names and "assimilated" in names:
        figure = plot_robustness(
            mean_over_seeds([results[s]["assimilated"] for s in seed_list]),
            out / "robustness.png",
            vanilla=mean_over_seeds([results[s]["vanilla"] for s in seed_list]),
            title=f"{bundle}, {backbone}: vanilla (dashed) vs assimilated (solid)"
            + (f", mean over {len(seed_list)} seeds" if len(seed_list) > 1 else ""),
        )
    examples = None
    first = seed_list[0]
    assimilated_runs = [n for n in ("alpha1", "assimilated") if n in names]
    if assimilated_runs and n_examples > 0:
        if all((plan.run_dir(first, n) / "checkpoints" / "best.pt").is_file() for n in assimilated_runs):
            examples = _write_examples(
                out, bundle, first, [(n, plan.run_dir(first, n)) for n in assimilated_runs], n_examples, device
            )
        else:
            logger.warning(
                "study: no checkpoints left for the example panel (pruned earlier); examples.png not rewritten."
            )
    if prune:
        for s in seed_list:
            for name in names:
                shutil.rmtree(plan.run_dir(s, name) / "checkpoints", ignore_errors=True)
                shutil.rmtree(plan.run_dir(s, name) / "demo_data", ignore_errors=True)

    def run_doc(label: str, name: str) -> dict[str, Any]:
        """A row's run: ``best_epoch`` and ``best_val_acc`` are those of the row's checkpoint."""
        sm, arm, checkpoint = summaries[label], plan.arm_of(name), plan.checkpoint_of(name)
        epoch, record = _checkpoint_epoch(sm, checkpoint)
        if checkpoint == "best":
            record = dict(sm.get("best_validation") or {})
        return {
            "arm": name,
            "trained_arm": arm,
            "checkpoint": checkpoint,
            "variant": ARMS[arm]["variant"],
            "overrides": ARMS[arm],
            "settings": sm["settings"],
            "demo_data": sm["demo_data"],
            "counts": sm.get("counts"),
            "best_val_acc": record.get("val_acc", sm.get("best_metric") if checkpoint == "best" else None),
            "selection": sm.get("selection"),
            "best_epoch": epoch,
            "epochs_run": sm.get("epochs_completed"),
            "stopped_early": sm.get("stopped_early"),
            "train_s": training_time(sm)[0],
        }

    doc = {
        "bundle": bundle,
        "command": shlex.join(["python", "-m", "monai_assim.study"] + sys.argv[1:])
        if Path(sys.argv[0]).parent.name == "study" or sys.argv[0].endswith("study.py")
        else None,
        "seeds": seed_list,
        "arms": {n: ARMS[n] for n in names},
        "arm_epochs": dict(o.arm_epochs or {}),
        "rows": {n: {"arm": plan.arm_of(n), "checkpoint": plan.checkpoint_of(n)} for n in rows},
        "runs": {
            (f"seed{s}/{n}" if multi else n): run_doc(f"seed{s}/{n}" if multi else n, n)
            for s in seed_list
            for n in rows
        },
        "runs_table": runs,
        "single_class": single_class,
        "attacks": attacks,
        "headline": headline,
        "eps_255": [round(e * 255, 4) for e in (eps or [k / 255 for k in range(1, 9)])],
        "attack_eps_255": {k: [round(e * 255, 4) for e in v] for k, v in (attack_eps or {}).items()},
        "seed": seed_list[0],
        "jobs": jobs,
        "reports": reports,
        "aggregate": aggregate,
        "paired": {
            "per_image_files": sorted(f"seed{s}/{a}" for s, d in per_image.items() for a in d),
            "pairs": [list(p) for p in pairs],
            "pooled": [r for r in paired if r["seed"] == "pooled"],
        },
        "assimilation_movement": movement,
        "timings_s": timings,
        "files": dict(files, figure=figure and Path(figure).name, examples=examples and Path(examples).name),
    }
    atomic_write_text(out / "study.json", json.dumps(doc, indent=2, default=str) + "\n")
    return doc
