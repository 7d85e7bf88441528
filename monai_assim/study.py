"""
The paper's experiment as one command: vanilla against assimilated transfer learning under attack,
over several seeds, with paired per-image comparisons.

.. code-block:: bash

    python -m monai_assim.study --bundle chest_xray --dataset_dir ../shared/data/chest_xray \\
        --backbone mobilenet_v2 --pretrained ../shared/weights/mobilenet_v2_imagenet_from_tflite.pt \\
        --mean 0.5 --std 0.5 --image_size 128 --epochs 4 \\
        --train_per_class 300 --val_per_class 50 --test_per_class 100 \\
        --seeds 0 1 2 --jobs 2 --output_dir study_out

For one bundle and one backbone it runs the bundle's own ``train.json`` and ``evaluate.json`` (so a
study trains and attacks exactly what a user of the bundles gets), once per arm and seed, each arm of a
seed with the same split and budget. The arms (:data:`ARMS`, name -> bundle overrides; ``--arms``
chooses, default :data:`DEFAULT_ARMS`):

- ``vanilla``: plain transfer learning (grey replicated to RGB, normalisation, backbone, head);
- ``assimilated``: texture and colour modules in front of the backbone, trained with the bundle's
  ``alpha`` (or ``--alpha``), ``assimilation_lr`` and ``assimilation_init`` (or the study's options);
- ``alpha1`` (unless ``--no_ablation``): assimilated with ``alpha = 1``, i.e. without the GLCM term,
  the paper's "w/o GLCM loss" ablation;
- ``vanilla_pgdat``, ``assimilated_pgdat``, ``vanilla_trades``, ``assimilated_trades``: the same with
  adversarial training (bundle override ``adversarial_training`` ``pgd`` / ``trades``; ``--at_eps``,
  ``--at_steps``, ``--trades_beta`` are forwarded to the bundle when given).

A bundle ``seed`` changes the split (``RunSetup``), the initialisation of the new layers and the data
order (``monai.utils.set_determinism`` in ``initialize``, which also seeds MONAI's ``DataLoader`` and
so the augmentation); with the demo set it also changes the generated images. ``--seeds 0 1 2`` runs
every arm for every seed; ``--jobs 2`` runs two (seed, arm) jobs at once, each a subprocess with one
torch thread (``OMP_NUM_THREADS=1``), its log in ``<run>/study_job.log``. A (seed, arm) whose
``eval/robustness.json`` exists is skipped, and one whose training finished (``checkpoints/best.pt`` and
a finished run summary) is only evaluated, so re-running a killed study continues it.

Each run is attacked with the paper's FGSM, BIM, MIFGSM and PGD over eps = 1/255 ... 8/255, plus APGD (CE
loss) and the black-box Square attack, with the large-eps PGD check; see
:class:`monai_assim.handlers.AdversarialRobustnessHandler`. The study then writes to ``output_dir``:

- ``runs/<arm>/`` (one seed, ``--seed``) or ``runs/seed<k>/<arm>/`` (``--seeds``): each bundle run's own
  outputs (split lists, run summary, TensorBoard logs with the per-epoch assimilation movement,
  ``eval/robustness.csv`` and ``.json`` with the honesty report, ``eval/robustness_per_image.csv``
  where the handler writes it, ``eval/assimilation_movement.json``); checkpoints are removed with ``--prune``;
- ``comparison.csv`` and ``comparison.md`` (one seed; with ``--seeds``, in ``runs/seed<k>/``): one row per
  (attack, eps) with the columns :data:`COMPARISON_COLUMNS`;
- with ``--seeds``: ``aggregate.csv`` / ``aggregate.md`` (per arm, mean, std, min and max over seeds of the
  clean accuracy and of the accuracy under each attack and eps, worst-case rows included when present,
  and the assimilation movement per arm) and ``paired.csv`` / ``paired.md`` (per seed and pooled, for each
  arm against ``vanilla`` on the same test images: images that flip from correct to wrong under attack
  and back, with an exact McNemar p-value; from the per-image files);
- ``robustness.png``: accuracy against eps (mean over seeds), vanilla dashed and assimilated solid;
- ``examples.png``: test images (of the first seed's test split) as they are, assimilated by the
  ``alpha = 1`` model and by the default-alpha model (the paper's "w/o GLCM loss / w/ GLCM loss" panel),
  each row with its mean grey shift and chroma;
- ``study.json``: the settings, the command line, the honesty reports, the assimilation movement
  (:func:`assimilation_movement`: does a trained T/C move the grey levels or the colour where the GLCM
  term cannot see it), the summaries of the tables and the wall time of each step.

Subset sizes, image size, epochs and the attack budget are parameters, so the same command runs at the
paper's scale on a GPU and at a small one on a CPU.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_assim.bundle.templates import bundles_dir
from monai_assim.robustness.compare import COMPARISON_COLUMNS, compare_results
from monai_assim.visualize.examples_plot import plot_examples

__all__ = [
    "ARMS",
    "COMPARISON_COLUMNS",
    "DEFAULT_ARMS",
    "assimilation_movement",
    "compare_results",
    "main",
    "plot_examples",
    "run_job",
    "run_study",
]

logger = logging.getLogger(__name__)

#: arm name -> bundle overrides of its training run
ARMS: dict[str, dict[str, Any]] = {
    "vanilla": {"variant": "vanilla"},
    "assimilated": {"variant": "assimilated"},
    "alpha1": {"variant": "assimilated", "alpha": 1.0},
    "vanilla_pgdat": {"variant": "vanilla", "adversarial_training": "pgd"},
    "assimilated_pgdat": {"variant": "assimilated", "adversarial_training": "pgd"},
    "vanilla_trades": {"variant": "vanilla", "adversarial_training": "trades"},
    "assimilated_trades": {"variant": "assimilated", "adversarial_training": "trades"},
}
#: the arms a study runs unless ``arms`` is given (``alpha1`` dropped by ``ablation=False``)
DEFAULT_ARMS = ("vanilla", "assimilated", "alpha1")

#: the white-box attacks of the paper, drawn as curves; the headline worst case adds the strong ensemble of
#: the study's ``attack_budget`` (APGD-CE, APGD-margin, Square; :data:`monai_assim.robustness.attacks.ATTACK_BUDGETS`)
STUDY_ATTACKS: dict[str, dict[str, Any]] = {"FGSM": {}, "BIM": {}, "MIFGSM": {}, "PGD": {}}

PER_IMAGE_FILE = "robustness_per_image.csv"
MOVEMENT_FILE = "assimilation_movement.json"
JOB_LOG = "study_job.log"


def _bundle_files(bundle: str, bundle_root: str | Path | None) -> Path:
    root = Path(bundle_root) if bundle_root is not None else bundles_dir() / bundle
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
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
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
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _load_network(run_dir: Path, device: torch.device) -> torch.nn.Module:
    """The trained texture and colour modules ``nn.Sequential(T, C)`` of a run's best checkpoint, read by
    :func:`monai_assim.transforms.load_assimilation_modules` (the backbone is not built)."""
    from monai_assim.bundle import checkpoint_path
    from monai_assim.transforms import load_assimilation_modules

    return load_assimilation_modules(checkpoint_path(run_dir, "best")).to(device).eval()


def _example_images(run_dir: Path, n: int, image_size: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` images of the run's test split, half of each class (the first in the split's order)."""
    from monai_assim.bundle import load_datalist, load_run_summary
    from monai_assim.data import image_transforms

    items = load_datalist(run_dir, "test")
    names = load_run_summary(run_dir).get("class_names", ["0", "1"])
    picked = [d for d in items if d["label"] == 0][: (n + 1) // 2] + [d for d in items if d["label"] == 1][: n // 2]
    load = image_transforms(image_size, keys=["image"], augment=False)
    images = torch.stack([torch.as_tensor(load(dict(d))["image"]) for d in picked])
    return images, [names[d["label"]] for d in picked]


#: what :func:`assimilation_movement` reports (means over the images; intensities on [0, 1])
MOVEMENT_KEYS = ("grey_shift", "map_shift", "texture_shift", "chroma", "glcm", "grey_correlation")


def assimilation_movement(modules: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    r"""
    How far trained T and C move images, and whether they use the freedom the GLCM loss leaves.

    With ``y = gray(C(T(x)))`` (BT.601 luma, what the GLCM loss sees) on ``images`` ``(N, 1, H, W)``, the
    means over the images of (see :func:`monai_assim.metrics.assimilation_distances`): ``grey_shift``
    :math:`|y - x|`; ``map_shift`` :math:`|m(x) - x|`, the part a global grey-level map :math:`m`
    explains (an inversion, a gamma curve, a shift); ``texture_shift`` :math:`|y - m(x)|`, the rest;
    ``chroma``, the distance from grey, which the GLCM loss cannot see (it reads only the luma);
    ``glcm``, the GLCM term (``GLCMLoss()``, the bundles' settings, ``target_std`` over these images);
    ``grey_correlation``, the Pearson correlation of ``y`` and ``x`` (-1: inverted grey levels, which the
    five GLCM features do not see either, see :func:`monai_assim.metrics.glcm_invariance`). A trained
    T/C uses the freedom when ``map_shift`` or ``chroma`` is large while ``glcm`` stays small.

    Args:
        modules: anything with ``assimilate(x)`` (an AssimilationNet) or a module ``(N, 1, H, W) -> (N, 3, H, W)``.
        images: ``(N, 1, H, W)`` on [0, 1].
    """
    from monai_assim.losses import GLCMLoss
    from monai_assim.metrics import assimilation_distances, grey

    param = next(modules.parameters(), None)
    x = images.float().to(param.device if param is not None else images.device)
    with torch.no_grad():
        rgb = modules.assimilate(x) if hasattr(modules, "assimilate") else modules(x)
        d = assimilation_distances(rgb, x, GLCMLoss())
        y, xf = grey(rgb.float()).flatten(1), x.flatten(1)
        yc, xc = y - y.mean(1, keepdim=True), xf - xf.mean(1, keepdim=True)
        d["grey_correlation"] = (yc * xc).sum(1) / (yc.norm(dim=1) * xc.norm(dim=1)).clamp_min(1e-12)
    return {k: float(d[k].mean()) for k in MOVEMENT_KEYS}


# ---------------------------------------------------------------------------------------------- jobs
def _train_finished(run_dir: Path) -> bool:
    summary = run_dir / "run_summary.json"
    if not (run_dir / "checkpoints" / "best.pt").is_file() or not summary.is_file():
        return False
    try:
        return "finished" in json.loads(summary.read_text())
    except ValueError:
        return False


def _movement_of_run(run_dir: Path, n_images: int) -> dict[str, float] | None:
    """:func:`assimilation_movement` of a finished assimilated run on its first ``n_images`` test images."""
    from monai_assim.bundle import load_run_summary

    settings = load_run_summary(run_dir)["settings"]
    if settings["variant"] != "assimilated" or n_images <= 0:
        return None
    images, _ = _example_images(run_dir, n_images, settings["image_size"])
    return assimilation_movement(_load_network(run_dir, torch.device("cpu")), images)


def run_job(spec: Mapping[str, Any]) -> dict[str, Any]:
    """
    One (seed, arm) of a study: train (unless finished), evaluate (unless ``eval/robustness.json`` exists),
    then write ``eval/assimilation_movement.json``. ``spec`` holds ``bundle_root``, ``run_dir``,
    ``train_override``, ``eval_override`` and ``movement_images``. Returns ``{"train_s", "evaluate_s",
    "skipped"}``.
    """
    root, run_dir = Path(spec["bundle_root"]), Path(spec["run_dir"])
    out: dict[str, Any] = {"train_s": 0.0, "evaluate_s": 0.0, "skipped": []}
    if (run_dir / "eval" / "robustness.json").is_file():
        out["skipped"] = ["train", "evaluate"]
    else:
        if _train_finished(run_dir):
            out["skipped"].append("train")
        else:
            t0 = time.perf_counter()
            _run_bundle(root, "train.json", **spec["train_override"])
            out["train_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        _run_bundle(root, "evaluate.json", **spec["eval_override"])
        out["evaluate_s"] = round(time.perf_counter() - t0, 1)
    movement_file = run_dir / "eval" / MOVEMENT_FILE
    if not movement_file.is_file() and (run_dir / "checkpoints" / "best.pt").is_file():
        movement = _movement_of_run(run_dir, int(spec.get("movement_images", 32)))
        movement_file.write_text(
            json.dumps({"n_images": spec.get("movement_images", 32), "movement": movement}, indent=2) + "\n"
        )
    return out


def _run_job_subprocess(spec: Mapping[str, Any], threads: int = 1) -> dict[str, Any]:
    """:func:`run_job` in a subprocess with ``threads`` torch threads; its output goes to ``<run>/study_job.log``."""
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_file = run_dir / "study_job.json"
    spec_file.write_text(json.dumps(spec, indent=2) + "\n")
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [sys.executable, "-m", "monai_assim.study", "--job", str(spec_file), "--job_threads", str(threads)]
    with open(run_dir / JOB_LOG, "a") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd(), check=False)
    if proc.returncode != 0:
        tail = (run_dir / JOB_LOG).read_text()[-3000:]
        raise RuntimeError(f"study job {run_dir} failed (exit {proc.returncode}); end of {run_dir / JOB_LOG}:\n{tail}")
    return json.loads((run_dir / "study_job_result.json").read_text())


def _job_main(spec_file: str, threads: int) -> int:
    torch.set_num_threads(threads)
    spec = json.loads(Path(spec_file).read_text())
    result = run_job(spec)
    (Path(spec["run_dir"]) / "study_job_result.json").write_text(json.dumps(result) + "\n")
    return 0


# ------------------------------------------------------------------------------------------- reports
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
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
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
    md_path.write_text("\n".join(lines) + "\n")
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
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
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
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


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
    seeds: Sequence[int] | None = None,
    arms: Sequence[str] | None = None,
    jobs: int = 1,
    assimilation_lr: float | None = None,
    assimilation_init: str | None = None,
    at_eps: float | None = None,
    at_steps: int | None = None,
    trades_beta: float | None = None,
    movement_images: int = 16,
    worst_case: bool = False,
    structure_checks: Sequence[str] = (),
    structure_check_seeds: Sequence[int] | None = None,
    structure_check_kwargs: Mapping[str, Any] | None = None,
    attack_budget: str | None = "standard",
) -> dict[str, Any]:
    """
    Train and attack every arm (default vanilla, assimilated and, with ``ablation``, ``alpha = 1``) for every
    seed with the bundle's configs, then write the tables, the paper-style figure and the example panel.

    ``None`` leaves a setting to the bundle (the paper's defaults with a real data set, demo-sized ones
    with the synthetic demo set). ``seeds=None`` runs the single seed ``seed`` with the one-seed layout
    (``runs/<arm>``, ``comparison.*`` at the root); a list of seeds uses ``runs/seed<k>/<arm>`` and adds
    the aggregate and paired tables. ``jobs > 1`` runs that many (seed, arm) jobs at once, each a
    single-thread subprocess. ``attack_budget`` (default ``"standard"``; ``None`` or ``"none"``: no ensemble)
    adds the strong ensemble whose per-image worst case, with the grid attacks, is the headline (role
    ``worst``, always in the tables then; the tables name its members). ``worst_case`` adds the per-image
    worst case over attacks per eps to the tables without an ensemble. ``structure_checks`` names the arms whose evaluation also runs the structure-aware checks
    (straight-through clamps, APGD-CE with a larger budget ``structure_check_kwargs``; see
    :class:`~monai_assim.handlers.AdversarialRobustnessHandler`), for the seeds ``structure_check_seeds``
    (default all): they double the cost of an evaluation, so a study runs them where a gain is to be checked.
    Returns the content of ``study.json``.
    """
    root = _bundle_files(bundle, bundle_root)
    out = Path(output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    multi = seeds is not None
    seed_list = [int(s) for s in (seeds if multi else [seed])]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds must be distinct and at least one, got {seed_list}.")
    names = list(arms) if arms is not None else [n for n in DEFAULT_ARMS if ablation or n != "alpha1"]
    unknown = [n for n in [*names, *structure_checks] if n not in ARMS]
    if unknown or not names:
        raise ValueError(f"unknown arms {unknown}; choose among {', '.join(ARMS)}.")
    caps = {"train": train_per_class, "validation": val_per_class, "test": test_per_class}
    common: dict[str, Any] = {
        "backbone": backbone,
        "pretrained": pretrained,
        "mean": mean,
        "std": std,
        "image_size": image_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "assimilation_lr": assimilation_lr,
        "assimilation_init": assimilation_init,
        "dataset_dir": dataset_dir if dataset_dir is not None else "demo",
        "max_per_class": caps if any(v is not None for v in caps.values()) else None,
    }
    if device is not None:
        common["device"] = f"$torch.device('{device}')"
    train_common = {k: v for k, v in common.items() if v is not None or k in ("mean", "std")}
    adversarial = {
        k: v for k, v in (("at_eps", at_eps), ("at_steps", at_steps), ("trades_beta", trades_beta)) if v is not None
    }
    attacks = dict(STUDY_ATTACKS if attacks is None else attacks)
    # MONAI's run() drops None overrides, so "no check" is passed as the expression "$None"
    eval_common: dict[str, Any] = {
        "attacks": attacks,
        "check_eps": check_eps if check_eps is not None else "$None",
        "backbone": backbone,
        "worst_case": bool(worst_case),
        "attack_budget": "none" if attack_budget is None else str(attack_budget),
    }
    worst_case = bool(worst_case) or str(attack_budget).lower() not in ("none", "")
    checks: dict[str, Any] = {"structure_checks": True}
    if structure_check_kwargs:
        checks["structure_check_kwargs"] = dict(structure_check_kwargs)
    check_seeds = set(seed_list if structure_check_seeds is None else [int(s) for s in structure_check_seeds])
    if eps is not None:
        eval_common["eps"] = list(eps)
    # always given: without it evaluate.json's default would run Square at the largest eps only
    eval_common["attack_eps"] = {k: list(v) for k, v in (attack_eps or {}).items()}
    if device is not None:
        eval_common["device"] = common["device"]

    def run_dir_of(s: int, name: str) -> Path:
        return out / "runs" / (f"seed{s}/{name}" if multi else name)

    specs = []
    for s in seed_list:
        for name in names:
            arm = dict(ARMS[name])
            if "alpha" not in arm and alpha is not None:
                arm["alpha"] = float(alpha)
            if "adversarial_training" in arm:
                arm.update(adversarial)
            run_dir = run_dir_of(s, name)
            specs.append(
                {
                    "seed": s,
                    "arm": name,
                    "bundle_root": str(root),
                    "run_dir": str(run_dir),
                    "movement_images": movement_images,
                    "train_override": dict(train_common, **arm, seed=s, output_dir=str(run_dir)),
                    "eval_override": dict(
                        eval_common,
                        variant=arm["variant"],
                        seed=s,
                        output_dir=str(run_dir),
                        **(checks if name in structure_checks and s in check_seeds else {}),
                    ),
                }
            )
    timings: dict[str, Any] = {}
    t_all = time.perf_counter()
    if jobs <= 1:
        for spec in specs:
            logger.info(f"study: seed {spec['seed']}, arm {spec['arm']} -> {spec['run_dir']}")
            timings[f"seed{spec['seed']}/{spec['arm']}"] = run_job(spec)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=int(jobs)) as pool:
            futures = {pool.submit(_run_job_subprocess, spec, 1): spec for spec in specs}
            for fut in concurrent.futures.as_completed(futures):
                spec = futures[fut]
                timings[f"seed{spec['seed']}/{spec['arm']}"] = fut.result()
                logger.info(f"study: finished seed {spec['seed']}, arm {spec['arm']}")
    timings["all_jobs_s"] = round(time.perf_counter() - t_all, 1)

    from monai_assim.bundle import load_run_summary
    from monai_assim.robustness.compare import paired_flips, read_per_image
    from monai_assim.robustness.stats import aggregate_over_seeds, mean_over_seeds
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
            run_dir = run_dir_of(s, name)
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
        values = list(m["per_seed"].values())
        m["mean"] = {k: sum(v[k] for v in values) / len(values) for k in MOVEMENT_KEYS}
        m["std"] = {
            k: (
                math.sqrt(sum((v[k] - m["mean"][k]) ** 2 for v in values) / (len(values) - 1))
                if len(values) > 1
                else None
            )
            for k in MOVEMENT_KEYS
        }

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
        if all((run_dir_of(first, n) / "checkpoints" / "best.pt").is_file() for n in assimilated_runs):
            examples = _write_examples(
                out, bundle, first, [(n, run_dir_of(first, n)) for n in assimilated_runs], n_examples, device
            )
        else:
            logger.warning(
                "study: no checkpoints left for the example panel (pruned earlier); examples.png not rewritten."
            )
    if prune:
        for s in seed_list:
            for name in names:
                shutil.rmtree(run_dir_of(s, name) / "checkpoints", ignore_errors=True)
                shutil.rmtree(run_dir_of(s, name) / "demo_data", ignore_errors=True)

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
        if sys.argv[0].endswith("study.py")
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
    (out / "study.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return doc


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


def _parse_caps(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def _parse_lr(value: str) -> float | str:
    return "none" if value.lower() == "none" else float(value)


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
    p.add_argument(
        "--assimilation_lr",
        type=_parse_lr,
        default=None,
        help="learning rate of T and C (default: the bundle's, 1e-2); 'none': the same as --learning_rate",
    )
    p.add_argument(
        "--assimilation_init",
        choices=("identity", "random"),
        default=None,
        help="start of T and C (default: the bundle's, identity)",
    )
    p.add_argument("--alpha", type=float, default=None, help="alpha of the assimilated arms (default: the bundle's)")
    p.add_argument("--train_per_class", type=_parse_caps, default=None)
    p.add_argument("--val_per_class", type=_parse_caps, default=None)
    p.add_argument("--test_per_class", type=_parse_caps, default=None)
    p.add_argument("--attacks", default=None, help="JSON mapping name -> torchattacks kwargs (default: the paper's 4)")
    p.add_argument(
        "--attack_budget",
        default="standard",
        choices=["none", "quick", "standard", "thorough"],
        help="the strong ensemble of the headline worst case (default standard; quick gives upper bounds)",
    )
    p.add_argument("--eps_255", default=None, help="comma-separated eps in units of 1/255 (default 1,...,8)")
    p.add_argument(
        "--attack_eps_255",
        default=None,
        help="JSON mapping attack -> its own eps grid in units of 1/255, e.g. '{\"Square\": [4, 8]}'",
    )
    p.add_argument(
        "--check_eps_255", type=float, default=64.0, help="eps (x/255) of the PGD sanity check; 0 disables it"
    )
    p.add_argument("--seed", type=int, default=0, help="the seed of a one-seed study (layout runs/<arm>)")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="several seeds (split, initialisation, data order): runs/seed<k>/<arm>, aggregate and paired tables",
    )
    p.add_argument(
        "--arms", nargs="+", default=None, choices=list(ARMS), help=f"arms to run (default {' '.join(DEFAULT_ARMS)})"
    )
    p.add_argument("--jobs", type=int, default=1, help="(seed, arm) jobs at once, each a single-thread subprocess")
    p.add_argument(
        "--at_eps", type=float, default=None, help="adversarial-training eps, forwarded to the *_pgdat / *_trades arms"
    )
    p.add_argument("--at_steps", type=int, default=None, help="adversarial-training steps, forwarded likewise")
    p.add_argument("--trades_beta", type=float, default=None, help="TRADES beta, forwarded likewise")
    p.add_argument(
        "--worst_case", action="store_true", help="add the per-image worst case over attacks, per eps, to the tables"
    )
    p.add_argument(
        "--structure_checks",
        nargs="+",
        default=[],
        metavar="ARM",
        help="arms whose evaluation also runs the structure-aware checks (BPDA clamps, larger APGD-CE)",
    )
    p.add_argument(
        "--structure_check_seeds", type=int, nargs="+", default=None, help="seeds of those checks (default: every seed)"
    )
    p.add_argument(
        "--structure_check_kwargs",
        default=None,
        help='JSON torchattacks APGD kwargs of the larger-budget check, e.g. \'{"loss": "ce", "steps": 50, "n_restarts": 3}\'',
    )
    p.add_argument("--movement_images", type=int, default=16, help="test images for the assimilation movement numbers")
    p.add_argument("--no_ablation", action="store_true", help="skip the alpha = 1 run")
    p.add_argument("--n_examples", type=int, default=6)
    p.add_argument("--prune", action="store_true", help="delete checkpoints and generated demo data afterwards")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)
    p.add_argument("--job_threads", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if a.job:
        return _job_main(a.job, a.job_threads)
    doc = run_study(
        bundle=a.bundle,
        output_dir=a.output_dir,
        bundle_root=a.bundle_root,
        dataset_dir=a.dataset_dir,
        backbone=a.backbone,
        pretrained=a.pretrained,
        mean=a.mean,
        std=a.std,
        image_size=a.image_size,
        epochs=a.epochs,
        batch_size=a.batch_size,
        learning_rate=a.learning_rate,
        alpha=a.alpha,
        train_per_class=a.train_per_class,
        val_per_class=a.val_per_class,
        test_per_class=a.test_per_class,
        attacks=json.loads(a.attacks) if a.attacks else None,
        eps=[float(k) / 255 for k in a.eps_255.split(",")] if a.eps_255 else None,
        attack_eps={k: [float(e) / 255 for e in v] for k, v in json.loads(a.attack_eps_255).items()}
        if a.attack_eps_255
        else None,
        check_eps=a.check_eps_255 / 255 if a.check_eps_255 > 0 else None,
        seed=a.seed,
        ablation=not a.no_ablation,
        n_examples=a.n_examples,
        prune=a.prune,
        device=a.device,
        seeds=a.seeds,
        arms=a.arms,
        jobs=a.jobs,
        assimilation_lr=a.assimilation_lr,
        assimilation_init=a.assimilation_init,
        at_eps=a.at_eps,
        at_steps=a.at_steps,
        trades_beta=a.trades_beta,
        movement_images=a.movement_images,
        worst_case=a.worst_case,
        attack_budget=a.attack_budget,
        structure_checks=a.structure_checks,
        structure_check_seeds=a.structure_check_seeds,
        structure_check_kwargs=json.loads(a.structure_check_kwargs) if a.structure_check_kwargs else None,
    )
    table = Path(a.output_dir) / ("aggregate.md" if a.seeds is not None else "comparison.md")
    print(table)
    print(table.read_text())
    for name, lines in doc["reports"].items():
        print(f"[{name}] " + "\n[{name}] ".join(lines).replace("{name}", name))
    return 0


if __name__ == "__main__":
    from monai_assim.errors import install_excepthook

    install_excepthook()  # a user error ends stderr with its message and hint
    sys.exit(main())
