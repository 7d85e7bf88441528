"""
Running a study's jobs: one (seed, arm) trains with the bundle's ``train.json`` and is attacked with its
``evaluate.json``. A finished (seed, arm) is kept and skipped, so a study can be run in parts.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_assim.metrics.assimilation import assimilation_movement
from monai_assim.study.plan import COPIED_FILE, JOB_LOG, MOVEMENT_FILE, SATURATION_KEYS
from monai_assim.utils import atomic_write, atomic_write_text

__all__ = ["movement_and_saturation", "run_job", "run_jobs"]

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


def _load_network(run_dir: Path, device: torch.device, checkpoint: str = "best") -> torch.nn.Module:
    """The trained texture and colour modules ``nn.Sequential(T, C)`` of a run's checkpoint (``best``,
    ``best_clean`` ...), read by :func:`monai_assim.transforms.load_assimilation_modules` with the module
    sizes the run recorded (the backbone is not built)."""
    from monai_assim.bundle import checkpoint_path, load_run_summary
    from monai_assim.bundle.run_files import recorded_setting
    from monai_assim.transforms import load_assimilation_modules

    summary = load_run_summary(run_dir)
    texture = {
        "features": recorded_setting(summary, "texture_features"),
        "num_layers": recorded_setting(summary, "texture_layers"),
    }
    color = {"features": recorded_setting(summary, "color_features")}
    return load_assimilation_modules(checkpoint_path(run_dir, checkpoint), texture, color).to(device).eval()


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


def movement_and_saturation(modules: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """
    :func:`assimilation_movement` of the trained ``nn.Sequential(T, C)`` on ``images`` ``(N, 1, H, W)``, with
    ``saturation_texture`` and ``saturation_color``: the fraction of the output values of T and of C (on
    ``T(images)``) that their output map saturates (:func:`monai_assim.networks.output_map.module_saturation`).
    """
    from monai_assim.networks.output_map import module_saturation

    texture, color = modules[0], modules[1]
    param = next(modules.parameters(), None)
    x = images.float().to(param.device if param is not None else images.device)
    sat = module_saturation(texture, color, x)
    return dict(
        assimilation_movement(modules, images), saturation_texture=sat["texture"], saturation_color=sat["color"]
    )


def _movement_of_run(run_dir: Path, n_images: int, checkpoint: str = "best") -> dict[str, float] | None:
    """:func:`movement_and_saturation` of a finished assimilated run's ``checkpoint`` on its first
    ``n_images`` test images; ``None`` for a vanilla run."""
    from monai_assim.bundle import load_run_summary

    settings = load_run_summary(run_dir)["settings"]
    if settings["variant"] != "assimilated" or n_images <= 0:
        return None
    images, _ = _example_images(run_dir, n_images, settings["image_size"])
    return movement_and_saturation(_load_network(run_dir, torch.device("cpu"), checkpoint), images)


def _write_movement(run_dir: Path, eval_dir: Path, checkpoint: str, n_images: int) -> None:
    """``<eval_dir>/assimilation_movement.json`` of ``checkpoint``, unless it is there with the saturation
    and names that checkpoint (a file of an earlier version, without the saturation or copied with another
    checkpoint's name, is measured again while the checkpoint exists)."""
    movement_file = eval_dir / MOVEMENT_FILE
    if movement_file.is_file():
        try:
            saved = json.loads(movement_file.read_text())
        except ValueError:
            saved = {"movement": {}}
        movement = saved.get("movement")
        complete = movement is None or all(k in movement for k in SATURATION_KEYS)
        if complete and saved.get("checkpoint", checkpoint) == checkpoint:
            return
    if not (run_dir / "checkpoints" / f"{checkpoint}.pt").is_file():
        return
    movement = _movement_of_run(run_dir, n_images, checkpoint)
    atomic_write_text(
        movement_file,
        json.dumps({"n_images": n_images, "checkpoint": checkpoint, "movement": movement}, indent=2) + "\n",
    )


def _same_weights(a: Path, b: Path) -> int | None:
    """The epoch of the checkpoints ``a`` and ``b`` when they hold the same network weights, else ``None``."""
    ca, cb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    if not isinstance(ca, Mapping) or not isinstance(cb, Mapping) or ca.get("epoch") != cb.get("epoch"):
        return None
    na, nb = ca.get("network"), cb.get("network")
    if not isinstance(na, Mapping) or not isinstance(nb, Mapping) or na.keys() != nb.keys():
        return None
    same = all(torch.equal(torch.as_tensor(na[k]), torch.as_tensor(nb[k])) for k in na)
    return int(ca.get("epoch") or 0) if same else None


def _copy_evaluation(source: Path, target: Path, note: Mapping[str, Any]) -> None:
    """
    Copy an evaluation folder to ``target`` for the checkpoint ``note["checkpoint"]`` (the same weights),
    with ``note`` in ``target/copied.json``. Every file is written atomically and ``robustness.json``, which
    marks the row finished, last: a copy killed halfway leaves no finished row behind, only one to redo.
    The copied movement file names ``note["checkpoint"]`` (the same weights: the same numbers).
    """
    files = [p for p in source.rglob("*") if p.is_file() and not p.name.endswith(".tmp")]
    atomic_write_text(target / COPIED_FILE, json.dumps(dict(note), indent=2) + "\n")
    for path in sorted(files, key=lambda p: p.name == "robustness.json"):
        dest = target / path.relative_to(source)
        if path.name == MOVEMENT_FILE:
            doc = dict(json.loads(path.read_text()), checkpoint=note["checkpoint"])
            atomic_write_text(dest, json.dumps(doc, indent=2) + "\n")
            continue
        with open(path, "rb") as src:
            atomic_write(dest, lambda f, src=src: shutil.copyfileobj(src, f))


def _check_selection(run_dir: Path, evaluation: Mapping[str, Any], need_file: bool) -> None:
    """
    Refuse an evaluation-only row the run cannot give, with the cause read from the run summary's
    ``selection``: a run whose ``best.pt`` is not robust-selected (``select_by clean`` keeps ``best.pt`` by
    clean accuracy and ``best_robust.pt`` beside it) has no robust-vs-clean pair; with ``need_file``, the
    checkpoint must be there (missing: a run of an earlier version that saved no second checkpoint, or one
    whose checkpoints were removed, e.g. by ``--prune``).
    """
    from monai_assim.bundle import load_run_summary
    from monai_assim.errors import MissingInputError, UserInputError

    row, checkpoint = evaluation["row"], f"{evaluation['checkpoint']}.pt"
    summary = load_run_summary(run_dir)
    selection = summary.get("selection") or {}
    select_by = selection.get("select_by", (summary.get("settings") or {}).get("select_by"))
    other = selection.get("other_checkpoint")
    fix = f"delete {run_dir} and run the study again to train the arm again, or leave out --clean_selection."
    if select_by not in (None, "robust"):
        kept = f"{other['file']} beside it" if other and other.get("file") else "no second checkpoint"
        raise UserInputError(
            f"the row {row} pairs the robust-selected best.pt of {run_dir} with its clean-selected {checkpoint}, but "
            f"that run was trained with --select_by {select_by}: best.pt is the {select_by}-selected one ({kept}).",
            f"{fix} (the study trains adversarial arms with select_by robust, the bundle's default for them)",
        )
    path = run_dir / "checkpoints" / checkpoint
    if need_file and not path.is_file():
        if not other:
            cause = "its run summary records no second checkpoint: a run of an earlier version, before it was saved"
        else:
            cause = f"the run saved it (epoch {other.get('epoch')}); it was removed since, e.g. by --prune"
        raise MissingInputError(f"{path} not found: the row {row} evaluates it, and {cause}.", fix)


def _evaluate_checkpoint(root: Path, run_dir: Path, evaluation: Mapping[str, Any], n_images: int) -> dict[str, Any]:
    """
    An evaluation-only row of a job (``spec["evaluations"]``: ``row``, ``checkpoint``, ``eval_dir``,
    ``eval_override``), after the job's own evaluation: skipped when ``<eval_dir>/robustness.json`` exists;
    when the checkpoint holds the same weights as ``best.pt`` (the two rules kept one epoch) the job's own
    evaluation is copied (``copied.json`` says so) instead of attacking the same network twice. A row the
    run cannot give is refused (:func:`_check_selection`).
    """
    eval_dir, checkpoint = Path(evaluation["eval_dir"]), str(evaluation["checkpoint"])
    out: dict[str, Any] = {"evaluate_s": 0.0, "skipped": False, "copied_from": None}
    done = (eval_dir / "robustness.json").is_file()
    _check_selection(run_dir, evaluation, need_file=not done)
    if done:
        out["skipped"] = True
    else:
        (eval_dir / COPIED_FILE).unlink(missing_ok=True)
        path, best = run_dir / "checkpoints" / f"{checkpoint}.pt", run_dir / "checkpoints" / "best.pt"
        epoch = _same_weights(path, best) if best.is_file() else None
        if epoch is not None and (run_dir / "eval" / "robustness.json").is_file():
            note = {"from": "eval", "checkpoint": checkpoint, "epoch": epoch}
            note["reason"] = f"{checkpoint}.pt holds the weights of best.pt (epoch {epoch}): the same network"
            _copy_evaluation(run_dir / "eval", eval_dir, note)
            out["copied_from"] = "eval"
        else:
            eval_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            _run_bundle(root, "evaluate.json", **evaluation["eval_override"])
            out["evaluate_s"] = round(time.perf_counter() - t0, 1)
    _write_movement(run_dir, eval_dir, checkpoint, n_images)
    return out


def run_job(spec: Mapping[str, Any]) -> dict[str, Any]:
    """
    One (seed, arm) of a study: train (unless finished; an interrupted training, with ``checkpoints/last.pt``,
    resumes), evaluate (unless ``eval/robustness.json`` exists),
    then write ``eval/assimilation_movement.json``; then each evaluation-only row of ``spec["evaluations"]``
    (the clean-selected checkpoint, :func:`_evaluate_checkpoint`), redone whenever the arm was evaluated. ``spec`` holds ``bundle_root``,
    ``run_dir``, ``train_override``, ``eval_override``, ``movement_images`` and optionally ``evaluations``.
    Returns ``{"train_s", "evaluate_s", "skipped"}`` and, with ``evaluations``, ``"evaluations"``: row ->
    ``{"evaluate_s", "skipped", "copied_from"}``.
    """
    root, run_dir = Path(spec["bundle_root"]), Path(spec["run_dir"])
    n_images = int(spec.get("movement_images", 32))
    out: dict[str, Any] = {"train_s": 0.0, "evaluate_s": 0.0, "skipped": []}
    if (run_dir / "eval" / "robustness.json").is_file():
        out["skipped"] = ["train", "evaluate"]
    else:
        if _train_finished(run_dir):
            out["skipped"].append("train")
        else:
            t0 = time.perf_counter()
            override = dict(spec["train_override"])
            if (run_dir / "checkpoints" / "last.pt").is_file():
                # a training a killed study left unfinished goes on from its last epoch (the bundle checks that
                # the settings are the recorded ones) instead of starting again
                override["resume"] = True
                out["resumed"] = True
            _run_bundle(root, "train.json", **override)
            out["train_s"] = round(time.perf_counter() - t0, 1)
        # the arm is evaluated (again: its result was deleted, e.g. to attack with other eps or budget): its
        # evaluation-only rows, made by the earlier evaluation, are redone with it, not kept silently
        for e in spec.get("evaluations") or []:
            for name in ("robustness.json", COPIED_FILE):
                (Path(e["eval_dir"]) / name).unlink(missing_ok=True)
        t0 = time.perf_counter()
        _run_bundle(root, "evaluate.json", **spec["eval_override"])
        out["evaluate_s"] = round(time.perf_counter() - t0, 1)
    _write_movement(run_dir, run_dir / "eval", "best", n_images)
    if spec.get("evaluations"):
        out["evaluations"] = {e["row"]: _evaluate_checkpoint(root, run_dir, e, n_images) for e in spec["evaluations"]}
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
