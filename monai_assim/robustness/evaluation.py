"""
Evaluating a classifier under an :class:`~monai_assim.robustness.plan.EvaluationPlan`, without Ignite:
:func:`evaluate` runs a data loader through it and returns the results table; :func:`evaluate_batch` and
:func:`finish` are its two halves, which :class:`~monai_assim.handlers.AdversarialRobustnessHandler` calls
from an engine's events.

Per batch: one clean forward, then every run of the plan: craft the adversarial images with torchattacks
through the WHOLE network in [0, 1] pixel space (:func:`~monai_assim.robustness.attacks.run_attack`,
seeded), one forward of them, and per image whether the prediction is correct; the cascade roles attack
only the images every result before them left correct, and the worst cases are per-image ANDs. The
network runs in eval mode with gradients on; every submodule's ``training`` flag is restored afterwards.
At the end the counts are summed over ``torch.distributed`` processes and the per-image results gathered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from monai.data import MetaTensor

from monai_assim.networks.output_map import saturation, straight_through_maps
from monai_assim.robustness.attacks import build_attack, build_eps_grouped_attack, run_attack
from monai_assim.robustness.plan import CASCADE_ROLES, EvaluationPlan, Key, Run, build_plan
from monai_assim.robustness.report import RobustnessResults
from monai_assim.robustness.results import WORST, result_row, worst_case_correct
from monai_assim.utils import (
    all_gather_object,
    all_reduce,
    as_class_indices,
    eval_mode,
    get_rank,
    get_world_size,
    unwrap_module,
)

__all__ = [
    "Tally",
    "evaluate",
    "evaluate_batch",
    "finish",
    "has_output_maps",
    "images_and_labels",
]

CLEAN: Key = ("clean", "clean", 0.0)


def has_output_maps(network: torch.nn.Module) -> bool:
    """Whether ``network`` has output maps (T and C) that the straight-through (BPDA) check switches."""
    return any(hasattr(m, "straight_through_map") for m in network.modules())


@contextmanager
def attack_mode(network: torch.nn.Module):
    """Eval mode (:func:`monai_assim.utils.eval_mode`, flags restored afterwards) and gradients on."""
    with eval_mode(network), torch.enable_grad():
        yield network


def images_and_labels(batch: Any, image_key: str = "image", label_key: str = "label") -> tuple[Any, Any]:
    """
    Images and labels of a batch: a dict (MONAI's ``{"image", "label"}``), a list of such dicts (a
    decollated engine output) or a sequence ``(images, labels, ...)``.
    """
    if isinstance(batch, Mapping):
        return batch[image_key], batch[label_key]
    if isinstance(batch, Sequence) and batch and all(isinstance(b, Mapping) for b in batch):
        return [b[image_key] for b in batch], [b[label_key] for b in batch]
    if isinstance(batch, Sequence) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(
        f"cannot find images and labels in a batch of type {type(batch).__name__}: expected a dict with "
        f"{image_key!r} and {label_key!r}, a list of such dicts, or (images, labels, ...)."
    )


def _image_names(images: Any, batch_size: int) -> list[str]:
    """File names from MetaTensor meta ``filename_or_obj`` (a batch, or one MetaTensor per image), else ``""``."""
    names: Any = None
    if isinstance(images, MetaTensor):
        names = images.meta.get("filename_or_obj")
    elif isinstance(images, Sequence) and images and all(isinstance(i, MetaTensor) for i in images):
        names = [i.meta.get("filename_or_obj") for i in images]
    if isinstance(names, str):
        names = [names]
    if isinstance(names, Sequence) and len(names) == batch_size:
        return ["" if n is None else str(n) for n in names]
    return [""] * batch_size


def _prepare(images: Any, labels: Any, device: torch.device) -> tuple[torch.Tensor, Any, list[str]]:
    """One float32 image batch on ``device``, checked to be on [0, 1]; per-image lists are stacked."""
    if isinstance(images, Sequence) and not isinstance(images, torch.Tensor):
        stacked = torch.stack([torch.as_tensor(i) for i in images])
        labels = torch.stack([torch.as_tensor(v) for v in labels])
    else:
        stacked = torch.as_tensor(images)
    names = _image_names(images, stacked.shape[0] if stacked.ndim else 0)
    stacked = stacked.as_subclass(torch.Tensor) if isinstance(stacked, MetaTensor) else stacked
    stacked = stacked.detach().to(device=device, dtype=torch.float32)
    if stacked.ndim < 3:
        raise ValueError(f"images must be batched (B, C, ...), got shape {tuple(stacked.shape)}.")
    if stacked.numel() and (stacked.min() < 0 or stacked.max() > 1):
        raise ValueError(
            f"images must be on [0, 1] (attacks clamp to [0, 1]), got range "
            f"[{stacked.min().item():.4g}, {stacked.max().item():.4g}]."
        )
    return stacked, labels, names


class Tally:
    """What the batches of one evaluation under ``plan`` have given so far: counts, times, per-image results."""

    def __init__(self, plan: EvaluationPlan) -> None:
        self.plan = plan
        self.batches = 0
        self.n = self.clean_correct = 0
        self.clean_seconds = 0.0
        self.num_classes: int | None = None
        self.counts = {k: [0, 0] for k in plan.keys}  # key -> [n_correct, n_success]
        self.seconds = {k: 0.0 for k in plan.keys}
        self.correct: dict[Key, list[torch.Tensor]] = {k: [] for k in (CLEAN, *plan.keys)}
        self.labels: list[torch.Tensor] = []
        self.names: list[str] = []
        self.saturation = [0.0, 0.0, 0]  # sums over batches of (texture fraction * B, color fraction * B), B
        self.predicted: torch.Tensor | None = None  # clean predictions per class

    def add_clean(self, logits: torch.Tensor, labels: torch.Tensor, names: list[str], seconds: float) -> torch.Tensor:
        """Count the clean batch; returns which images it classifies correctly."""
        pred = logits.argmax(dim=1)
        correct = pred == labels
        predicted = torch.bincount(pred.cpu(), minlength=int(logits.shape[1])).double()
        self.predicted = predicted if self.predicted is None else self.predicted + predicted
        self.batches += 1
        self.n += labels.shape[0]
        self.clean_correct += int(correct.sum())
        self.clean_seconds += seconds
        self.labels.append(labels.cpu())
        self.names += names
        self.correct[CLEAN].append(correct.cpu())
        return correct

    def add_saturation(self, fractions: Mapping[str, float], batch_size: int) -> None:
        if fractions:
            self.saturation[0] += fractions["texture"] * batch_size
            self.saturation[1] += fractions["color"] * batch_size
            self.saturation[2] += batch_size

    def record(self, key: Key, correct: torch.Tensor, clean_correct: torch.Tensor, seconds: float) -> None:
        correct, clean_correct = correct.cpu(), clean_correct.cpu()
        self.counts[key][0] += int(correct.sum())
        self.counts[key][1] += int((clean_correct & ~correct).sum())
        self.seconds[key] += seconds
        self.correct[key].append(correct)

    def last(self, key: Key) -> torch.Tensor:
        """Per-image correctness of ``key`` on the current batch."""
        return self.correct[key][-1]


def evaluate_batch(
    network: torch.nn.Module,
    images: Any,
    labels: Any,
    tally: Tally,
    seed: int,
    on_run: Callable[[Run, tuple[float, ...], int, int], None] | None = None,
) -> None:
    """
    Run every attack of ``tally.plan`` on one batch and add the results to ``tally``.

    Args:
        network: the classifier, ``(B, C, H, W)`` on [0, 1] -> logits; DataParallel / DDP / compile wrappers
            are unwrapped.
        images: ``(B, C, ...)`` on [0, 1] (a MetaTensor gives the file names), or a list of per-image tensors.
        labels: ``(B,)`` class indices, ``(B, 1)`` or one-hot / scores ``(B, num_classes)``.
        tally: the evaluation so far.
        seed: the seed of every attack on this batch.
        on_run: called as ``on_run(run, eps_group, first, n_runs)`` before each (attack, eps group) is crafted.
    """
    network = unwrap_module(network)
    device = next(network.parameters()).device
    images, labels, names = _prepare(images, labels, device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    plan = tally.plan
    with attack_mode(network):
        start = time.perf_counter()
        with torch.no_grad():
            logits = network(images)
        sync()
        if tally.num_classes is None:
            plan.check_classes(int(logits.shape[1]))
            tally.num_classes = int(logits.shape[1])
        labels = as_class_indices(labels, tally.num_classes, batch_size=images.shape[0], device=device)
        clean_correct = tally.add_clean(logits, labels, names, time.perf_counter() - start)
        maps = has_output_maps(network)
        if plan.structure_checks:
            tally.add_saturation(saturation(network, images), images.shape[0])
        n_runs = sum(len(g) for run in plan.crafted_runs(maps) for g in run.eps_groups)
        first = 1
        for run in plan.runs:
            for group in run.eps_groups:
                if run.role == "check_bpda" and not maps:
                    # no output maps to pass straight through: the check is the plain attack itself
                    for e in group:
                        tally.record((run.role, run.attack, e), tally.last(("attack", run.attack, e)), clean_correct, 0)
                    continue
                if on_run is not None:
                    on_run(run, group, first, n_runs)
                first += len(group)
                _run_group(network, run, group, images, labels, clean_correct, seed, tally, sync)
    for key, members in plan.worst_members.items():  # the worst cases: per-image ANDs
        tally.record(key, worst_case_correct([tally.last(m) for m in members]), clean_correct, 0.0)


def _run_group(network, run: Run, group, images, labels, clean_correct, seed: int, tally: Tally, sync) -> None:
    """Craft and score one (attack, eps group) of the plan on the batch."""
    start = time.perf_counter()
    if run.role in CASCADE_ROLES:
        key = (run.role, run.attack, group[0])
        correct = _cascade(network, key, run.kwargs, images, labels, clean_correct, seed, tally)
        sync()
        tally.record(key, correct, clean_correct, time.perf_counter() - start)
        return
    batch_size = images.shape[0]
    with straight_through_maps(network) if run.role == "check_bpda" else nullcontext():
        if len(group) > 1:
            attack = build_eps_grouped_attack(run.attack, network, group, batch_size, tally.num_classes, **run.kwargs)
            reps = (len(group),) + (1,) * (images.ndim - 1)
            adv = run_attack(attack, images.repeat(*reps), labels.repeat(len(group)), seed)
        else:
            attack = build_attack(run.attack, network, group[0], tally.num_classes, **run.kwargs)
            adv = run_attack(attack, images, labels, seed)
    with torch.no_grad():
        pred = network(adv).argmax(dim=1)
    sync()
    seconds = (time.perf_counter() - start) / len(group)
    for g, e in enumerate(group):
        correct = pred[g * batch_size : (g + 1) * batch_size] == labels
        tally.record((run.role, run.attack, e), correct, clean_correct, seconds)


def _cascade(network, key: Key, kwargs, images, labels, clean_correct, seed: int, tally: Tally) -> torch.Tensor:
    """
    Run an ensemble (or convergence-check) member on the images still correct under every result it follows
    (``plan.cascade_before``); the others count as broken already. Returns the per-image correctness after
    it and everything before it.
    """
    alive = clean_correct.clone()
    for k in tally.plan.cascade_before[key]:
        alive &= tally.last(k).to(alive.device)
    correct = torch.zeros_like(alive)
    index = alive.nonzero().squeeze(1)
    if index.numel():
        attack = build_attack(key[1], network, key[2], tally.num_classes, **kwargs)
        adv = run_attack(attack, images[index], labels[index], seed)
        with torch.no_grad():
            correct[index] = network(adv).argmax(dim=1) == labels[index]
    return correct


def _gather_per_image(tally: Tally) -> tuple[list[str], torch.Tensor, list[tuple[str, float, str, torch.Tensor]]]:
    """(names, labels, per-result correctness) over all processes, rank 0's images first."""
    keys = list(tally.correct)
    labels = torch.cat(tally.labels) if tally.labels else torch.zeros(0, dtype=torch.long)
    correct = (
        torch.stack([torch.cat(tally.correct[k]) for k in keys], dim=1).long()
        if tally.labels
        else torch.zeros(0, len(keys), dtype=torch.long)
    )
    parts = all_gather_object((list(tally.names), labels, correct))
    names = [name for part in parts for name in part[0]]
    labels, correct = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
    return names, labels, [(k[1], round(k[2] * 255, 4), k[0], correct[:, j]) for j, k in enumerate(keys)]


