"""Adversarial robustness evaluation of a classifier as an Ignite handler (torchattacks)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor
from monai.utils import CommonKeys, IgniteInfo, min_version, optional_import

from monai_assim.networks.output_map import saturation, straight_through_maps
from monai_assim.robustness.attacks import (
    ATTACK_BUDGETS,
    DEFAULT_EPS,
    PAPER_ATTACKS,
    attack_budget as budget_members,
    build_attack,
    build_eps_grouped_attack,
    canonical_attack_name,
    check_eps as validate_eps,
    check_num_classes,
    convergence_members,
    describe_attack,
    is_eps_groupable,
    parse_attacks,
    run_attack,
)
from monai_assim.robustness.cost import EvaluationCost, estimate_cost, format_duration
from monai_assim.robustness.results import (
    RESULT_COLUMNS,
    WORST,
    per_image_path,
    worst_case_correct,
    write_per_image,
    write_results,
)
from monai_assim.utils import as_class_indices, eval_mode, unwrap_module

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["AdversarialRobustnessHandler", "DEFAULT_ATTACKS", "RESULT_COLUMNS", "eps_tag", "robustness_metric_names"]

DEFAULT_ATTACKS: dict[str, dict[str, Any]] = {**{a: {} for a in PAPER_ATTACKS}, "Square": {"n_queries": 1000}}
"""The paper's four white-box attacks plus black-box Square (1000 queries) for the masking check."""

#: roles of the structure-aware checks (``structure_checks=True``)
STRUCTURE_ROLES = ("check_bpda", "check_apgd_strong", "check_worst")

#: APGD-CE settings of the larger-budget check: torchattacks' APGD defaults are 10 steps, 1 restart
DEFAULT_STRONG_APGD: dict[str, Any] = {"loss": "ce", "steps": 50, "n_restarts": 3}

#: black-box attacks: no gradient, so the straight-through (BPDA) rerun does not apply to them
_BLACK_BOX = ("Square",)

#: roles whose attacks run only on the images every earlier attack at their eps left correct (AutoAttack)
_CASCADE_ROLES = ("ensemble", "check_convergence")


def eps_tag(eps: float) -> str:
    """``eps`` in units of 1/255, as used in metric names: 8/255 -> ``"8"``, 0.5/255 -> ``"0.5"``."""
    return f"{round(eps * 255, 4):g}"


def robustness_metric_names(
    attacks: Sequence[str] | Mapping[str, Any] = tuple(DEFAULT_ATTACKS),
    eps: Sequence[float] = DEFAULT_EPS,
    prefix: str = "adv_",
    check_eps: float | None = 64 / 255,
    worst_case: bool = False,
    structure_checks: bool = False,
    attack_budget: str | None = None,
    ensemble_eps: Sequence[float] | None = None,
    convergence_check: bool = True,
) -> list[str]:
    """
    The names :class:`AdversarialRobustnessHandler` writes to ``engine.state.metrics``, in order::

        {prefix}clean_acc
        {prefix}{attack}_eps{k}_acc, {prefix}{attack}_eps{k}_asr   for each attack, then each eps
        {prefix}ensemble_{member}_eps{k}_acc                         with attack_budget: each member of
                                                                     the ensemble (cumulative), each
                                                                     ensemble eps
        {prefix}worst_eps{k}_acc                                     each eps, with worst_case or
                                                                     attack_budget
        {prefix}check_convergence_{member}_eps{k}_acc                with attack_budget and
                                                                     convergence_check
        {prefix}check_PGD_eps{k}_acc                                 when check_eps is set
        {prefix}check_bpda_{attack}_eps{k}_acc                       with structure_checks: each
                                                                     gradient-based attack, each eps
        {prefix}check_apgd_strong_eps{k}_acc                         with structure_checks, each eps
        {prefix}check_worst_eps{k}_acc                               with structure_checks, each eps
        {prefix}gradient_masking                                     1.0 when a check failed, else 0.0
        {prefix}saturation_texture, {prefix}saturation_color         with structure_checks, for
                                                                     networks with T and C only

    with ``k = eps * 255`` (:func:`eps_tag`) and the canonical attack names (an ensemble such as
    ``"autoattack-binary"`` stands for its members).
    """
    parsed = parse_attacks(attacks if isinstance(attacks, Mapping) else list(attacks))
    names = [f"{prefix}clean_acc"]
    for a in parsed:
        for e in eps:
            names += [f"{prefix}{a}_eps{eps_tag(e)}_acc", f"{prefix}{a}_eps{eps_tag(e)}_asr"]
    ens_eps = list(eps if ensemble_eps is None else ensemble_eps)
    if attack_budget is not None:
        names += [f"{prefix}ensemble_{m}_eps{eps_tag(e)}_acc" for m in budget_members(attack_budget) for e in ens_eps]
    if worst_case or attack_budget is not None:
        names += [f"{prefix}worst_eps{eps_tag(e)}_acc" for e in dict.fromkeys([*eps, *ens_eps])]
    if attack_budget is not None and convergence_check:
        names += [
            f"{prefix}check_convergence_{m}_eps{eps_tag(e)}_acc"
            for m in convergence_members(attack_budget)
            for e in ens_eps
        ]
    if check_eps is not None:
        names.append(f"{prefix}check_PGD_eps{eps_tag(check_eps)}_acc")
    if structure_checks:
        names += [f"{prefix}check_bpda_{a}_eps{eps_tag(e)}_acc" for a in parsed if a not in _BLACK_BOX for e in eps]
        names += [f"{prefix}check_apgd_strong_eps{eps_tag(e)}_acc" for e in eps]
        names += [f"{prefix}check_worst_eps{eps_tag(e)}_acc" for e in eps]
    names.append(f"{prefix}gradient_masking")
    return names


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@contextmanager
def _attack_mode(network: torch.nn.Module):
    """Eval mode (:func:`monai_assim.utils.eval_mode`, flags restored afterwards) and gradients on."""
    with eval_mode(network), torch.enable_grad():
        yield network


