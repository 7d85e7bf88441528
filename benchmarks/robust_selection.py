"""
Which epoch robust selection keeps, and whether the validation attack that chooses it is strong enough.

One vanilla + PGD-AT training run with the chest CT bundle (every epoch's network kept in
``<out>/run/epochs``), then, each stage skipped when its output exists (so the script resumes):

1. ``train``: ``bundles/chest_ct/train.json`` with the given settings and an extra config that saves
   each epoch's network (MONAI ``CheckpointSaver``, ``n_saved=None``);
2. ``epochs``: every epoch's network on the run's validation list under candidate selection attacks
   (PGD-10, APGD-CE-10) and a strong reference (APGD-CE, 50 steps x 3 restarts), through
   :class:`monai_assim.metrics.RobustAccuracy` with the bundle's seeding, one row per (epoch, attack)
   appended to ``<out>/epochs.csv``;
3. ``test``: ``evaluate.json`` on ``best.pt`` (robust selection) and ``best_clean.pt`` (clean selection):
   APGD-CE, PGD-10 and Square (100 queries) at 1, 2 and 4/255 with the worst case per image, plus
   ``--structure_checks True`` (APGD-CE 50 steps x 3 restarts);
4. ``table``: ``<out>/table.md``.

Usage (the figures in docs/results.md)::

    python benchmarks/robust_selection.py --dataset_dir ../shared/data/chest_ct \\
        --pretrained ../shared/weights/mobilenet_v2_imagenet_from_tflite.pt --out /tmp/robust_selection
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: the candidate selection attacks and the strong reference: (label, RobustAccuracy keyword arguments)
ATTACKS = (
    ("PGD-10", {"attack": "PGD", "steps": 10}),
    ("APGD-CE-10", {"attack": "APGD", "steps": 10}),
    ("APGD-CE-50x3", {"attack": "APGD", "steps": 50, "restarts": 3}),
)
EPOCH_COLUMNS = ("epoch", "attack", "eps_255", "accuracy", "n", "seconds")

EPOCH_SAVER = {
    "epoch_saver": {
        "_target_": "monai.handlers.CheckpointSaver",
        "save_dir": "$os.path.join(@output_dir, 'epochs')",
        "save_dict": {"network": "@network"},
        "save_interval": 1,
        "n_saved": None,
        "epoch_level": True,
    },
    "run": [
        "$@validate#early_stop.set_trainer(@train#trainer)",
        "$@resume and @train#resume_loader.attach(@train#trainer)",
        "$@train#last_saver.attach(@train#trainer)",
        "$@epoch_saver.attach(@train#trainer)",
        "$@run_setup.run(@train#trainer)",
    ],
}


def _run(cmd: list[str], log: Path) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(cmd)}  > {log}", flush=True)
    with log.open("w") as f:
        subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True)


def train(args: argparse.Namespace, run: Path) -> None:
    summary = run / "run_summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("status") == "completed":
        return
    extra = args.out / "epoch_saver.json"
    extra.write_text(json.dumps(EPOCH_SAVER, indent=2))
    configs = f"['bundles/{args.bundle}/train.json','{extra}']"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs]
    cmd += ["--dataset_dir", str(args.dataset_dir), "--output_dir", str(run), "--variant", "vanilla"]
    cmd += ["--backbone", "mobilenet_v2", "--pretrained", str(args.pretrained), "--mean", "0.5", "--std", "0.5"]
    cmd += ["--image_size", str(args.image_size), "--epochs", str(args.epochs), "--seed", str(args.seed)]
    cmd += ["--adversarial_training", "pgd", "--at_eps", str(args.at_eps), "--at_steps", str(args.at_steps)]
    cmd += ["--num_workers", "0"]
    _run(cmd, args.out / "train.log")


def epoch_rows(args: argparse.Namespace, run: Path) -> list[dict]:
    import torch
    from monai.data import DataLoader, Dataset

    from monai_assim.bundle import load_datalist
    from monai_assim.metrics import RobustAccuracy
    from monai_assim.networks import AssimilationNet

    path = args.out / "epochs.csv"
    done = {(int(r["epoch"]), r["attack"]) for r in _read(path)}
    settings = json.loads((run / "run_summary.json").read_text())["settings"]
    from monai_assim.data import image_transforms

    data = Dataset(load_datalist(run, "validation"), transform=image_transforms(settings["image_size"]))
    batches = list(DataLoader(data, batch_size=settings["batch_size"], shuffle=False, num_workers=0))
    net = AssimilationNet("mobilenet_v2", num_classes=2, pretrained="none", variant="vanilla", mean=0.5, std=0.5)
    files = sorted((run / "epochs").glob("network_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
    for file in files:
        epoch = int(file.stem.split("=")[1])
        net.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        for label, kwargs in ATTACKS:
            if (epoch, label) in done:
                continue
            metric = RobustAccuracy(net, eps=args.at_eps / 255, seed=args.seed, **kwargs)
            start = time.perf_counter()
            for batch in batches:
                metric.update(batch)
            row = {
                "epoch": epoch,
                "attack": label,
                "eps_255": args.at_eps,
                "accuracy": metric.compute(),
                "n": int(float(metric._num_examples)),
                "seconds": round(time.perf_counter() - start, 1),
            }
            _append(path, row)
            print(f"[{time.strftime('%H:%M:%S')}] epoch {epoch} {label}: {row['accuracy']:.4f}", flush=True)
    return _read(path)


def _epoch(run: Path, checkpoint: str) -> int:
    import torch

    return int(torch.load(run / "checkpoints" / f"{checkpoint}.pt", map_location="cpu", weights_only=True)["epoch"])


def test_eval(args: argparse.Namespace, run: Path) -> None:
    for checkpoint in ("best", "best_clean"):
        eval_dir = run / f"eval_{checkpoint}"
        if (eval_dir / "robustness.json").is_file():
            continue
        if checkpoint != "best" and _epoch(run, checkpoint) == _epoch(run, "best"):
            print(f"{checkpoint}.pt holds the same epoch as best.pt: not evaluated twice", flush=True)
            continue
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"bundles/{args.bundle}/evaluate.json"]
        cmd += ["--output_dir", str(run), "--eval_dir", str(eval_dir), "--checkpoint", checkpoint]
        cmd += ["--variant", "vanilla", "--backbone", "mobilenet_v2", "--seed", str(args.seed)]
        cmd += ["--attacks", "{'APGD': {'loss': 'ce'}, 'PGD': {}, 'Square': {'n_queries': 100}}"]
        cmd += ["--eps", "$[1 / 255, 2 / 255, 4 / 255]", "--attack_eps", "$dict(Square=[1 / 255, 2 / 255, 4 / 255])"]
        cmd += ["--worst_case", "True", "--structure_checks", "True"]
        _run(cmd, args.out / f"eval_{checkpoint}.log")


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _append(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EPOCH_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def table(args: argparse.Namespace, run: Path, rows: list[dict]) -> str:
    summary = json.loads((run / "run_summary.json").read_text())
    logged = {int(e["epoch"]): e for e in summary.get("epochs", [])}
    acc = {(int(r["epoch"]), r["attack"]): float(r["accuracy"]) for r in rows}
    epochs = sorted(logged)
    lines = [
        f"Validation ({rows[0]['n'] if rows else '?'} images), per epoch, robust accuracy at {args.at_eps:g}/255:",
        "",
        "| epoch | clean (val_acc) | val_robust_acc (logged) | " + " | ".join(a for a, _ in ATTACKS) + " | seconds |",
        "|---|---|---|" + "---|" * len(ATTACKS) + "---|",
    ]
    for e in epochs:
        cells = [f"{acc.get((e, a), float('nan')):.3f}" for a, _ in ATTACKS]
        rec = logged[e]
        lines.append(
            f"| {e} | {rec['val_acc']:.3f} | {rec.get('val_robust_acc', float('nan')):.3f} | "
            + " | ".join(cells)
            + f" | {rec.get('val_robust_acc_seconds', float('nan')):.1f} of {rec.get('val_seconds', float('nan')):.1f} |"
        )
    sel = summary.get("selection", {})
    lines += ["", f"best.pt: epoch {sel.get('best_epoch')}; {json.dumps(sel.get('other_checkpoint'))}", ""]
    for label, _ in ATTACKS:
        scores = {e: acc.get((e, label), -1) for e in epochs}
        pick = max(epochs, key=lambda e: (scores[e], logged[e]["val_acc"])) if epochs else None
        lines.append(f"- selecting by {label} would keep epoch {pick}")
    lines += ["", "Test set (clean, then accuracy per eps):", ""]
    lines.append("| checkpoint | epoch | clean | attack | 1/255 | 2/255 | 4/255 |")
    lines.append("|---|---|---|---|---|---|---|")
    from monai_assim.robustness.results import load_robustness_rows

    for checkpoint in ("best", "best_clean"):
        path = run / f"eval_{checkpoint}" / "robustness.json"
        if checkpoint != "best" and _epoch(run, checkpoint) == _epoch(run, "best"):
            lines.append(f"| {checkpoint}.pt | {_epoch(run, checkpoint)} | the same epoch as best.pt | | | | |")
            continue
        if not path.is_file():
            continue
        res = load_robustness_rows(str(path))
        clean = next(r["accuracy"] for r in res if r["role"] == "clean")
        epoch = sel.get("best_epoch") if checkpoint == "best" else (sel.get("other_checkpoint") or {}).get("epoch")
        keys = sorted({(r["role"], r["attack"]) for r in res if r["role"] != "clean"})
        for role, attack in keys:
            by_eps = {round(r["eps_255"], 3): r["accuracy"] for r in res if (r["role"], r["attack"]) == (role, attack)}
            cells = " | ".join(f"{by_eps[e]:.3f}" if e in by_eps else "" for e in (1.0, 2.0, 4.0))
            lines.append(f"| {checkpoint}.pt | {epoch} | {clean:.3f} | {role}: {attack} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", type=Path, required=True)
    parser.add_argument("--pretrained", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bundle", default="chest_ct")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--at_eps", type=float, default=2.0)
    parser.add_argument("--at_steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: bit-reproducible)")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.dataset_dir, args.pretrained = args.dataset_dir.resolve(), args.pretrained.resolve()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.out / "run"
    train(args, run)
    rows = epoch_rows(args, run)
    (args.out / "table.md").write_text(table(args, run, rows))
    test_eval(args, run)
    (args.out / "table.md").write_text(table(args, run, rows))
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