def finish(tally: Tally, variant: str = "unknown", seed: int = 0, epoch: int = 1) -> RobustnessResults:
    """Sum the counts over processes and build the results table, its report and the per-image results."""
    plan, keys = tally.plan, list(tally.plan.keys)
    counts = all_reduce([tally.n, tally.clean_correct] + [c for k in keys for c in tally.counts[k]])
    seconds = all_reduce([tally.clean_seconds] + [tally.seconds[k] for k in keys], op="max")
    sat = all_reduce(tally.saturation)
    predicted = tally.predicted if tally.predicted is not None else torch.zeros(tally.num_classes or 1)
    predicted = all_reduce(predicted.tolist())
    n, clean = int(counts[0]), int(counts[1])
    rows = [result_row("clean", 0.0, "clean", (n, clean, clean, 0), seconds[0], variant, seed, epoch)]
    for i, (role, name, e) in enumerate(keys):
        got = (n, clean, counts[2 + 2 * i], counts[3 + 2 * i])
        rows.append(result_row(name, e, role, got, seconds[1 + i], variant, seed, epoch))
    by_key = {(r["role"], r["attack"], r["eps"]): r for r in rows}
    for key, members in plan.worst_members.items():  # a worst case takes the time of its members
        by_key[key]["seconds"] = sum(by_key[m]["seconds"] for m in members)
    # the summary rows hold the worst case only when asked for (the per-image results always do)
    rows = [r for r in rows if r["role"] != WORST or plan.worst_case]
    structure = {"texture": sat[0] / sat[2], "color": sat[1] / sat[2]} if plan.structure_checks and sat[2] else {}
    predicted_classes = {i: int(c) for i, c in enumerate(predicted)}
    return RobustnessResults(plan, rows, seed, predicted_classes, structure, _gather_per_image(tally))


