"""
What the strong default evaluation costs against the earlier default, and what it finds.

``evaluate.json`` of a trained run on a fixed stratified subset of its test split, once per plan, in one
process after another (one thread by default, so the times compare):

- ``earlier``: the default before the attack budgets: the paper's four attacks at 1..8/255, Square with 100
  queries at 8/255, the PGD-20 check at 64/255 (no ensemble; its worst case is over those attacks);
- ``quick``, ``standard``, ``thorough``: the paper's four as curves plus the budget's ensemble at every eps,
  with the convergence check (the default evaluation is ``standard``).

Each plan writes to ``<out>/<run name>/<plan>/``; a plan whose ``robustness.json`` exists is skipped, so
the script resumes. The table (``<out>/budget_table.md``) gives the wall time of each plan and the worst
case per eps.

Usage::

    python benchmarks/evaluation_budget.py --run <run folder> [--run <another>] --out /tmp/budgets \\
        [--per_class 50] [--plans earlier quick standard thorough] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER = "{'FGSM': {}, 'BIM': {}, 'MIFGSM': {}, 'PGD': {}}"
PLANS = {
    "earlier": [
        "--attacks",
        PAPER[:-1] + ", 'Square': {'n_queries': 100}}",
        "--attack_eps",
        "$dict(Square=[8 / 255])",
        "--attack_budget",
        "none",
        "--worst_case",
        "True",
    ],
    "quick": ["--attacks", PAPER, "--attack_budget", "quick"],
    "standard": ["--attacks", PAPER, "--attack_budget", "standard"],
    "thorough": ["--attacks", PAPER, "--attack_budget", "thorough"],
}


def subset(run: Path, per_class: int, out: Path) -> Path:
    """The first ``per_class`` test images of each class, in the run's recorded order."""
    from monai_assim.bundle import load_datalist

    taken: dict[int, int] = {}
    items = []
    for item in load_datalist(run, "test"):
        label = int(item["label"])
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            items.append(item)
    path = out / f"{run.name}_test_subset.json"
    path.write_text(json.dumps(items))
    return path


def evaluate(run: Path, plan: str, datalist: Path, out: Path, threads: int) -> float | None:
    eval_dir = out / run.name / plan
    if (eval_dir / "robustness.json").is_file():
        return None
    summary = json.loads((run / "run_summary.json").read_text())["settings"]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"bundles/{args_bundle(run)}/evaluate.json"]
    cmd += ["--output_dir", str(run), "--eval_dir", str(eval_dir), "--variant", summary["variant"]]
    cmd += ["--backbone", summary["backbone"], "--datalist", f"$__import__('json').load(open('{datalist}'))"]
    cmd += PLANS[plan]
    eval_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with (eval_dir / "log.txt").open("w") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True, env=env)
    seconds = time.perf_counter() - start
    (eval_dir / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
    print(f"[{time.strftime('%H:%M:%S')}] {run.name} {plan}: {seconds:.0f} s", flush=True)
    return seconds


def args_bundle(run: Path) -> str:
    return json.loads((run / "run_summary.json").read_text())["modality"]


def table(runs: list[Path], plans: list[str], out: Path) -> str:
    lines = []
    for run in runs:
        lines += [
            f"### {run.name}",
            "",
            "| plan | wall time | clean | " + " | ".join(f"worst {k}/255" for k in range(1, 9)) + " |",
        ]
        lines.append("|---|---|---|" + "---|" * 8)
        for plan in plans:
            path = out / run.name / plan / "robustness.json"
            if not path.is_file():
                continue
            doc = json.loads(path.read_text())
            rows = doc["rows"]
            clean = next(r["accuracy"] for r in rows if r["role"] == "clean")
            worst = {round(r["eps_255"]): r["accuracy"] for r in rows if r["role"] == "worst"}
            wall = float((out / run.name / plan / "wall_seconds.txt").read_text())
            cells = " | ".join(f"{worst[k]:.3f}" if k in worst else "" for k in range(1, 9))
            lines.append(f"| {plan} | {wall:.0f} s | {clean:.3f} | {cells} |")
            flags = [line for line in doc.get("report", []) if line.startswith(("NOT CONVERGED", "possible gradient"))]
            lines += [f"|  | {flag} | | | | | | | | | |" for flag in flags]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per_class", type=int, default=50)
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = [r.resolve() for r in args.run]
    for run in runs:
        datalist = subset(run, args.per_class, out)
        for plan in args.plans:
            evaluate(run, plan, datalist, out, args.threads)
            (out / "budget_table.md").write_text(table(runs, args.plans, out))
    print((out / "budget_table.md").read_text())


if __name__ == "__main__":
    main()
