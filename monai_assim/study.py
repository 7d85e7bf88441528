"""
The paper's experiment as one command: vanilla against assimilated transfer learning under attack.

.. code-block:: bash

    python -m monai_assim.study --bundle chest_xray --dataset_dir ../shared/data/chest_xray \\
        --backbone mobilenet_v2 --pretrained ../shared/weights/mobilenet_v2_imagenet_from_tflite.pt \\
        --mean 0.5 --std 0.5 --image_size 128 --epochs 4 \\
        --train_per_class 300 --val_per_class 50 --test_per_class 100 --output_dir study_out

For one bundle and one backbone it runs the bundle's own ``train.json`` and ``evaluate.json`` (so a
study trains and attacks exactly what a user of the bundles gets), with the same seed, split and budget:

- ``vanilla``: plain transfer learning (grey replicated to RGB, normalisation, backbone, head);
- ``assimilated``: texture and colour modules in front of the backbone, trained with the bundle's
  ``alpha`` (or ``--alpha``);
- ``alpha1`` (unless ``--no_ablation``): assimilated with ``alpha = 1``, i.e. without the GLCM term,
  the paper's "w/o GLCM loss" ablation.

Each is attacked with the paper's FGSM, BIM, MIFGSM and PGD over eps = 1/255 ... 8/255, plus APGD (CE
loss) and the black-box Square attack, with the large-eps PGD check; see
:class:`monai_assim.handlers.AdversarialRobustnessHandler`. The study then writes to ``output_dir``:

- ``runs/<name>/``: each bundle run's own outputs (split lists, run summary, ``eval/robustness.csv``
  and ``.json`` with the honesty report); checkpoints are removed with ``--prune``;
- ``comparison.csv`` and ``comparison.md``: one row per (attack, eps) with the columns
  :data:`COMPARISON_COLUMNS` (``<name>_accuracy`` and ``<name>_success_rate`` per run);
- ``robustness.png``: accuracy against eps, vanilla dashed and assimilated solid, one colour per attack;
- ``examples.png``: test images as they are, assimilated by the ``alpha = 1`` model and by the
  default-alpha model (the paper's "w/o GLCM loss / w/ GLCM loss" panel);
- ``study.json``: the settings, the command line, the honesty reports and the wall time of each step.

Subset sizes, image size, epochs and the attack budget are parameters, so the same command runs at the
paper's scale on a GPU and at a small one on a CPU.
"""

from __future__ import annotations

import argparse
import csv
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

__all__ = ["COMPARISON_COLUMNS", "RUNS", "compare_results", "plot_examples", "run_study", "main"]

logger = logging.getLogger(__name__)

#: run name -> (variant, alpha or None for the bundle's default)
RUNS: dict[str, tuple[str, float | None]] = {
    "vanilla": ("vanilla", None),
    "assimilated": ("assimilated", None),
    "alpha1": ("assimilated", 1.0),
}

#: the white-box attacks of the paper, then APGD (CE) and black-box Square
STUDY_ATTACKS: dict[str, dict[str, Any]] = {
    "FGSM": {},
    "BIM": {},
    "MIFGSM": {},
    "PGD": {},
    "APGD": {"loss": "ce"},
    "Square": {"n_queries": 1000},
}

#: columns of comparison.csv; ``<name>`` stands for each run of the study
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


def _bundle_files(bundle: str, bundle_root: str | Path | None) -> Path:
    root = Path(bundle_root) if bundle_root is not None else Path(__file__).resolve().parents[1] / "bundles" / bundle
    if not (root / "train.json").is_file():
        raise ValueError(f"bundle folder {root} has no train.json; pass --bundle_root <path to bundles/{bundle}>.")
    return root


def _run_bundle(root: Path, config: str, **override: Any) -> None:
    from monai.bundle import run

    run(
        config_file=str(root / config),
        meta_file=str(root / "metadata.json"),
        logging_file=str(root / "logging.conf") if (root / "logging.conf").is_file() else None,
        bundle_root=str(root),
        **override,
    )


def _read_rows(path: Path) -> list[dict[str, Any]]:
    from monai_assim.visualize import load_robustness_rows

    return load_robustness_rows(str(path))