def evaluate(
    network: torch.nn.Module,
    loader: Iterable[Any],
    plan: EvaluationPlan | None = None,
    seed: int = 0,
    variant: str | None = None,
    output_dir: str | os.PathLike | None = None,
    file_prefix: str = "robustness",
    batch_transform: Callable[[Any], tuple[Any, Any]] = images_and_labels,
    save_rank: int = 0,
) -> RobustnessResults:
    """
    Evaluate ``network`` on every batch of ``loader`` under ``plan`` and return the results table.

    Batch ``i`` on rank ``r`` of ``W`` ``torch.distributed`` processes is attacked with seed
    ``seed + i * W + r``. ``batch_transform`` takes a batch to ``(images, labels)`` (default
    :func:`images_and_labels`: MONAI dicts or ``(images, labels)`` tuples). With ``output_dir``, rank
    ``save_rank`` writes ``<file_prefix>.csv``, ``.json`` and ``_per_image.csv`` there.

    Returns:
        :class:`~monai_assim.robustness.report.RobustnessResults`: ``.rows``, ``.report``, ``.metrics()``.
    """
    plan = build_plan() if plan is None else plan
    tally = Tally(plan)
    rank, world = get_rank(), get_world_size()
    for batch in loader:
        images, labels = batch_transform(batch)
        evaluate_batch(network, images, labels, tally, seed + tally.batches * world + rank)
    variant = variant or getattr(unwrap_module(network), "variant", None) or "unknown"
    results = finish(tally, variant, seed)
    if output_dir is not None and rank == save_rank:
        results.write(output_dir, file_prefix)
    return results