class AdversarialRobustnessHandler:
    """
    Ignite handler measuring how a classifier's accuracy falls under L-inf attacks of growing eps.

    For every batch, every attack and every eps it crafts adversarial images with torchattacks through
    the WHOLE network in [0, 1] pixel space (the network holds its own input normalisation), and counts
    correct predictions. At the end of the epoch it writes, for ``k = eps * 255``:

    - ``engine.state.metrics``: the names listed by :func:`robustness_metric_names`
      (``adv_clean_acc``, ``adv_{attack}_eps{k}_acc``, ``adv_{attack}_eps{k}_asr``,
      ``adv_check_PGD_eps64_acc``, ``adv_gradient_masking``), so ``StatsHandler``,
      ``TensorBoardStatsHandler`` and ``MetricsSaver`` attached AFTER this handler pick them up;
    - ``<output_dir>/<file_prefix>.csv`` and ``.json``: one row per (attack, eps), columns
      :data:`RESULT_COLUMNS`; the JSON also holds the honesty report;
    - a report (logged, in ``self.report`` and in the JSON) with the honesty checks: PGD at
      ``check_eps`` must drive accuracy to at most ``masking_tolerance``, and black-box Square must not
      beat every white-box attack at the same eps by more than ``square_margin``; otherwise the report
      says "possible gradient masking".

    Accuracy is over all samples of the adversarial batch; the attack success rate is the fraction of
    clean-correct samples whose adversarial prediction is wrong. The network is put in eval mode with
    gradients enabled for the attacks (the evaluator runs under ``no_grad`` and may be called from a
    trainer in train mode); the ``training`` flag of every submodule is restored afterwards, so
    BatchNorm running statistics are never updated. Seeding: batch ``i`` of the epoch (0-based) on rank
    ``r`` of ``W`` processes uses ``seed + i * W + r`` for every attack and eps, applied by
    :func:`monai_assim.robustness.attacks.run_attack`; the caller's random state is left unchanged.

    Args:
        network: the classifier, ``(B, C, H, W)`` on [0, 1] -> logits. Default: ``engine.network`` (MONAI
            workflows). DataParallel / DistributedDataParallel / torch.compile wrappers are unwrapped.
        attacks: attack names, ``(name, kwargs)`` pairs or a mapping name -> kwargs (see
            :mod:`monai_assim.robustness.attacks`). Default :data:`DEFAULT_ATTACKS`.
        eps: the eps grid, each in [0, 1]. Default: the paper's 1/255 ... 8/255.
        attack_eps: optional attack name -> its own eps grid, for attacks too costly to run on the whole
            grid (e.g. ``{"Square": [4 / 255, 8 / 255]}``); the other attacks use ``eps``. An entry for
            a supported attack that is not among ``attacks`` is ignored (logged), so a default grid for
            Square stays valid when the attacks leave Square out; an unknown name is an error.
        seed: base seed of the seeding rule above.
        output_dir: folder for the CSV/JSON result files; None writes no files.
        file_prefix: result file name without extension.
        variant: model variant written to the results; default ``network.variant`` or ``"unknown"``.
        metric_prefix: prefix of the metric names.
        check_eps: eps of the PGD gradient-masking check (default 64/255); None skips it.
        check_kwargs: torchattacks PGD keyword arguments of the check, over the configured PGD settings;
            default ``{"steps": 20}`` (random start always on): at a large eps the step size of a short
            sweep budget (``2.5 * eps / steps``) is coarse, and a check that fails for lack of steps
            would only restate that.
        masking_tolerance: highest accuracy accepted from PGD at ``check_eps``.
        square_margin: how much lower Square's accuracy may be than the best white-box one.
        group_eps: how many eps values of an attack are crafted in one batched pass (the batch repeated
            per eps with per-sample eps). Only for attacks whose torchattacks code takes a per-sample eps
            (FGSM, BIM, MIFGSM; PGD without random start); others always run per eps. 1 disables it.
        batch_getter: ``engine -> (images, labels)``. Default: ``image_key``/``label_key`` from
            ``engine.state.output`` (MONAI evaluators, batched or decollated), else from
            ``engine.state.batch`` (a dict, or a sequence ``(images, labels, ...)``).
        image_key: key of the images. label_key: key of the labels.
        progress: show a tqdm bar over batches x attacks (rank 0 only). Whatever its value, rank 0 logs
            (INFO) the cost of the plan before the first attack (:func:`monai_assim.robustness.cost.estimate_cost`),
            the estimated time of the whole evaluation after the first batch, and one line per attack and
            eps as it starts (``"attack PGD eps 2/255 (3/33), batch 4/10"``).
        save_rank: the rank that writes files under DDP.
        worst_case: add the worst case over attacks, per eps, to the metrics
            (``adv_worst_eps{k}_acc``) and to the summary rows (attack ``"worst"``, role ``"worst"``): the
            accuracy over images classified correctly under EVERY attack run at that eps (a per-image AND).
            The per-image file always holds the worst-case rows.
        structure_checks: rerun the attacks knowing the model's structure (docs/adversarial.md, "Worst case
            and structure-aware checks"): every gradient-based attack of the grid with the texture and
            colour modules' output maps passing gradients straight through (role ``check_bpda``; for a network
            without those modules the results of the plain attack, which it equals), APGD-CE with a larger
            budget (role ``check_apgd_strong``, settings ``structure_check_kwargs``), the worst case over
            all of them (attack ``"worst"``, role ``check_worst``), and the fraction of values that T and C
            saturate (:func:`~monai_assim.networks.saturation`; metrics ``adv_saturation_texture``/``_color``,
            JSON ``"structure"``).
        structure_check_kwargs: torchattacks APGD keyword arguments of the larger-budget check; default
            :data:`DEFAULT_STRONG_APGD` (CE, 50 steps, 3 restarts).
        attack_budget: ``None`` or ``"none"`` (no ensemble), or a budget of :data:`monai_assim.robustness.attacks.ATTACK_BUDGETS`
            (``"quick"``, ``"standard"``, ``"thorough"``): its strong ensemble (APGD-CE, APGD-margin, Square)
            runs at each eps of ``ensemble_eps`` after the grid attacks, AutoAttack's way: each member only on
            the images every attack before it at that eps (grid attacks and earlier members) left correct,
            so its row (role ``"ensemble"``) is the accuracy after it and everything before it, and the worst
            case over attacks (role ``"worst"``, always reported with a budget) is the headline robust
            accuracy. ``"quick"`` figures are upper bounds, and the report says so.
        ensemble_eps: the eps values of the ensemble; default ``eps``.
        convergence_check: with ``attack_budget``, run the gradient members of the next larger budget
            (:func:`monai_assim.robustness.attacks.convergence_members`) on the images the worst case left correct (role
            ``"check_convergence"``, cumulative like the ensemble); where they lower the worst case by more
            than ``convergence_tolerance`` the report says the budget has not converged and names the one to use.
        convergence_tolerance: the accuracy drop the convergence check accepts.

    Per-image results: with ``output_dir``, ``<output_dir>/<file_prefix>_per_image.csv`` in long format
    (:data:`~monai_assim.robustness.results.PER_IMAGE_COLUMNS`): one row per sample and result (clean,
    each attack and eps and check, the worst case per eps), ``sample`` the running index in evaluation
    order (under DDP: rank 0's samples, then rank 1's, ...), ``image`` the file name from the batch's
    MetaTensor meta ``filename_or_obj`` where there is one, else ``""``.

    The reduction (metrics, files, report) runs right after the last batch of the epoch when the epoch
    length is known, i.e. before any ``EPOCH_COMPLETED`` handler, so ``StatsHandler`` and ``MetricsSaver``
    see the metrics whatever their order in the handler list; with an unknown epoch length it runs on
    ``EPOCH_COMPLETED``, and then this handler must be listed before them.

    Labels may be ``(B,)`` class indices, ``(B, 1)`` or one-hot / scores ``(B, num_classes)``.
    """

    def __init__(
        self,
        network: torch.nn.Module | None = None,
        attacks: str | Sequence | Mapping[str, Mapping[str, Any]] | None = None,
        eps: Sequence[float] = DEFAULT_EPS,
        attack_eps: Mapping[str, Sequence[float]] | None = None,
        seed: int = 0,
        output_dir: str | os.PathLike | None = None,
        file_prefix: str = "robustness",
        variant: str | None = None,
        metric_prefix: str = "adv_",
        check_eps: float | None = 64 / 255,
        check_kwargs: Mapping[str, Any] | None = None,
        masking_tolerance: float = 0.1,
        square_margin: float = 0.02,
        group_eps: int = 1,
        batch_getter: Callable[[Engine], tuple[torch.Tensor, torch.Tensor]] | None = None,
        image_key: str = CommonKeys.IMAGE,
        label_key: str = CommonKeys.LABEL,
        progress: bool = True,
        save_rank: int = 0,
        worst_case: bool = False,
        structure_checks: bool = False,
        structure_check_kwargs: Mapping[str, Any] | None = None,
        attack_budget: str | None = None,
        ensemble_eps: Sequence[float] | None = None,
        convergence_check: bool = True,
        convergence_tolerance: float = 0.01,
    ) -> None:
        self.attacks = parse_attacks(DEFAULT_ATTACKS if attacks is None else attacks)
        if isinstance(eps, (int, float)):
            eps = [eps]
        self.eps = [validate_eps(e) for e in eps]
        if not self.eps or len(set(self.eps)) != len(self.eps):
            raise ValueError(f"eps must be a non-empty grid without repeats, got {list(eps)}.")
        self.logger = logging.getLogger(__name__)
        self.attack_eps: dict[str, list[float]] = {}
        for name, grid in (attack_eps or {}).items():
            key = canonical_attack_name(name)  # an unknown name (a typo) is an error
            if key not in self.attacks:
                # a default grid (e.g. the bundles' one eps for Square) stays valid when the attacks drop it
                self.logger.info(f"attack_eps for {key} ignored: {key} is not among the attacks {list(self.attacks)}.")
                continue
            grid = [grid] if isinstance(grid, (int, float)) else list(grid)
            if not grid or len(set(grid)) != len(grid):
                raise ValueError(f"attack_eps[{name!r}] must be a non-empty grid without repeats, got {grid}.")
            self.attack_eps[key] = [validate_eps(e) for e in grid]
        # check_eps 0 (or None) switches the large-eps check off: PGD at eps 0 would only restate clean accuracy
        self.check_eps = None if check_eps is None or check_eps == 0 else validate_eps(check_eps)
        self.check_kwargs = dict({"steps": 20} if check_kwargs is None else check_kwargs)
        if "eps" in self.check_kwargs:
            raise ValueError("give the eps of the check through check_eps, not in check_kwargs.")
        if int(group_eps) < 1:
            raise ValueError(f"group_eps must be >= 1, got {group_eps}.")
        self.network = network
        self.seed = int(seed)
        self.output_dir = output_dir
        self.file_prefix = file_prefix
        self.variant = variant
        self.metric_prefix = metric_prefix
        self.masking_tolerance = float(masking_tolerance)
        self.square_margin = float(square_margin)
        self.group_eps = int(group_eps)
        self.batch_getter = batch_getter
        self.image_key = image_key
        self.label_key = label_key
        self.progress = progress
        self.save_rank = save_rank
        budget = None if attack_budget is None else str(attack_budget).strip().lower()
        self.budget = None if budget in (None, "none") else budget
        self.ensemble = {} if self.budget is None else budget_members(self.budget)
        grid = (
            self.eps if ensemble_eps is None else ([ensemble_eps] if isinstance(ensemble_eps, float) else ensemble_eps)
        )
        self.ensemble_eps = [validate_eps(e) for e in grid]
        if self.ensemble and (not self.ensemble_eps or len(set(self.ensemble_eps)) != len(self.ensemble_eps)):
            raise ValueError(f"ensemble_eps must be a non-empty grid without repeats, got {list(grid)}.")
        self.convergence = convergence_members(self.budget) if self.budget and convergence_check else {}
        self.convergence_tolerance = float(convergence_tolerance)
        self.worst_case = bool(worst_case) or bool(self.ensemble)
        self.structure_checks = bool(structure_checks)
        strong = DEFAULT_STRONG_APGD if structure_check_kwargs is None else structure_check_kwargs
        self.structure_check_kwargs = dict(strong)
        if "eps" in self.structure_check_kwargs:
            raise ValueError("the larger-budget check runs on the eps grid; do not give eps in structure_check_kwargs.")
        self.structure: dict[str, float] = {}
        self.rows: list[dict[str, Any]] = []
        self.report: list[str] = []
        self.cost: EvaluationCost | None = None
        self._reset()

    # ------------------------------------------------------------------ ignite plumbing
    def attach(self, engine: Engine) -> None:
        """
        Register on ``EPOCH_STARTED`` (reset), ``ITERATION_COMPLETED`` (attack; reduce after the last batch)
        and ``EPOCH_COMPLETED`` (reduce, when not done yet). A second ``attach`` to the same engine does
        nothing (``engine.has_event_handler``), as MONAI's handlers do.
        """
        # MONAI workflows attach handlers before they set `engine.network`: check it when it exists
        network = self.network if self.network is not None else getattr(engine, "network", None)
        if getattr(network, "num_classes", None) is not None:
            self._check_classes(int(network.num_classes))
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

    def _check_classes(self, num_classes: int) -> None:
        for name, kwargs in self.attacks.items():
            check_num_classes(name, kwargs, num_classes)

    def _plan(self) -> list[tuple[str, str, dict[str, Any], list[tuple[float, ...]]]]:
        """(role, attack, kwargs, eps groups) in the order they run on each batch."""
        plan = []
        for name, kwargs in self.attacks.items():
            size = self.group_eps if is_eps_groupable(name, kwargs) else 1
            grid = self.attack_eps.get(name, self.eps)
            groups = [tuple(grid[i : i + size]) for i in range(0, len(grid), size)]
            plan.append(("attack", name, kwargs, groups))
        for role, members in (("ensemble", self.ensemble), ("check_convergence", self.convergence)):
            plan += [(role, name, dict(kwargs), [(e,) for e in self.ensemble_eps]) for name, kwargs in members.items()]
        if self.check_eps is not None:
            # the masking check: the configured PGD settings, always with random start
            kwargs = {**self.attacks.get("PGD", {}), **self.check_kwargs, "random_start": True}
            plan.append(("check", "PGD", kwargs, [(self.check_eps,)]))
        if self.structure_checks:
            for role, name, kwargs, groups in list(plan):
                if role == "attack" and name not in _BLACK_BOX:
                    plan.append(("check_bpda", name, kwargs, groups))
            plan.append(("check_apgd_strong", "APGD", dict(self.structure_check_kwargs), [(e,) for e in self.eps]))
        return plan

    def _worst_eps(self) -> list[float]:
        """The eps values of the grid attacks and the ensemble, in order of first appearance."""
        roles = ("attack", "ensemble")
        return list(dict.fromkeys(e for r, _, _, groups in self._plan() if r in roles for g in groups for e in g))

    def _worst_members(self, role: str, e: float) -> list[tuple[str, str, float]]:
        roles = ("attack", "ensemble") if role == WORST else ("attack", "ensemble", "check_bpda", "check_apgd_strong")
        return [k for k in self._attack_keys() if k[0] in roles and k[2] == e]

    def _cascade_before(self, key: tuple[str, str, float]) -> list[tuple[str, str, float]]:
        """
        The results an ensemble member (or a convergence-check member) at ``key``'s eps attacks the survivors
        of: the grid attacks at that eps and the ensemble members before it (for the convergence check: the
        whole ensemble and the check's members before it).
        """
        roles = ("attack", "ensemble") if key[0] == "ensemble" else ("attack", "ensemble", "check_convergence")
        keys = [k for k in self._attack_keys() if k[0] in roles and k[2] == key[2]]
        return keys[: keys.index(key)]

    def _attack_keys(self) -> list[tuple[str, str, float]]:
        return [(role, name, e) for role, name, _, groups in self._plan() for group in groups for e in group]

    def _keys(self) -> list[tuple[str, str, float]]:
        """Every result, in row order: grid attacks, worst case, large-eps check, structure checks."""
        keys = self._attack_keys()
        head = [k for k in keys if k[0] in ("attack", "ensemble")]  # the plan runs these first
        worst = [(WORST, WORST, e) for e in self._worst_eps()]
        check_worst = [("check_worst", WORST, e) for e in self._worst_eps()] if self.structure_checks else []
        return head + worst + keys[len(head) :] + check_worst

    def _reset(self) -> None:
        self._epoch_start = time.perf_counter()
        self._batch_index = 0
        self._n = 0
        self._clean_correct = 0
        self._clean_seconds = 0.0
        self._counts = {k: [0, 0] for k in self._keys()}  # key -> [n_correct, n_success]
        self._seconds = {k: 0.0 for k in self._keys()}
        self._num_classes: int | None = None
        self._pbar = None
        # per image: labels, file names, clean and per-key correctness, one entry per batch
        self._labels: list[torch.Tensor] = []
        self._names: list[str] = []
        self._correct: dict[Any, list[torch.Tensor]] = {k: [] for k in [("clean", "clean", 0.0), *self._keys()]}
        self._clamp = [0.0, 0.0, 0]  # sum over batches of (texture fraction * B, color fraction * B), B
        self._predicted: torch.Tensor | None = None  # clean predictions per class
        self._finished = False

    def _epoch_started(self, engine: Engine) -> None:
        self._reset()
        if idist.get_rank() == 0:
            self._log_cost(engine)
        if self.progress and has_tqdm and idist.get_rank() == 0:
            length = engine.state.epoch_length
            n_attacks = len(self._plan())
            total = None if length is None else length * n_attacks
            self._pbar = tqdm(total=total, desc="adversarial robustness (batches x attacks)", leave=False)

    # ------------------------------------------------------------------ cost and progress
    def _runs(self, has_clamps: bool) -> list[tuple[str, str, dict[str, Any], list[tuple[float, ...]]]]:
        """The plan without the entries whose results are reused (BPDA on a network without T and C)."""
        return [p for p in self._plan() if p[0] != "check_bpda" or has_clamps]

    def _log_cost(self, engine: Engine) -> None:
        """Log the passes the plan costs (:func:`~monai_assim.robustness.cost.estimate_cost`) before any attack."""
        net = self.network if self.network is not None else getattr(engine, "network", None)
        net = unwrap_module(net) if isinstance(net, torch.nn.Module) else None
        has_clamps = net is not None and any(hasattr(m, "straight_through_map") for m in net.modules())
        try:
            n_images: int | None = len(engine.state.dataloader.dataset)
        except (AttributeError, TypeError):
            n_images = None  # a loader without a sized dataset: per-image counts only
        try:
            self.cost = estimate_cost(self._runs(has_clamps), n_images, getattr(net, "num_classes", None))
        except (TypeError, ValueError) as e:  # the attack itself reports a bad setting when it runs
            self.logger.warning(f"cost of the robustness evaluation not estimated: {e}")
            return
        lines = self.cost.lines()
        length = engine.state.epoch_length
        if length is not None:
            lines[0] += f"; {_plural(int(length), 'batch', 'batches')}, the time follows after the first"
        for line in lines:
            self.logger.info(line)

    def _log_progress(self, role: str, name: str, group: tuple[float, ...], first: int, n_runs: int, engine: Engine):
        """``attack PGD eps 2/255 (3/33), batch 4/10``: the attack and eps about to run."""
        what = "attack" if role == "attack" else role
        eps = ", ".join(eps_tag(e) for e in group)
        runs = f"{first}" if len(group) == 1 else f"{first}-{first + len(group) - 1}"
        length = engine.state.epoch_length
        batch = f"{self._batch_index}" if length is None else f"{self._batch_index}/{length}"
        self.logger.info(f"{what} {name} eps {eps}/255 ({runs}/{n_runs}), batch {batch}")

    def _log_time_estimate(self, engine: Engine, seconds: float, batch_size: int) -> None:
        """After the first batch: the time of the whole evaluation, the first batch's time x batches."""
        length = engine.state.epoch_length
        if length is None:
            self.logger.info(
                f"robustness evaluation: the first batch ({batch_size} images) took {format_duration(seconds)}"
            )
            return
        self.logger.info(
            f"robustness evaluation: the first batch ({batch_size} images) took {format_duration(seconds)}; "
            f"{_plural(int(length), 'batch', 'batches')} will take about {format_duration(seconds * int(length))} in all"
        )

    # ------------------------------------------------------------------ batch data
    def _get_batch(self, engine: Engine) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_getter is not None:
            return self.batch_getter(engine)
        for data in (engine.state.output, engine.state.batch):
            if isinstance(data, Mapping) and self.image_key in data and self.label_key in data:
                return data[self.image_key], data[self.label_key]
            if (
                isinstance(data, Sequence)
                and data
                and all(isinstance(d, Mapping) and self.image_key in d and self.label_key in d for d in data)
            ):
                images = torch.stack([torch.as_tensor(d[self.image_key]) for d in data])
                labels = torch.stack([torch.as_tensor(d[self.label_key]) for d in data])
                return images, labels
        batch = engine.state.batch
        if isinstance(batch, Sequence) and len(batch) >= 2 and all(isinstance(b, torch.Tensor) for b in batch[:2]):
            return batch[0], batch[1]
        raise ValueError(
            f"cannot find images and labels: expected keys {self.image_key!r}/{self.label_key!r} in "
            "engine.state.output or engine.state.batch, or a batch (images, labels, ...); pass batch_getter."
        )

    @staticmethod
    def _as_labels(labels: Any, batch_size: int, num_classes: int, device: torch.device) -> torch.Tensor:
        return as_class_indices(labels, num_classes, batch_size=batch_size, device=device)

    # ------------------------------------------------------------------ per batch
    def _image_names(self, engine: Engine, batch_size: int) -> list[str]:
        """File names of the batch's images from MetaTensor meta ``filename_or_obj``, else ``""``."""
        for data in (engine.state.batch, engine.state.output):
            names: Any = None
            if isinstance(data, Mapping) and isinstance(data.get(self.image_key), MetaTensor):
                names = data[self.image_key].meta.get("filename_or_obj")
            elif isinstance(data, Sequence) and data and all(isinstance(d, Mapping) for d in data):
                items = [d.get(self.image_key) for d in data]
                if all(isinstance(i, MetaTensor) for i in items):
                    names = [i.meta.get("filename_or_obj") for i in items]
            if isinstance(names, str):
                names = [names]
            if isinstance(names, Sequence) and len(names) == batch_size:
                return ["" if n is None else str(n) for n in names]
        return [""] * batch_size

    def __call__(self, engine: Engine) -> None:
        """Attack the current batch with every attack and eps and accumulate the counts."""
        network = self._network(engine)
        images, labels = self._get_batch(engine)
        device = next(network.parameters()).device
        images = images.as_tensor() if isinstance(images, MetaTensor) else torch.as_tensor(images)
        images = images.detach().to(device=device, dtype=torch.float32)
        if images.ndim < 3:
            raise ValueError(f"images must be batched (B, C, ...), got shape {tuple(images.shape)}.")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(
                f"images must be on [0, 1] (attacks clamp to [0, 1]), got range "
                f"[{images.min().item():.4g}, {images.max().item():.4g}]."
            )
        rank, world = idist.get_rank(), idist.get_world_size()
        seed = self.seed + self._batch_index * world + rank
        self._batch_index += 1
        batch_size = images.shape[0]
        batch_start = time.perf_counter()
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

        with _attack_mode(network):
            start = time.perf_counter()
            with torch.no_grad():
                logits = network(images)
            sync()
            self._clean_seconds += time.perf_counter() - start
            num_classes = int(logits.shape[1])
            if self._num_classes is None:
                self._check_classes(num_classes)
                self._num_classes = num_classes
            labels = self._as_labels(labels, batch_size, num_classes, device)
            clean_correct = logits.argmax(dim=1) == labels
            predicted = torch.bincount(logits.argmax(dim=1).cpu(), minlength=num_classes).double()
            self._predicted = predicted if self._predicted is None else self._predicted + predicted
            self._n += batch_size
            self._clean_correct += int(clean_correct.sum())
            self._labels.append(labels.cpu())
            self._names += self._image_names(engine, batch_size)
            self._correct[("clean", "clean", 0.0)].append(clean_correct.cpu())
            has_clamps = any(hasattr(m, "straight_through_map") for m in network.modules())
            if self.structure_checks:
                fractions = saturation(network, images)
                if fractions:
                    self._clamp[0] += fractions["texture"] * batch_size
                    self._clamp[1] += fractions["color"] * batch_size
                    self._clamp[2] += batch_size

            n_runs = sum(len(g) for _, _, _, groups in self._runs(has_clamps) for g in groups)
            run_no = 1
            for role, name, kwargs, groups in self._plan():
                for group in groups:
                    if role == "check_bpda" and not has_clamps:
                        # no output maps to pass straight through: the check is the plain attack itself
                        for e in group:
                            self._record((role, name, e), self._correct[("attack", name, e)][-1], clean_correct, 0.0)
                        continue
                    if rank == 0:
                        self._log_progress(role, name, group, run_no, n_runs, engine)
                    run_no += len(group)
                    start = time.perf_counter()
                    if role in _CASCADE_ROLES:
                        key = (role, name, group[0])
                        correct = self._cascade(network, key, kwargs, images, labels, clean_correct, seed, num_classes)
                        sync()
                        self._record(key, correct, clean_correct, time.perf_counter() - start)
                        continue
                    with straight_through_maps(network) if role == "check_bpda" else nullcontext():
                        if len(group) > 1:
                            attack = build_eps_grouped_attack(name, network, group, batch_size, num_classes, **kwargs)
                            reps = (len(group),) + (1,) * (images.ndim - 1)
                            adv = run_attack(attack, images.repeat(*reps), labels.repeat(len(group)), seed)
                        else:
                            attack = build_attack(name, network, group[0], num_classes, **kwargs)
                            adv = run_attack(attack, images, labels, seed)
                    with torch.no_grad():
                        pred = network(adv).argmax(dim=1)
                    sync()
                    seconds = (time.perf_counter() - start) / len(group)
                    for g, e in enumerate(group):
                        correct = pred[g * batch_size : (g + 1) * batch_size] == labels
                        self._record((role, name, e), correct, clean_correct, seconds)
                if self._pbar is not None:
                    self._pbar.update(1)
        # the worst case over attacks, per eps: a per-image AND
        for key in self._keys():
            if key[1] == WORST:
                members = self._worst_members(key[0], key[2])
                worst = worst_case_correct([self._correct[m][-1] for m in members])
                self._record(key, worst, clean_correct, 0.0)  # seconds: the members' sum, set at the end
        if self._batch_index == 1 and rank == 0:
            self._log_time_estimate(engine, time.perf_counter() - batch_start, batch_size)
        length = engine.state.epoch_length
        if length is not None and self._batch_index == int(length):
            self._finish(engine)  # before EPOCH_COMPLETED: every epoch-end handler sees the metrics

    def _cascade(
        self,
        network: torch.nn.Module,
        key: tuple[str, str, float],
        kwargs: Mapping[str, Any],
        images: torch.Tensor,
        labels: torch.Tensor,
        clean_correct: torch.Tensor,
        seed: int,
        num_classes: int,
    ) -> torch.Tensor:
        """
        Run an ensemble (or convergence-check) member on the images of the batch that are still correct under
        every result it follows (:meth:`_cascade_before`); the others count as broken already. Returns the
        per-image correctness after it and everything before it.
        """
        alive = clean_correct.clone()
        for k in self._cascade_before(key):
            alive &= self._correct[k][-1].to(alive.device)
        correct = torch.zeros_like(alive)
        index = alive.nonzero().squeeze(1)
        if index.numel():
            attack = build_attack(key[1], network, key[2], num_classes, **kwargs)
            adv = run_attack(attack, images[index], labels[index], seed)
            with torch.no_grad():
                correct[index] = network(adv).argmax(dim=1) == labels[index]
        return correct

    def _record(self, key: tuple[str, str, float], correct: torch.Tensor, clean_correct: torch.Tensor, seconds: float):
        correct, clean_correct = correct.cpu(), clean_correct.cpu()
        counts = self._counts[key]
        counts[0] += int(correct.sum())
        counts[1] += int((clean_correct & ~correct).sum())
        self._seconds[key] += seconds
        self._correct[key].append(correct)

    # ------------------------------------------------------------------ epoch end
    def _epoch_completed(self, engine: Engine) -> None:
        if not self._finished:
            self._finish(engine)

    def _gather_per_image(self) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """(names, labels (N,), correct (N, K)) over all ranks, rank 0's samples first."""
        keys = list(self._correct)
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)
        correct = (
            torch.stack([torch.cat(self._correct[k]) for k in keys], dim=1).long()
            if self._labels
            else torch.zeros(0, len(keys), dtype=torch.long)
        )
        local = torch.cat([labels.view(-1, 1).long(), correct], dim=1)
        if idist.get_world_size() == 1:
            return list(self._names), labels, correct
        n_max = int(idist.all_reduce(torch.tensor([local.shape[0]], dtype=torch.float64), op="MAX").item())
        padded = torch.full((n_max, local.shape[1]), -1, dtype=torch.long)
        padded[: local.shape[0]] = local
        gathered = idist.all_gather(padded.to(idist.device()))
        names = idist.all_gather("\n".join(self._names))
        names = [names] if isinstance(names, str) else list(names)
        rows, all_names = [], []
        for r in range(idist.get_world_size()):
            block = gathered[r * n_max : (r + 1) * n_max].cpu()
            block = block[block[:, 0] >= 0]
            rows.append(block)
            all_names += names[r].split("\n") if block.shape[0] else []
        merged = torch.cat(rows)
        return all_names, merged[:, 0], merged[:, 1:]

    def _finish(self, engine: Engine) -> None:
        self._finished = True
        if idist.get_rank() == 0:
            took = time.perf_counter() - self._epoch_start
            batches = _plural(self._batch_index, "batch", "batches")
            self.logger.info(f"robustness evaluation: {batches} took {format_duration(took)}")
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        keys = self._keys()
        counts = [self._n, self._clean_correct] + [c for k in keys for c in self._counts[k]]
        counts = idist.all_reduce(torch.tensor(counts, dtype=torch.float64)).tolist()
        seconds = [self._clean_seconds] + [self._seconds[k] for k in keys]
        seconds = idist.all_reduce(torch.tensor(seconds, dtype=torch.float64), op="MAX").tolist()
        clamp = idist.all_reduce(torch.tensor(self._clamp, dtype=torch.float64)).tolist()
        predicted = self._predicted if self._predicted is not None else torch.zeros(self._num_classes or 1)
        predicted = idist.all_reduce(predicted.double()).tolist()
        #: how many test images the model assigns to each class (clean), and whether it predicts only one
        self.predicted_classes = {i: int(c) for i, c in enumerate(predicted)}
        self.single_class = sum(c > 0 for c in predicted) < 2 and sum(predicted) > 0
        names, labels, correct = self._gather_per_image()
        n, clean_correct = int(counts[0]), int(counts[1])
        variant = self.variant or getattr(self._network(engine), "variant", None) or "unknown"
        epoch = int(engine.state.epoch)

        def ratio(a: int, b: int) -> float:
            return a / b if b > 0 else float("nan")

        all_rows = [
            dict(
                attack="clean",
                eps=0.0,
                eps_255=0.0,
                role="clean",
                n=n,
                n_clean_correct=clean_correct,
                n_correct=clean_correct,
                accuracy=ratio(clean_correct, n),
                n_success=0,
                success_rate=ratio(0, clean_correct),
                seconds=seconds[0],
                variant=variant,
                seed=self.seed,
                epoch=epoch,
            )
        ]
        for i, (role, name, e) in enumerate(keys):
            n_correct, n_success = int(counts[2 + 2 * i]), int(counts[3 + 2 * i])
            all_rows.append(
                dict(
                    attack=name,
                    eps=e,
                    eps_255=round(e * 255, 4),
                    role=role,
                    n=n,
                    n_clean_correct=clean_correct,
                    n_correct=n_correct,
                    accuracy=ratio(n_correct, n),
                    n_success=n_success,
                    success_rate=ratio(n_success, clean_correct),
                    seconds=seconds[1 + i],
                    variant=variant,
                    seed=self.seed,
                    epoch=epoch,
                )
            )
        seconds_of = {(r["role"], r["attack"], r["eps"]): r["seconds"] for r in all_rows}
        for r in all_rows:
            if r["attack"] == WORST:
                r["seconds"] = sum(seconds_of[m] for m in self._worst_members(r["role"], r["eps"]))
        # the summary rows hold the worst case only when asked for (the per-image file always does)
        rows = [r for r in all_rows if r["role"] != WORST or self.worst_case]
        self.rows = rows
        self.structure = (
            {"texture": clamp[0] / clamp[2], "color": clamp[1] / clamp[2]} if self.structure_checks and clamp[2] else {}
        )
        self.report, masking = self._honesty_report(rows)

        p = self.metric_prefix
        metrics = engine.state.metrics
        metrics[f"{p}clean_acc"] = rows[0]["accuracy"]
        for r in rows[1:]:
            tag = eps_tag(r["eps"])
            if r["role"] == "attack":
                metrics[f"{p}{r['attack']}_eps{tag}_acc"] = r["accuracy"]
                metrics[f"{p}{r['attack']}_eps{tag}_asr"] = r["success_rate"]
            elif r["role"] == "check":
                metrics[f"{p}check_PGD_eps{tag}_acc"] = r["accuracy"]
            elif r["role"] in ("check_bpda", *_CASCADE_ROLES):
                metrics[f"{p}{r['role']}_{r['attack']}_eps{tag}_acc"] = r["accuracy"]
            else:  # worst, check_apgd_strong, check_worst
                metrics[f"{p}{r['role']}_eps{tag}_acc"] = r["accuracy"]
        metrics[f"{p}gradient_masking"] = 1.0 if masking else 0.0
        for k, v in self.structure.items():
            metrics[f"{p}saturation_{k}"] = v
        for line in self.report:
            warn = "possible gradient masking" in line or line.startswith(("NOT CONVERGED", "QUICK", "SINGLE CLASS"))
            (self.logger.warning if warn else self.logger.info)(line)
        if self.output_dir is not None and idist.get_rank() == self.save_rank:
            self._write(rows)
            results = [(k[1], round(k[2] * 255, 4), k[0], correct[:, j]) for j, k in enumerate(self._correct)]
            write_per_image(per_image_path(self.output_dir, self.file_prefix), names, labels, results)

    def _honesty_report(self, rows: list[dict[str, Any]]) -> tuple[list[str], bool]:
        report: list[str] = []
        masking = False
        n = rows[0]["n"]
        report.append(f"clean accuracy {rows[0]['accuracy']:.4f} on n={n} ({rows[0]['variant']}, seed {self.seed})")
        if getattr(self, "single_class", False):
            only = next(k for k, c in self.predicted_classes.items() if c > 0)
            report.append(
                f"SINGLE CLASS: the model predicts class {only} for all {n} test images; its accuracy, clean and under "
                f"every attack, equals the class share ({rows[0]['accuracy']:.4f}): not robustness. The model has "
                "collapsed; retrain it (see the run summary's 'warnings' and docs/networks.md)."
            )
        check = [r for r in rows if r["role"] == "check"]
        if check:
            r = check[0]
            if not r["accuracy"] <= self.masking_tolerance:
                masking = True
                report.append(
                    f"possible gradient masking: PGD at eps={eps_tag(r['eps'])}/255 leaves accuracy "
                    f"{r['accuracy']:.4f} > {self.masking_tolerance}; a working white-box attack at this "
                    "budget should drive it near 0."
                )
            else:
                report.append(
                    f"check passed: PGD at eps={eps_tag(r['eps'])}/255 drives accuracy to {r['accuracy']:.4f}."
                )
        else:
            report.append("PGD large-eps check not run (check_eps=None).")
        grid = [r for r in rows if r["role"] == "attack"]
        square = {r["eps"]: r for r in grid if r["attack"] == "Square"}
        white = [r for r in grid if r["attack"] != "Square"]
        if not square:
            if "Square" not in self.ensemble:
                report.append(self._square_hint())
        elif not {r["eps"] for r in white} & set(square):
            report.append(
                "Square (black-box) ran at eps "
                + ", ".join(f"{eps_tag(e)}/255" for e in sorted(square))
                + " but no white-box attack did, so the black-box vs white-box comparison is unavailable; give "
                "Square an eps of the white-box grid with attack_eps."
            )
        for e in sorted({r["eps"] for r in grid}):
            at_e = [r for r in white if r["eps"] == e]
            line = f"eps {eps_tag(e)}/255: " + ", ".join(f"{r['attack']} {r['accuracy']:.4f}" for r in at_e)
            if e in square:
                line += f" | Square (black-box) {square[e]['accuracy']:.4f}"
            report.append(line)
            if e in square and at_e:
                best = min(at_e, key=lambda r: r["accuracy"])
                if square[e]["accuracy"] < best["accuracy"] - self.square_margin:
                    masking = True
                    report.append(
                        f"possible gradient masking: black-box Square (accuracy {square[e]['accuracy']:.4f}) is "
                        f"stronger than the best white-box attack {best['attack']} ({best['accuracy']:.4f}) "
                        f"at eps={eps_tag(e)}/255."
                    )
        masking = self._ensemble_report(rows, report) or masking
        worst = {r["eps"]: r for r in rows if r["role"] == WORST}
        checked = {r["eps"]: r for r in rows if r["role"] == "check_worst"}
        for e in sorted(set(worst) | set(checked)):
            parts = [f"worst case over the attacks {worst[e]['accuracy']:.4f}"] if e in worst else []
            if e in checked:
                parts.append(f"with the structure-aware checks {checked[e]['accuracy']:.4f}")
            report.append(f"eps {eps_tag(e)}/255: " + ", ".join(parts))
        if self.structure:
            report.append(
                f"saturation: T saturates {100 * self.structure['texture']:.2f}% and C {100 * self.structure['color']:.2f}% "
                "of their output values (beyond the range an untrained module gives [0, 1] inputs; clean images)."
            )
        return report, masking

    def headline(self) -> dict[str, Any]:
        """What the headline worst case is made of: budget, members with their settings, eps, cascade rule."""
        if not self.ensemble:
            return {}
        return {
            "budget": self.budget,
            "upper_bound": self.budget == "quick",
            "grid_attacks": {n: dict(kw) for n, kw in self.attacks.items()},
            "ensemble": {n: dict(kw) for n, kw in self.ensemble.items()},
            "ensemble_eps_255": [round(e * 255, 4) for e in self.ensemble_eps],
            "description": self._headline_text(),
            "convergence_check": {n: dict(kw) for n, kw in self.convergence.items()},
            "convergence_tolerance": self.convergence_tolerance if self.convergence else None,
        }

    def _headline_text(self) -> str:
        grid = ", ".join(describe_attack(n, kw) for n, kw in self.attacks.items())
        members = ", ".join(describe_attack(n, kw) for n, kw in self.ensemble.items())
        return (
            f"per image, the worst case over the grid attacks ({grid}) and the {self.budget} ensemble ({members}); "
            "each ensemble member attacks only the images every earlier attack at its eps left correct"
        )

    def _ensemble_report(self, rows: list[dict[str, Any]], report: list[str]) -> bool:
        """The headline lines: budget, cumulative ensemble accuracies, Square's catch, convergence. Masking found?"""
        if not self.ensemble:
            return False
        masking = False
        if self.budget == "quick":
            report.append(
                "QUICK attack budget: the worst-case figures are UPPER BOUNDS (10-step attacks, 1 restart, 100 Square "
                "queries stop short on robust models); the headline robust accuracy needs --attack_budget standard."
            )
        report.append(f"headline robust accuracy: {self._headline_text()}.")
        worst = {r["eps"]: r["accuracy"] for r in rows if r["role"] == WORST}
        for e in self.ensemble_eps:
            steps = [r for r in rows if r["role"] == "ensemble" and r["eps"] == e]
            text = " -> ".join(
                f"{describe_attack(r['attack'], self.ensemble[r['attack']])} {r['accuracy']:.4f}" for r in steps
            )
            report.append(f"eps {eps_tag(e)}/255: ensemble, cumulative: {text}")
            for before, r in zip(steps, steps[1:]):
                drop = before["accuracy"] - r["accuracy"]
                if r["attack"] in _BLACK_BOX and drop > self.square_margin:
                    masking = True
                    report.append(
                        f"possible gradient masking: black-box {r['attack']} fools {drop:.4f} of the images that every "
                        f"white-box attack left correct at eps={eps_tag(e)}/255."
                    )
            checks = [r for r in rows if r["role"] == "check_convergence" and r["eps"] == e]
            if checks and e in worst:
                larger = ", ".join(describe_attack(n, kw) for n, kw in self.convergence.items())
                drop = worst[e] - checks[-1]["accuracy"]
                if drop > self.convergence_tolerance:
                    order = list(ATTACK_BUDGETS)
                    i = order.index(self.budget)
                    advice = (
                        f"--attack_budget {order[i + 1]}"
                        if i + 1 < len(order)
                        else "more steps and restarts (--attacks with APGD / APGDMargin settings of your own)"
                    )
                    report.append(
                        f"NOT CONVERGED at eps={eps_tag(e)}/255: a larger budget ({larger}) lowers the worst case from "
                        f"{worst[e]:.4f} to {checks[-1]['accuracy']:.4f} (by {drop:.4f} > {self.convergence_tolerance}); "
                        f"the {self.budget} figure is an upper bound: use {advice}."
                    )
                else:
                    report.append(
                        f"converged at eps={eps_tag(e)}/255: a larger budget ({larger}) lowers the worst case by "
                        f"{drop:.4f} (tolerance {self.convergence_tolerance})."
                    )
        return masking

    def _square_hint(self) -> str:
        """Why the black-box comparison is missing and the settings that add it."""
        top = f"{eps_tag(max(self.eps))} / 255"
        attacks = {**self.attacks, "Square": {"n_queries": 100}}
        mapping = "{" + ", ".join(f"'{k}': {v!r}" for k, v in attacks.items()) + "}"
        return (
            "Square (black-box) not run, so the black-box vs white-box comparison is unavailable: the attacks "
            f"({', '.join(self.attacks)}) include no black-box attack. To run it, add Square, e.g. attacks={mapping} "
            f"with attack_eps={{'Square': [{top}]}}; in the bundles: evaluate.json --attacks \"{mapping}\" (Square "
            "runs at the largest eps of the grid unless --attack_eps says otherwise). Square costs up to n_queries + 4 "
            "forward passes per image and eps."
        )

    def _write(self, rows: list[dict[str, Any]]) -> None:
        extra: dict[str, Any] = {
            "variant": rows[0]["variant"],
            "seed": self.seed,
            "epoch": rows[0]["epoch"],
            "attacks": self.attacks,
            "report": self.report,
            "single_class": bool(self.single_class),
            "predicted_classes": {str(k): v for k, v in self.predicted_classes.items()},
        }
        if self.ensemble:
            extra["headline"] = self.headline()
        if self.structure_checks:
            extra["structure"] = {
                "saturation": dict(self.structure),
                "apgd_strong": dict(self.structure_check_kwargs),
            }
        write_results(rows, self.output_dir, self.file_prefix, **extra)
