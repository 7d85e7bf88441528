"""
Does assimilation train without collapsing, with and without PGD-AT, per output map and seed (issue 26)?

For each seed and arm, ``bundles/<bundle>/train.json`` trains a MobileNetV2 (the given weights, mean =
std = 0.5) for ``--epochs`` epochs at ``--image_size`` (one thread each, one run after another), then the
script measures the kept checkpoint (``best.pt``) on the run's whole test split:

- clean accuracy and the number of classes it predicts (1: collapsed);
- the saturation of T and C (:func:`monai_assim.networks.saturation`);
- how far T and C move the images: grey shift and chroma (x 255), and the correlation of gray(C(T(x)))
  with x (0: the backbone sees a constant image).

Arms: ``vanilla``, ``assimilated`` (the default sigmoid map), ``assimilated_clamp`` (the hard clip of
earlier runs), ``assimilated_clampst`` (that clip with a straight-through training gradient),
``assimilated_clampret`` (that clip whose training gradient pulls pushed-out values back), each also
with ``_pgdat`` (PGD-AT at ``--at_eps``/255, ``--at_steps`` steps). A run whose
``measure.json`` exists is skipped, so the script resumes; the table ``<out>/stability.md`` is rewritten
after every run.

Usage (the table in docs/results.md)::

    python benchmarks/assimilation_stability.py --dataset_dir ../shared/data/chest_ct \\
        --pretrained ../shared/weights/mobilenet_v2_imagenet_from_tflite.pt --out /tmp/stability \\
        --seeds 0 1 2 --epochs 2 --arms vanilla assimilated vanilla_pgdat assimilated_pgdat \\
        assimilated_clampst assimilated_clampst_pgdat assimilated_clamp assimilated_clamp_pgdat \\
        assimilated_clampret assimilated_clampret_pgdat
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ARMS = {
    "vanilla": ["--variant", "vanilla"],
    "assimilated": ["--variant", "assimilated", "--assimilation_map", "sigmoid"],
    "assimilated_clamp": ["--variant", "assimilated", "--assimilation_map", "clamp"],
    "assimilated_clampst": ["--variant", "assimilated", "--assimilation_map", "clamp_st"],
    "assimilated_clampret": ["--variant", "assimilated", "--assimilation_map", "clamp_return"],
}


def arm_args(arm: str, at_eps: float, at_steps: int) -> list[str]:
    base, _, pgdat = arm.partition("_pgdat")
    args = list(ARMS[base])
    if arm.endswith("_pgdat"):
        args += ["--adversarial_training", "pgd", "--at_eps", str(at_eps), "--at_steps", str(at_steps)]
    return args


@torch.no_grad()
def measure(run: Path) -> dict:
    """Clean accuracy, predicted classes, saturation and movement of ``best.pt`` on the run's test split."""
    from masking_checks import load_run_network, load_test_images  # the benchmark beside this one

    from monai_assim.bundle import load_run_summary
    from monai_assim.metrics import assimilation_movement
    from monai_assim.networks import saturation

    summary = load_run_summary(run)
    s = summary["settings"]
    net = load_run_network(run, "best")
    images, labels = load_test_images(run)
    preds = torch.cat([net(images[i : i + 32]).argmax(1) for i in range(0, len(images), 32)])
    out = {
        "n": len(labels),
        "clean_accuracy": float((preds == labels).float().mean()),
        "predicted_classes": int(preds.unique().numel()),
        "best_epoch": summary.get("best_epoch"),
        "val_acc_per_epoch": [e.get("val_acc") for e in summary.get("epochs", [])],
        "warnings": [w.get("kind") for w in summary.get("warnings", [])],
    }
    if s["variant"] == "assimilated":
        sat = saturation(net, images)
        movement = assimilation_movement(net, images)
        out.update(
            saturation_texture=sat["texture"],
            saturation_color=sat["color"],
            grey_shift_255=255 * movement["grey_shift"],
            chroma_255=255 * movement["chroma"],
            grey_correlation=movement["grey_correlation"],
        )
    return out


def table(out: Path, seeds: list[int], arms: list[str]) -> str:
    lines = [
        "| seed | arm | clean acc | classes | best epoch | sat. T | sat. C | grey shift /255 | chroma /255 | corr(y, x) "
        "| guard | train time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        for arm in arms:
            path = out / f"seed{seed}" / arm / "measure.json"
            if not path.is_file():
                continue
            m = json.loads(path.read_text())
            f = lambda k, fmt, m=m: format(m[k], fmt) if m.get(k) is not None else ""  # noqa: E731
            lines.append(
                f"| {seed} | {arm} | {m['clean_accuracy']:.3f} | {m['predicted_classes']} | {m.get('best_epoch')} "
                f"| {f('saturation_texture', '.3f')} | {f('saturation_color', '.3f')} | {f('grey_shift_255', '.1f')} "
                f"| {f('chroma_255', '.1f')} | {f('grey_correlation', '.3f')} | {', '.join(m['warnings']) or '-'} "
                f"| {m.get('train_seconds', 0):.0f} s |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", type=Path, required=True)
    parser.add_argument("--pretrained", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bundle", default="chest_ct")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["vanilla", "assimilated", "vanilla_pgdat", "assimilated_pgdat"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--at_eps", type=float, default=2.0)
    parser.add_argument("--at_steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for arm in args.arms:
        arm_args(arm, args.at_eps, args.at_steps)  # unknown arms fail before any training
    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    for arm in args.arms:  # arm by arm over the seeds: the required arms finish first
        for seed in args.seeds:
            run = out / f"seed{seed}" / arm
            if (run / "measure.json").is_file():
                continue
            cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"bundles/{args.bundle}/train.json"]
            cmd += ["--dataset_dir", str(args.dataset_dir.resolve()), "--output_dir", str(run)]
            cmd += ["--backbone", "mobilenet_v2", "--pretrained", str(args.pretrained.resolve())]
            cmd += ["--mean", "0.5", "--std", "0.5", "--image_size", str(args.image_size)]
            cmd += ["--epochs", str(args.epochs), "--seed", str(seed), "--num_workers", "0"]
            cmd += arm_args(arm, args.at_eps, args.at_steps)
            run.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            start = time.perf_counter()
            print(f"[{time.strftime('%H:%M:%S')}] seed {seed} {arm}", flush=True)
            if not (run / "checkpoints" / "best.pt").is_file() or "finished" not in (
                json.loads((run / "run_summary.json").read_text()) if (run / "run_summary.json").is_file() else {}
            ):
                with (run.parent / f"{arm}_train.log").open("w") as log:
                    subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True, env=env)
            result = {"train_seconds": time.perf_counter() - start, **measure(run)}
            (run / "measure.json").write_text(json.dumps(result, indent=2) + "\n")
            (out / "stability.md").write_text(table(out, args.seeds, args.arms))
    print((out / "stability.md").read_text())


if __name__ == "__main__":
    main()
