"""
A study's report: per seed the comparison table, over seeds the aggregate (mean and spread, from
:mod:`monai_assim.robustness.stats`) and the paired per-image comparison with vanilla, the figures, and
``study.json``. Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_assim.metrics.assimilation import MOVEMENT_KEYS, assimilation_movement
from monai_assim.robustness.compare import compare_results
from monai_assim.study.plan import ARMS, MOVEMENT_FILE, PER_IMAGE_FILE, StudyOptions, StudyPlan
from monai_assim.study.run import _example_images, _load_network
from monai_assim.utils import atomic_write_csv, atomic_write_text
from monai_assim.visualize.examples_plot import plot_examples

__all__ = ["write_aggregate", "write_comparison", "write_paired", "write_reports"]

logger = logging.getLogger("monai_assim.study")


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
    rows: Sequence[Mapping[str, Any]], output_dir: Path, title: str = "", note: str = ""
) -> tuple[Path, Path]:
    """Write ``comparison.csv`` and ``comparison.md`` (accuracy per run and the assimilated - vanilla delta)."""
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
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def _headline_note(headline: Mapping[str, Any]) -> str:
    """The tables' line naming what the worst case is (``""`` without an ensemble)."""
    if not headline:
        return ""
    bound = " These are UPPER BOUNDS (the quick budget)." if headline.get("upper_bound") else ""
    return f"Worst case ({headline.get('budget')} attack budget): {headline.get('description')}.{bound}"


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
) -> tuple[Path, Path]:
    """``aggregate.csv`` (long: one row per arm, attack, eps) and ``aggregate.md`` (wide: mean ± std [min, max]
    per arm, then the assimilation movement per arm)."""
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
                "and chroma; GLCM term as the loss computes it):"
            ),
            "",
            "| arm | " + " | ".join(MOVEMENT_KEYS) + " |",
            "|" + "---|" * (1 + len(MOVEMENT_KEYS)),
        ]
        for arm, m in movement.items():
            mean = m.get("mean") or {}
            cells = [
                (f"{255 * mean[k]:.2f}" if k not in ("glcm", "grey_correlation") else f"{mean[k]:.3f}")
                if k in mean
                else "-"
                for k in MOVEMENT_KEYS
            ]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def write_paired(rows: Sequence[Mapping[str, Any]], output_dir: Path, title: str = "") -> tuple[Path, Path]:
    """``paired.csv`` (every row of :func:`monai_assim.robustness.stats.paired_flips`) and ``paired.md`` (pooled rows,
    then per seed)."""
    csv_path, md_path = output_dir / "paired.csv", output_dir / "paired.md"
    columns = [
        "seed",
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
            "Each arm against vanilla on the same test images. `lost`: images vanilla classifies correctly "
            "and the arm does not (under that attack and eps); `gained`: the reverse; p: exact two-sided "
            "McNemar (sign) test on lost vs gained. `pooled` adds the seeds' counts."
        ),
        "",
        "| seed | arm | attack | eps (x/255) | n | lost | gained | net | p |",
        "|" + "---|" * 9,
    ]
    ordered = [r for r in rows if r["seed"] == "pooled"] + [r for r in rows if r["seed"] != "pooled"]
    for r in ordered:
        label = r["attack"] + {"attack": "", "clean": "", "worst": "", "check": " (check)"}.get(
            r["role"], f" ({r['role']})"
        )
        lines.append(
            f"| {r['seed']} | {r['arm']} | {label} | {r['eps_255']:g} | {r['n']} | {r['ref_right_arm_wrong']} | "
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


def write_reports(o: StudyOptions, plan: StudyPlan, timings: Mapping[str, Any]) -> dict[str, Any]:
    """
    After the jobs: the tables (``comparison``, with several seeds ``aggregate`` and ``paired``), the figures
    and ``study.json``, whose content it returns. ``prune`` then removes the runs' checkpoints.
    """
    bundle, backbone, out, multi = o.bundle, o.backbone, plan.out, plan.multi
    seed_list, names, attacks, worst_case = plan.seeds, plan.names, plan.attacks, plan.worst_case
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
    for s in seed_list:
        results[s] = {}
        for name in names:
            run_dir = plan.run_dir(s, name)
            label = f"seed{s}/{name}" if multi else name
            results[s][name] = _read_rows(run_dir / "eval" / "robustness.csv")
            saved = json.loads((run_dir / "eval" / "robustness.json").read_text())
            reports[label] = saved.get("report", [])
            headline = headline or saved.get("headline") or {}
            if saved.get("single_class"):
                single_class.append(label)
            summaries[label] = load_run_summary(run_dir)
            if (run_dir / "eval" / PER_IMAGE_FILE).is_file():
                per_image.setdefault(s, {})[name] = read_per_image(
                    run_dir / "eval" / PER_IMAGE_FILE, summaries[label].get("dataset_dir")
                )
            mfile = run_dir / "eval" / MOVEMENT_FILE
            m = json.loads(mfile.read_text()).get("movement") if mfile.is_file() else None
            if m is not None:
                movement.setdefault(name, {"per_seed": {}})["per_seed"][s] = m
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
        )
    for m in movement.values():
        spread = {k: mean_and_spread([v[k] for v in m["per_seed"].values()]) for k in MOVEMENT_KEYS}
        m["mean"] = {k: spread[k]["mean"] for k in MOVEMENT_KEYS}
        m["std"] = {k: spread[k]["std"] for k in MOVEMENT_KEYS}

    files: dict[str, Any] = {
        "comparison": None if multi else "comparison.csv",
        "table": None if multi else "comparison.md",
    }
    aggregate = aggregate_over_seeds(results)
    if multi:
        write_aggregate(
            aggregate,
            movement,
            out,
            f"{bundle}, {backbone}: accuracy over seeds {seed_list}",
            _tables_note(headline, single_class),
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
    paired = paired_flips(per_image) if per_image and "vanilla" in names else []
    if paired:
        write_paired(paired, out, f"{bundle}, {backbone}: paired comparison with vanilla")
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
        sm = summaries[label]
        return {
            "arm": name,
            "variant": ARMS[name]["variant"],
            "overrides": ARMS[name],
            "settings": sm["settings"],
            "demo_data": sm["demo_data"],
            "counts": sm.get("counts"),
            "best_val_acc": (sm.get("best_validation") or {}).get("val_acc", sm.get("best_metric")),
            "selection": sm.get("selection"),
            "best_epoch": sm.get("best_epoch"),
            "epochs_run": sm.get("epochs_completed"),
            "stopped_early": sm.get("stopped_early"),
        }

    doc = {
        "bundle": bundle,
        "command": shlex.join(["python", "-m", "monai_assim.study"] + sys.argv[1:])
        if Path(sys.argv[0]).parent.name == "study" or sys.argv[0].endswith("study.py")
        else None,
        "seeds": seed_list,
        "arms": {n: ARMS[n] for n in names},
        "runs": {
            (f"seed{s}/{n}" if multi else n): run_doc(f"seed{s}/{n}" if multi else n, n)
            for s in seed_list
            for n in names
        },
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
            "pooled": [r for r in paired if r["seed"] == "pooled"],
        },
        "assimilation_movement": movement,
        "timings_s": timings,
        "files": dict(files, figure=figure and Path(figure).name, examples=examples and Path(examples).name),
    }
    atomic_write_text(out / "study.json", json.dumps(doc, indent=2, default=str) + "\n")
    return doc