def compare_results(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """
    Side-by-side rows from the result rows of each run (``name -> rows`` of the robustness handler).

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
    keyed = {name: {(r["attack"], round(float(r["eps"]), 8), r.get("role", "attack")): r for r in rows}
             for name, rows in results.items()}
    out = []
    for r in results[names[0]]:
        key = (r["attack"], round(float(r["eps"]), 8), r.get("role", "attack"))
        row: dict[str, Any] = {"attack": r["attack"], "eps": float(r["eps"]), "eps_255": round(float(r["eps"]) * 255, 4),
                               "role": key[2], "n": int(r["n"])}
        for name in names:
            other = keyed[name].get(key)
            if other is None:
                raise ValueError(f"run {name!r} has no result for attack {key[0]} at eps {key[1]} ({key[2]}).")
            if int(other["n"]) != row["n"]:
                raise ValueError(f"run {name!r} was evaluated on n={other['n']} images, {names[0]!r} on n={row['n']}.")
            row[f"{name}_accuracy"] = other["accuracy"]
            row[f"{name}_success_rate"] = other.get("success_rate")
        if "vanilla" in names and "assimilated" in names:
            row["delta_accuracy"] = row["assimilated_accuracy"] - row["vanilla_accuracy"]
        out.append(row)
    return out


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def write_comparison(rows: Sequence[Mapping[str, Any]], output_dir: Path, title: str = "") -> tuple[Path, Path]:
    """Write ``comparison.csv`` and ``comparison.md`` (accuracy per run and the assimilated - vanilla delta)."""
    columns = list(rows[0])
    csv_path, md_path = output_dir / "comparison.csv", output_dir / "comparison.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = ["attack", "eps_255", "n"] + [c for c in columns if c.endswith("_accuracy")]
    lines = [f"# {title}".rstrip(), ""] if title else []
    lines += ["| " + " | ".join("eps (x/255)" if c == "eps_255" else c for c in shown) + " |",
              "|" + "---|" * len(shown)]
    for r in rows:
        label = r["attack"] + (" (large-eps check)" if r.get("role") == "check" else "")
        lines.append("| " + " | ".join([label] + [_fmt(r[c]) for c in shown[1:]]) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _load_network(run_dir: Path, device: torch.device) -> torch.nn.Module:
    from monai_assim.bundle import checkpoint_path, load_run_summary
    from monai_assim.networks import AssimilationNet

    summary = load_run_summary(run_dir)
    s = summary["settings"]
    net = AssimilationNet(backbone=s["backbone"], num_classes=2, pretrained=None, variant=s["variant"],
                          mean=s.get("mean"), std=s.get("std"))
    ckpt = torch.load(checkpoint_path(run_dir, "best"), map_location="cpu", weights_only=True)
    net.load_state_dict(ckpt["network"] if "network" in ckpt else ckpt)
    return net.to(device).eval()


def plot_examples(
    images: torch.Tensor,
    networks: Mapping[str, torch.nn.Module],
    output_path: str | Path,
    labels: Sequence[str] | None = None,
) -> Path:
    """
    Save a grid of example images: the originals on the first row, then one row per network showing its
    assimilated RGB image ``network.assimilate(x)``.

    Args:
        images: ``(N, 1, H, W)`` on [0, 1].
        networks: row title -> an :class:`~monai_assim.networks.AssimilationNet` (or anything with
            ``assimilate``).
        output_path: the PNG to write.
        labels: optional column titles (e.g. the class of each image).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}.")
    rows = [("original", images.repeat(1, 3, 1, 1))]
    with torch.no_grad():
        for title, net in networks.items():
            device = next(net.parameters()).device
            rows.append((title, net.assimilate(images.to(device)).float().cpu().clamp(0, 1)))
    n = images.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(2.2 * n, 2.3 * len(rows)), squeeze=False)
    for i, (title, batch) in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            ax.imshow(batch[j].permute(1, 2, 0).numpy(), vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(title, fontsize=9)
            if i == 0 and labels is not None:
                ax.set_title(labels[j], fontsize=9)
    fig.tight_layout()
    output_path = Path(output_path)
    fig.savefig(output_path, dpi=100)
    plt.close(fig)
    return output_path


def _example_images(run_dir: Path, n: int, image_size: int) -> tuple[torch.Tensor, list[str]]:
    from monai_assim.bundle import load_datalist, load_run_summary
    from monai_assim.data import image_transforms

    items = load_datalist(run_dir, "test")
    names = load_run_summary(run_dir).get("class_names", ["0", "1"])
    picked = [d for d in items if d["label"] == 0][: (n + 1) // 2] + [d for d in items if d["label"] == 1][: n // 2]
    load = image_transforms(image_size, keys=["image"], augment=False)
    images = torch.stack([torch.as_tensor(load(dict(d))["image"]) for d in picked])
    return images, [names[d["label"]] for d in picked]


def run_study(
    bundle: str = "chest_xray",
    output_dir: str | Path = "study",
    bundle_root: str | Path | None = None,
    dataset_dir: str | None = None,
    backbone: str = "resnet18",
    pretrained: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    alpha: float | None = None,
    train_per_class: int | None = None,
    val_per_class: int | None = None,
    test_per_class: int | None = None,
    attacks: Mapping[str, Mapping[str, Any]] | None = None,
    eps: Sequence[float] | None = None,
    attack_eps: Mapping[str, Sequence[float]] | None = None,
    check_eps: float | None = 64 / 255,
    seed: int = 0,
    ablation: bool = True,
    n_examples: int = 6,
    prune: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """
    Train and attack the vanilla, assimilated and (``ablation``) ``alpha = 1`` variants with the bundle's
    configs, then write the comparison table, the paper-style figure and the example panel.

    ``None`` leaves a setting to the bundle (the paper's defaults with a real data set, demo-sized ones
    with the synthetic demo set). Returns the content of ``study.json``.
    """
    root = _bundle_files(bundle, bundle_root)
    out = Path(output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    caps = {"train": train_per_class, "validation": val_per_class, "test": test_per_class}
    common: dict[str, Any] = {
        "backbone": backbone, "pretrained": pretrained, "mean": mean, "std": std, "image_size": image_size,
        "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
        "dataset_dir": dataset_dir if dataset_dir is not None else "demo",
        "max_per_class": caps if any(v is not None for v in caps.values()) else None,
    }
    if device is not None:
        common["device"] = f"$torch.device('{device}')"
    train_override = {k: v for k, v in common.items() if v is not None or k in ("mean", "std")}
    attacks = dict(STUDY_ATTACKS if attacks is None else attacks)
    eval_override: dict[str, Any] = {"attacks": attacks, "seed": seed, "check_eps": check_eps}
    if eps is not None:
        eval_override["eps"] = list(eps)
    if attack_eps:
        eval_override["attack_eps"] = {k: list(v) for k, v in attack_eps.items()}
    if device is not None:
        eval_override["device"] = common["device"]

    names = [n for n in RUNS if ablation or n != "alpha1"]
    timings: dict[str, float] = {}
    results: dict[str, list[dict[str, Any]]] = {}
    reports: dict[str, list[str]] = {}
    for name in names:
        variant, run_alpha = RUNS[name]
        run_dir = out / "runs" / name
        run_alpha = run_alpha if run_alpha is not None else alpha
        ov = dict(train_override, variant=variant, output_dir=str(run_dir))
        if run_alpha is not None:
            ov["alpha"] = float(run_alpha)
        logger.info(f"study: training {name} ({variant}, alpha={run_alpha if run_alpha is not None else 'bundle default'})")
        t0 = time.perf_counter()
        _run_bundle(root, "train.json", **ov)
        timings[f"{name}_train_s"] = round(time.perf_counter() - t0, 1)
        logger.info(f"study: attacking {name}")
        t0 = time.perf_counter()
        _run_bundle(root, "evaluate.json", variant=variant, backbone=backbone, output_dir=str(run_dir), **eval_override)
        timings[f"{name}_evaluate_s"] = round(time.perf_counter() - t0, 1)
        results[name] = _read_rows(run_dir / "eval" / "robustness.csv")
        reports[name] = json.loads((run_dir / "eval" / "robustness.json").read_text()).get("report", [])

    from monai_assim.bundle import load_run_summary
    from monai_assim.visualize import plot_robustness

    summaries = {name: load_run_summary(out / "runs" / name) for name in names}
    table = compare_results(results)
    title = f"{bundle}, {backbone}: accuracy under attack"
    write_comparison(table, out, title)
    figure = None
    if "vanilla" in results and "assimilated" in results:
        figure = plot_robustness(
            results["assimilated"], out / "robustness.png", vanilla=results["vanilla"],
            title=f"{bundle}, {backbone}: vanilla (dashed) vs assimilated (solid)",
        )
    examples = None
    assimilated_runs = [n for n in ("alpha1", "assimilated") if n in names]
    if assimilated_runs and n_examples > 0:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        size = summaries[assimilated_runs[0]]["settings"]["image_size"]
        images, labels = _example_images(out / "runs" / assimilated_runs[0], n_examples, size)
        nets = {}
        for n in assimilated_runs:
            a = summaries[n]["settings"]["alpha"]
            nets[f"alpha={a:g}" + (" (w/o GLCM)" if a == 1 else " (w/ GLCM)")] = _load_network(out / "runs" / n, dev)
        examples = plot_examples(images, nets, out / "examples.png", labels)
    if prune:
        for name in names:
            shutil.rmtree(out / "runs" / name / "checkpoints", ignore_errors=True)
            shutil.rmtree(out / "runs" / name / "demo_data", ignore_errors=True)

    doc = {
        "bundle": bundle,
        "command": shlex.join(["python", "-m", "monai_assim.study"] + sys.argv[1:]) if sys.argv[0].endswith("study.py") else None,
        "runs": {n: {"variant": RUNS[n][0], "settings": summaries[n]["settings"], "demo_data": summaries[n]["demo_data"],
                     "counts": summaries[n].get("counts"), "best_val_acc": summaries[n].get("best_metric"),
                     "epochs_run": summaries[n].get("epochs_completed"),
                     "stopped_early": summaries[n].get("stopped_early")} for n in names},
        "attacks": attacks,
        "eps_255": [round(e * 255, 4) for e in (eps or [k / 255 for k in range(1, 9)])],
        "attack_eps_255": {k: [round(e * 255, 4) for e in v] for k, v in (attack_eps or {}).items()},
        "seed": seed,
        "reports": reports,
        "timings_s": timings,
        "files": {"comparison": "comparison.csv", "table": "comparison.md",
                  "figure": figure and Path(figure).name, "examples": examples and Path(examples).name},
    }
    (out / "study.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def _parse_caps(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m monai_assim.study", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="chest_xray", help="bundle name under bundles/ (default chest_xray)")
    p.add_argument("--bundle_root", default=None, help="the bundle folder (default: the repository's bundles/<bundle>)")
    p.add_argument("--output_dir", default="study", help="study output folder")
    p.add_argument("--dataset_dir", default=None, help="the real data set; omitted: the synthetic demo set")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--pretrained", default=None, help="imagenet | none | path to a torchvision state dict")
    p.add_argument("--mean", type=float, default=None, help="input normalisation mean (default: the weights')")
    p.add_argument("--std", type=float, default=None, help="input normalisation std (default: the weights')")
    p.add_argument("--image_size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--alpha", type=float, default=None, help="alpha of the assimilated run (default: the bundle's)")
    p.add_argument("--train_per_class", type=_parse_caps, default=None)
    p.add_argument("--val_per_class", type=_parse_caps, default=None)
    p.add_argument("--test_per_class", type=_parse_caps, default=None)
    p.add_argument("--attacks", default=None, help="JSON mapping name -> torchattacks kwargs (default: paper's 4 + APGD + Square)")
    p.add_argument("--eps_255", default=None, help="comma-separated eps in units of 1/255 (default 1,...,8)")
    p.add_argument("--attack_eps_255", default=None,
                   help='JSON mapping attack -> its own eps grid in units of 1/255, e.g. \'{"Square": [4, 8]}\'')
    p.add_argument("--check_eps_255", type=float, default=64.0, help="eps (x/255) of the PGD sanity check; 0 disables it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_ablation", action="store_true", help="skip the alpha = 1 run")
    p.add_argument("--n_examples", type=int, default=6)
    p.add_argument("--prune", action="store_true", help="delete checkpoints and generated demo data afterwards")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    doc = run_study(
        bundle=a.bundle, output_dir=a.output_dir, bundle_root=a.bundle_root, dataset_dir=a.dataset_dir,
        backbone=a.backbone, pretrained=a.pretrained, mean=a.mean, std=a.std, image_size=a.image_size,
        epochs=a.epochs, batch_size=a.batch_size, learning_rate=a.learning_rate, alpha=a.alpha,
        train_per_class=a.train_per_class, val_per_class=a.val_per_class, test_per_class=a.test_per_class,
        attacks=json.loads(a.attacks) if a.attacks else None,
        eps=[float(k) / 255 for k in a.eps_255.split(",")] if a.eps_255 else None,
        attack_eps={k: [float(e) / 255 for e in v] for k, v in json.loads(a.attack_eps_255).items()}
        if a.attack_eps_255 else None,
        check_eps=a.check_eps_255 / 255 if a.check_eps_255 > 0 else None,
        seed=a.seed, ablation=not a.no_ablation, n_examples=a.n_examples, prune=a.prune, device=a.device,
    )
    print(Path(a.output_dir) / "comparison.md")
    print((Path(a.output_dir) / "comparison.md").read_text())
    for name, lines in doc["reports"].items():
        print(f"[{name}] " + "\n[{name}] ".join(lines).replace("{name}", name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
