"""Adversarial robustness evaluation as an Ignite handler: a thin wrapper of :mod:`monai_assim.robustness`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers.utils import from_engine
from monai.utils import CommonKeys, IgniteInfo, min_version, optional_import

from monai_assim.robustness.checks import is_warning
from monai_assim.robustness.cost import EvaluationCost, estimate_cost, format_duration
from monai_assim.robustness.evaluation import Tally, evaluate_batch, finish, has_output_maps, images_and_labels
from monai_assim.robustness.plan import DEFAULT_ATTACKS, EvaluationPlan, Run, build_plan, robustness_metric_names
from monai_assim.robustness.report import RobustnessResults
from monai_assim.robustness.results import RESULT_COLUMNS, eps_tag
from monai_assim.utils import get_rank, get_world_size, unwrap_module

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["AdversarialRobustnessHandler", "DEFAULT_ATTACKS", "RESULT_COLUMNS", "eps_tag", "robustness_metric_names"]


#: the default ``output_transform``: images and labels of a MONAI engine's output, batched or decollated
IMAGE_LABEL = from_engine([CommonKeys.IMAGE, CommonKeys.LABEL])


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class AdversarialRobustnessHandler:
    """
    Ignite handler measuring how a classifier's accuracy falls under L-inf attacks of growing eps: on every
    batch of the epoch it runs :func:`monai_assim.robustness.evaluate_batch` under its plan, and after the
    last one it writes, for ``k = eps * 255``:

    - ``engine.state.metrics``: the names :func:`robustness_metric_names` lists (``adv_clean_acc``,
      ``adv_{attack}_eps{k}_acc``, ``adv_{attack}_eps{k}_asr``, ``adv_worst_eps{k}_acc``, the checks,
      ``adv_gradient_masking``), so ``StatsHandler`` and ``MetricsSaver`` pick them up;
    - ``self.results`` (:class:`~monai_assim.robustness.RobustnessResults`), ``self.rows`` and ``self.report``
      (logged; failed checks as warnings);
    - with ``output_dir``: ``<file_prefix>.csv``, ``.json`` and ``_per_image.csv`` (rank ``save_rank``).

    The reduction runs right after the last batch when the epoch length is known, so every
    ``EPOCH_COMPLETED`` handler sees the metrics; otherwise on ``EPOCH_COMPLETED`` (list this handler first).
    Batch ``i`` of the epoch on rank ``r`` of ``W`` processes is attacked with seed ``seed + i * W + r``. Rank
    0 logs the cost of the plan before the first attack, the estimated time after the first batch and each
    (attack, eps) as it starts (``"attack PGD eps 2/255 (3/33), batch 4/10"``).

    Args:
        network: the classifier, ``(B, C, H, W)`` on [0, 1] -> logits. Default: ``engine.network``.
        plan: an :class:`~monai_assim.robustness.EvaluationPlan`; or give its settings instead as keywords
            (``attacks``, ``eps``, ``attack_eps``, ``check_eps``, ``attack_budget``, ... of
            :func:`~monai_assim.robustness.build_plan`).
        seed: base seed of the seeding rule above.
        output_dir: folder of the result files; None writes none. file_prefix: their name.
        variant: written to the rows; default ``network.variant`` or ``"unknown"``.
        epoch: the training epoch written to the rows, that of the evaluated checkpoint (evaluate.json passes
            :func:`monai_assim.bundle.checkpoint_epoch`); default None: the engine's epoch, which is the
            trainer's epoch when the handler runs in training's validation.
        metric_prefix: prefix of the metric names.
        output_transform: ``engine.state.output -> (images, labels)``, MONAI's convention; default
            ``from_engine(["image", "label"])`` (batched or decollated output). Images on [0, 1]; labels
            ``(B,)``, ``(B, 1)`` or one-hot.
        batch_transform: ``engine.state.batch -> (images, labels)``, used where ``engine.state.output`` is
            None or holds no images (a plain Ignite engine); default: a dict, or ``(images, labels, ...)``.
        progress: a tqdm bar over batches x (attack, eps) runs on rank 0.
        save_rank: the rank that writes the files under ``torch.distributed``.
        plan_settings: the settings of :func:`~monai_assim.robustness.build_plan`, without ``plan``.
    """

    def __init__(
        self,
        network: torch.nn.Module | None = None,
        plan: EvaluationPlan | None = None,
        seed: int = 0,
        output_dir: str | os.PathLike | None = None,
        file_prefix: str = "robustness",
        variant: str | None = None,
        epoch: int | None = None,
        metric_prefix: str = "adv_",
        output_transform: Callable[[Any], Any] = IMAGE_LABEL,
        batch_transform: Callable[[Any], Any] = images_and_labels,
        progress: bool = True,
        save_rank: int = 0,
        **plan_settings: Any,
    ) -> None:
        if plan is not None and plan_settings:
            raise ValueError(f"give plan= or its settings ({', '.join(plan_settings)}), not both.")
        self.plan = plan if plan is not None else build_plan(**plan_settings)
        self.network = network
        self.seed = int(seed)
        self.output_dir = output_dir
        self.file_prefix = file_prefix
        self.variant = variant
        self.epoch = None if epoch is None else int(epoch)
        self.metric_prefix = metric_prefix
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.progress = progress
        self.save_rank = save_rank
        self.logger = logging.getLogger(__name__)
        self.results: RobustnessResults | None = None
        self.rows: list[dict[str, Any]] = []
        self.report: list[str] = []
        self.cost: EvaluationCost | None = None
        self._reset()

    def __getattr__(self, name: str) -> Any:
        """The plan's settings and methods, read as the handler's own (``handler.eps``, ``handler.headline()``)."""
        plan = self.__dict__.get("plan")
        if plan is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(plan, name)

    def attach(self, engine: Engine) -> None:
        """
        Register on ``EPOCH_STARTED`` (reset), ``ITERATION_COMPLETED`` (attack; reduce after the last batch)
        and ``EPOCH_COMPLETED`` (reduce, when not done yet); a second ``attach`` to the same engine does
        nothing (``engine.has_event_handler``), as MONAI's handlers do.
        """
        # MONAI workflows attach handlers before they set `engine.network`: check it when it exists
        network = self.network if self.network is not None else getattr(engine, "network", None)
        if getattr(network, "num_classes", None) is not None:
            self.plan.check_classes(int(network.num_classes))
        if engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            return  # attached already: attaching twice would attack every batch twice
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _network(self, engine: Engine) -> torch.nn.Module:
        net = self.network if self.network is not None else getattr(engine, "network", None)
        if not isinstance(net, torch.nn.Module):
            raise ValueError("pass network=... : the engine has no `network` attribute to attack.")
        return unwrap_module(net)

    def _reset(self) -> None:
        self._tally = Tally(self.plan)
        self._epoch_start = time.perf_counter()
        self._pbar = None
        self._finished = False

    def _epoch_started(self, engine: Engine) -> None:
        self._reset()
        if get_rank() == 0:
            self._log_cost(engine)

    def _log_cost(self, engine: Engine) -> None:
        """Log the passes the plan costs (:func:`~monai_assim.robustness.estimate_cost`) before any attack."""
        net = self.network if self.network is not None else getattr(engine, "network", None)
        net = unwrap_module(net) if isinstance(net, torch.nn.Module) else None
        try:
            n_images: int | None = len(engine.state.dataloader.dataset)
        except (AttributeError, TypeError):
            n_images = None  # a loader without a sized dataset: per-image counts only
        maps = net is not None and has_output_maps(net)
        try:
            self.cost = estimate_cost(self.plan, n_images, getattr(net, "num_classes", None), maps)
        except (TypeError, ValueError) as e:  # the attack itself reports a bad setting when it runs
            self.logger.warning(f"cost of the robustness evaluation not estimated: {e}")
            return
        lines = self.cost.lines()
        if engine.state.epoch_length is not None:
            batches = _plural(int(engine.state.epoch_length), "batch", "batches")
            lines[0] += f"; {batches}, the time follows after the first"
        for line in lines:
            self.logger.info(line)

    def _batch(self, engine: Engine) -> tuple[Any, Any]:
        output = engine.state.output
        try:
            got = self.output_transform(output) if output is not None else None
        except KeyError as e:
            raise ValueError(f"engine.state.output has no {e}: pass output_transform=... (or batch_transform).") from e
        return got if got is not None else self.batch_transform(engine.state.batch)

    def _on_run(self, engine: Engine) -> Callable[[Run, tuple[float, ...], int, int], None]:
        """Rank 0's log line (``attack PGD eps 2/255 (3/33), batch 4/10``) and progress bar per (attack, eps) run."""
        length = engine.state.epoch_length

        def on_run(run: Run, group: tuple[float, ...], first: int, n_runs: int) -> None:
            what = "attack" if run.role == "attack" else run.role
            runs = f"{first}" if len(group) == 1 else f"{first}-{first + len(group) - 1}"
            batch = f"{self._tally.batches}" if length is None else f"{self._tally.batches}/{length}"
            eps = ", ".join(eps_tag(e) for e in group)
            self.logger.info(f"{what} {run.attack} eps {eps}/255 ({runs}/{n_runs}), batch {batch}")
            if self.progress and has_tqdm:
                if self._pbar is None:
                    total = None if length is None else int(length) * n_runs
                    self._pbar = tqdm(total=total, desc="adversarial robustness (batches x attack runs)", leave=False)
                self._pbar.update(len(group))

        return on_run

    def __call__(self, engine: Engine) -> None:
        """Attack the current batch with every run of the plan; reduce after the last batch of the epoch."""
        network = self._network(engine)
        images, labels = self._batch(engine)
        rank = get_rank()
        seed = self.seed + self._tally.batches * get_world_size() + rank
        start = time.perf_counter()
        evaluate_batch(network, images, labels, self._tally, seed, self._on_run(engine) if rank == 0 else None)
        if self._tally.batches == 1 and rank == 0:
            self._log_time_estimate(engine, time.perf_counter() - start)
        length = engine.state.epoch_length
        if length is not None and self._tally.batches == int(length):
            self._finish(engine)  # before EPOCH_COMPLETED: every epoch-end handler sees the metrics

    def _log_time_estimate(self, engine: Engine, seconds: float) -> None:
        """After the first batch: the time of the whole evaluation, the first batch's time x batches."""
        line = f"robustness evaluation: the first batch ({self._tally.n} images) took {format_duration(seconds)}"
        length = engine.state.epoch_length
        if length is not None:
            line += f"; {_plural(int(length), 'batch', 'batches')} will take about {format_duration(seconds * length)} in all"
        self.logger.info(line)

    def _epoch_completed(self, engine: Engine) -> None:
        if not self._finished:
            self._finish(engine)

    def _finish(self, engine: Engine) -> None:
        self._finished = True
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if get_rank() == 0:
            took = format_duration(time.perf_counter() - self._epoch_start)
            self.logger.info(f"robustness evaluation: {_plural(self._tally.batches, 'batch', 'batches')} took {took}")
        variant = self.variant or getattr(self._network(engine), "variant", None) or "unknown"
        epoch = self.epoch if self.epoch is not None else int(engine.state.epoch)
        self.results = finish(self._tally, variant, self.seed, epoch)
        self.rows, self.report = self.results.rows, self.results.report
        engine.state.metrics.update(self.results.metrics(self.metric_prefix))
        for line in self.report:
            (self.logger.warning if is_warning(line) else self.logger.info)(line)
        if self.output_dir is not None and get_rank() == self.save_rank:
            self.results.write(self.output_dir, self.file_prefix)
