"""
Running a study's jobs: one (seed, arm) trains with the bundle's ``train.json`` and is attacked with its
``evaluate.json``. A finished (seed, arm) is kept and skipped, so a study can be run in parts.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_assim.metrics.assimilation import assimilation_movement
from monai_assim.study.plan import JOB_LOG, MOVEMENT_FILE
from monai_assim.utils import atomic_write_text

__all__ = ["run_job", "run_jobs"]

logger = logging.getLogger("monai_assim.study")


def _run_bundle(root: Path, config: str, **override: Any) -> None:
    from monai.bundle import run

    run(
        config_file=str(root / config),
        meta_file=str(root / "metadata.json"),
        logging_file=str(root / "logging.conf") if (root / "logging.conf").is_file() else None,
        bundle_root=str(root),
        **override,
    )


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
        atomic_write_text(
            movement_file,
            json.dumps({"n_images": spec.get("movement_images", 32), "movement": movement}, indent=2) + "\n",
        )
    return out


def _run_job_subprocess(spec: Mapping[str, Any], threads: int = 1) -> dict[str, Any]:
    """:func:`run_job` in a subprocess with ``threads`` torch threads; its output goes to ``<run>/study_job.log``."""
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_file = run_dir / "study_job.json"
    atomic_write_text(spec_file, json.dumps(spec, indent=2) + "\n")
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    package_root = str(Path(__file__).resolve().parents[2])
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
    atomic_write_text(Path(spec["run_dir"]) / "study_job_result.json", json.dumps(result) + "\n")
    return 0


def run_jobs(specs: Sequence[Mapping[str, Any]], jobs: int, run: Callable[[Mapping[str, Any]], dict]) -> dict[str, Any]:
    """
    Every job of ``specs``: one after the other with ``run`` (``jobs <= 1``), or ``jobs`` at once, each a
    single-thread subprocess. Returns the timings per ``seed<k>/<arm>`` and ``all_jobs_s``.
    """
    timings: dict[str, Any] = {}
    t_all = time.perf_counter()
    if jobs <= 1:
        for spec in specs:
            logger.info(f"study: seed {spec['seed']}, arm {spec['arm']} -> {spec['run_dir']}")
            timings[f"seed{spec['seed']}/{spec['arm']}"] = run(spec)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=int(jobs)) as pool:
            futures = {pool.submit(_run_job_subprocess, spec, 1): spec for spec in specs}
            for fut in concurrent.futures.as_completed(futures):
                spec = futures[fut]
                timings[f"seed{spec['seed']}/{spec['arm']}"] = fut.result()
                logger.info(f"study: finished seed {spec['seed']}, arm {spec['arm']}")
    timings["all_jobs_s"] = round(time.perf_counter() - t_all, 1)
    return timings
