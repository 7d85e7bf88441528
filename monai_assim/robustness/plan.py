"""
The evaluation plan: which attacks run at which eps and in which role, and what every result is made of
(the worst-case members, the cascade an ensemble member follows), built once from the settings by
:func:`build_plan` and read by the evaluation, the cost model, the metric names and the report.

Roles, in the order the runs of a plan are made on each batch:

- ``attack``: the grid attacks (the accuracy-vs-eps curves), each at its eps grid;
- ``ensemble``: the strong ensemble of an attack budget, AutoAttack's cascade (each member only on the
  images every earlier attack at its eps left correct);
- ``check_convergence``: the next budget's gradient members (or members of one's own), cascaded on what
  the ensemble left;
- ``check``: PGD at a large eps (the gradient-masking check);
- ``check_bpda``, ``check_apgd_strong``: the structure-aware checks;

and the derived results ``worst`` (per image, correct under every ``attack`` and ``ensemble`` run at that
eps) and ``check_worst`` (the same with the structure-aware checks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from monai_assim.robustness.attacks import (
    DEFAULT_EPS,
    PAPER_ATTACKS,
    attack_budget as budget_members,
    build_attack,
    canonical_attack_name,
    check_eps as valid_eps,
    check_num_classes,
    convergence_members,
    describe_attack,
    is_black_box,
    is_eps_groupable,
    parse_attacks,
)
from monai_assim.robustness.results import WORST, eps_tag

__all__ = [
    "CASCADE_ROLES",
    "DEFAULT_ATTACKS",
    "DEFAULT_STRONG_APGD",
    "EvaluationPlan",
    "Key",
    "Run",
    "build_plan",
    "robustness_metric_names",
]

logger = logging.getLogger(__name__)

DEFAULT_ATTACKS: dict[str, dict[str, Any]] = {**{a: {} for a in PAPER_ATTACKS}, "Square": {"n_queries": 1000}}
"""The paper's four white-box attacks plus black-box Square (1000 queries) for the masking check."""

#: APGD-CE settings of the larger-budget check: torchattacks' APGD defaults are 10 steps, 1 restart
DEFAULT_STRONG_APGD: dict[str, Any] = {"loss": "ce", "steps": 50, "n_restarts": 3}

#: roles whose attacks run only on the images every earlier attack at their eps left correct (AutoAttack)
CASCADE_ROLES = ("ensemble", "check_convergence")

#: the roles the headline worst case is taken over; ``check_worst`` adds the structure-aware checks
_WORST_OVER = {WORST: ("attack", "ensemble"), "check_worst": ("attack", "ensemble", "check_bpda", "check_apgd_strong")}

#: the roles a cascade member follows, by its own role
_CASCADE_OVER = {"ensemble": ("attack", "ensemble"), "check_convergence": ("attack", "ensemble", "check_convergence")}

Key = tuple[str, str, float]
"""A result of the plan: ``(role, attack, eps)``."""


class Run(NamedTuple):
    """One attack of the plan in one role, at its eps values, grouped as they are crafted (one pass a group)."""

    role: str
    attack: str
    kwargs: dict[str, Any]
    eps_groups: tuple[tuple[float, ...], ...]

    @property
    def keys(self) -> list[Key]:
        return [(self.role, self.attack, e) for group in self.eps_groups for e in group]


@dataclass(frozen=True)
class EvaluationPlan:
    """
    What an adversarial evaluation runs and reports; build it with :func:`build_plan`, which checks and
    normalises the settings. The fields after ``convergence_tolerance`` are derived from the others once,
    when the plan is made: ``runs`` (in the order they are made on each batch), ``keys`` (every result in
    row order: the grid and the ensemble, the worst case, the checks, the worst case with the structure
    checks), ``worst_members`` (worst-case key -> the results it is the per-image AND of) and
    ``cascade_before`` (cascade key -> the results whose survivors it attacks).
    """

    attacks: dict[str, dict[str, Any]]
    eps: tuple[float, ...] = DEFAULT_EPS
    attack_eps: dict[str, tuple[float, ...]] = field(default_factory=dict)
    check_eps: float | None = 64 / 255
    check_kwargs: dict[str, Any] = field(default_factory=lambda: {"steps": 20})
    group_eps: int = 1
    worst_case: bool = False
    structure_checks: bool = False
    structure_check_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_STRONG_APGD))
    budget: str | None = None
    ensemble: dict[str, dict[str, Any]] = field(default_factory=dict)
    ensemble_eps: tuple[float, ...] = ()
    convergence: dict[str, dict[str, Any]] = field(default_factory=dict)
    masking_tolerance: float = 0.1
    square_margin: float = 0.02
    convergence_tolerance: float = 0.01
    runs: tuple[Run, ...] = field(init=False, repr=False)
    keys: tuple[Key, ...] = field(init=False, repr=False)
    worst_members: dict[Key, tuple[Key, ...]] = field(init=False, repr=False)
    cascade_before: dict[Key, tuple[Key, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        runs = self._make_runs()
        made = [k for run in runs for k in run.keys]
        head = [k for k in made if k[0] in _WORST_OVER[WORST]]  # the grid and the ensemble run first
        worst_eps = list(dict.fromkeys(e for _, _, e in head))
        worst = [(WORST, WORST, e) for e in worst_eps]
        checked = [("check_worst", WORST, e) for e in worst_eps] if self.structure_checks else []
        members = {w: tuple(k for k in made if k[0] in _WORST_OVER[w[0]] and k[2] == w[2]) for w in worst + checked}
        cascade = {}
        for key in (k for k in made if k[0] in CASCADE_ROLES):
            same_eps = [k for k in made if k[0] in _CASCADE_OVER[key[0]] and k[2] == key[2]]
            cascade[key] = tuple(same_eps[: same_eps.index(key)])
        object.__setattr__(self, "runs", tuple(runs))
        object.__setattr__(self, "keys", tuple(head + worst + made[len(head) :] + checked))
        object.__setattr__(self, "worst_members", members)
        object.__setattr__(self, "cascade_before", cascade)

    def _make_runs(self) -> list[Run]:
        runs = []
        for name, kwargs in self.attacks.items():
            size = self.group_eps if is_eps_groupable(name, kwargs) else 1
            grid = self.attack_eps.get(name, self.eps)
            runs.append(
                Run("attack", name, kwargs, tuple(tuple(grid[i : i + size]) for i in range(0, len(grid), size)))
            )
        for role, members in (("ensemble", self.ensemble), ("check_convergence", self.convergence)):
            runs += [Run(role, name, dict(kw), tuple((e,) for e in self.ensemble_eps)) for name, kw in members.items()]
        if self.check_eps is not None:
            # the masking check: the configured PGD settings, always with random start
            kwargs = {**self.attacks.get("PGD", {}), **self.check_kwargs, "random_start": True}
            runs.append(Run("check", "PGD", kwargs, ((self.check_eps,),)))
        if self.structure_checks:
            grid = [r for r in runs if r.role == "attack" and not is_black_box(r.attack)]
            runs += [Run("check_bpda", r.attack, r.kwargs, r.eps_groups) for r in grid]
            runs.append(
                Run("check_apgd_strong", "APGD", dict(self.structure_check_kwargs), tuple((e,) for e in self.eps))
            )
        return runs

    def crafted_runs(self, has_output_maps: bool) -> list[Run]:
        """The runs that craft images: without T and C output maps, BPDA equals the plain attack and is reused."""
        return [r for r in self.runs if r.role != "check_bpda" or has_output_maps]

    @property
    def reported_keys(self) -> list[Key]:
        """The results of the summary rows and metrics: every key, the worst case only when asked for."""
        return [k for k in self.keys if k[0] != WORST or self.worst_case]

    def check_classes(self, num_classes: int) -> None:
        """Refuse attacks of the plan that cannot work on ``num_classes`` classes (DLR-based ones on 2 classes)."""
        for name, kwargs in {**self.attacks, **self.ensemble, **self.convergence}.items():
            check_num_classes(name, kwargs, num_classes)

    def metric_names(self, prefix: str = "adv_") -> list[str]:
        """The metric names of the results, in order; see :func:`robustness_metric_names`."""
        names = [f"{prefix}clean_acc"]
        for key in self.reported_keys:
            names += metric_names_of(key, prefix)
        return names + [f"{prefix}gradient_masking"]

    def headline_text(self) -> str:
        grid = ", ".join(describe_attack(n, kw) for n, kw in self.attacks.items())
        members = ", ".join(describe_attack(n, kw) for n, kw in self.ensemble.items())
        return (
            f"per image, the worst case over the grid attacks ({grid}) and the {self.budget} ensemble ({members}); "
            "each ensemble member attacks only the images every earlier attack at its eps left correct"
        )

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
            "description": self.headline_text(),
            "convergence_check": {n: dict(kw) for n, kw in self.convergence.items()},
            "convergence_tolerance": self.convergence_tolerance if self.convergence else None,
        }


def metric_names_of(key: Key, prefix: str = "adv_") -> list[str]:
    """The metric names of one result: accuracy, and for a grid attack its success rate too."""
    role, attack, e = key
    tag = eps_tag(e)
    if role == "attack":
        return [f"{prefix}{attack}_eps{tag}_acc", f"{prefix}{attack}_eps{tag}_asr"]
    if role in ("check", "check_bpda", *CASCADE_ROLES):
        return [f"{prefix}{role}_{attack}_eps{tag}_acc"]
    return [f"{prefix}{role}_eps{tag}_acc"]  # worst, check_apgd_strong, check_worst


def _grid(values: float | Sequence[float], what: str) -> tuple[float, ...]:
    """A checked eps grid: each in [0, 1], non-empty, no repeats."""
    values = [values] if isinstance(values, (int, float)) else list(values)
    grid = tuple(valid_eps(e) for e in values)
    if not grid or len(set(grid)) != len(grid):
        raise ValueError(f"{what} must be a non-empty grid without repeats, got {values}.")
    return grid


def _attack_grids(attack_eps: Mapping[str, Any] | None, attacks: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    grids = {}
    for name, grid in (attack_eps or {}).items():
        key = canonical_attack_name(name)  # an unknown name (a typo) is an error
        if key not in attacks:
            # a default grid (e.g. the bundles' one eps for Square) stays valid when the attacks drop it
            logger.info(f"attack_eps for {key} ignored: {key} is not among the attacks {list(attacks)}.")
            continue
        grids[key] = _grid(grid, f"attack_eps[{name!r}]")
    return grids


def _no_eps(kwargs: Mapping[str, Any] | None, default: Mapping[str, Any], message: str) -> dict[str, Any]:
    out = dict(default if kwargs is None else kwargs)
    if "eps" in out:
        raise ValueError(message)
    return out


def build_plan(
    attacks: str | Sequence | Mapping[str, Mapping[str, Any]] | None = None,
    eps: float | Sequence[float] = DEFAULT_EPS,
    attack_eps: Mapping[str, Sequence[float]] | None = None,
    check_eps: float | None = 64 / 255,
    check_kwargs: Mapping[str, Any] | None = None,
    group_eps: int = 1,
    worst_case: bool = False,
    structure_checks: bool = False,
    structure_check_kwargs: Mapping[str, Any] | None = None,
    attack_budget: str | None = None,
    ensemble_eps: float | Sequence[float] | None = None,
    convergence_check: bool | Mapping[str, Mapping[str, Any]] = True,
    masking_tolerance: float = 0.1,
    square_margin: float = 0.02,
    convergence_tolerance: float = 0.01,
) -> EvaluationPlan:
    """
    The :class:`EvaluationPlan` of these settings, checked (docs/adversarial.md describes each):

    - ``attacks``: names, ``(name, kwargs)`` pairs, a mapping name -> kwargs or an ensemble name
      (:func:`~monai_assim.robustness.attacks.parse_attacks`); default :data:`DEFAULT_ATTACKS`.
    - ``eps``: the grid, each in [0, 1]; ``attack_eps``: attack -> its own grid (an entry for an attack that
      is not run is ignored, an unknown name is an error); ``group_eps``: eps values crafted in one pass.
    - ``check_eps`` / ``check_kwargs``: the large-eps PGD check (None or 0: off; default 20 steps) and
      ``masking_tolerance``, the accuracy it may leave; ``square_margin``: how much black-box Square may
      beat the white-box attacks.
    - ``worst_case``: report the per-image worst case over the grid (always on with a budget).
    - ``structure_checks`` / ``structure_check_kwargs``: BPDA reruns, the larger APGD (default
      :data:`DEFAULT_STRONG_APGD`), their worst case and the saturation of T and C.
    - ``attack_budget`` (``None``/``"none"``, ``"quick"``, ``"standard"``, ``"thorough"``): the strong
      ensemble at ``ensemble_eps`` (default ``eps``), with the next budget's ``convergence_check`` and
      ``convergence_tolerance``; ``convergence_check`` may instead name its own gradient members
      (name -> kwargs, e.g. ``{"APGD": {"loss": "ce", "steps": 200}}``) for a cheaper or a stronger check.
    """
    parsed = parse_attacks(DEFAULT_ATTACKS if attacks is None else attacks)
    grid = _grid(eps, "eps")
    if int(group_eps) < 1:
        raise ValueError(f"group_eps must be >= 1, got {group_eps}.")
    budget = None if attack_budget is None else str(attack_budget).strip().lower()
    budget = None if budget == "none" else budget
    ensemble = {} if budget is None else budget_members(budget)
    ensemble_grid = grid if ensemble_eps is None else tuple(valid_eps(e) for e in _as_list(ensemble_eps))
    if ensemble:
        ensemble_grid = _grid(ensemble_grid, "ensemble_eps")
    return EvaluationPlan(
        attacks=parsed,
        eps=grid,
        attack_eps=_attack_grids(attack_eps, parsed),
        # check_eps 0 (or None) switches the large-eps check off: PGD at eps 0 would only restate clean accuracy
        check_eps=None if check_eps is None or check_eps == 0 else valid_eps(check_eps),
        check_kwargs=_no_eps(
            check_kwargs, {"steps": 20}, "give the eps of the check through check_eps, not in check_kwargs."
        ),
        group_eps=int(group_eps),
        worst_case=bool(worst_case) or bool(ensemble),
        structure_checks=bool(structure_checks),
        structure_check_kwargs=_no_eps(
            structure_check_kwargs,
            DEFAULT_STRONG_APGD,
            "the larger-budget check runs on the eps grid; do not give eps in structure_check_kwargs.",
        ),
        budget=budget,
        ensemble=ensemble,
        ensemble_eps=tuple(ensemble_grid),
        convergence=_convergence(budget, convergence_check),
        masking_tolerance=float(masking_tolerance),
        square_margin=float(square_margin),
        convergence_tolerance=float(convergence_tolerance),
    )


def _convergence(budget: str | None, check: bool | Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict]:
    """The convergence check's members: the next budget's (``True``), none, or the gradient members given."""
    if not isinstance(check, Mapping):
        return convergence_members(budget) if budget and check else {}
    if not budget:
        raise ValueError("a convergence check with its own members needs an attack_budget to check.")
    if not check:
        raise ValueError("convergence_check names no attack; give False to switch the check off.")
    members = parse_attacks(dict(check))  # refuses eps in the settings too
    for name, kwargs in members.items():
        if is_black_box(name):
            raise ValueError(f"the convergence check runs gradient attacks; {name} is black-box.")
        try:  # settings torchattacks refuses fail here, not after a training
            build_attack(name, torch.nn.Linear(1, 1), 1 / 255, None, **kwargs)
        except TypeError as e:
            raise ValueError(f"convergence_check member {name} {dict(kwargs)}: {e}") from e
    return members


def _as_list(values: float | Sequence[float]) -> list[float]:
    return [values] if isinstance(values, (int, float)) else list(values)


def robustness_metric_names(
    attacks: Sequence[str] | Mapping[str, Any] = tuple(DEFAULT_ATTACKS),
    eps: Sequence[float] = DEFAULT_EPS,
    prefix: str = "adv_",
    check_eps: float | None = 64 / 255,
    worst_case: bool = False,
    structure_checks: bool = False,
    attack_budget: str | None = None,
    ensemble_eps: Sequence[float] | None = None,
    convergence_check: bool | Mapping[str, Mapping[str, Any]] = True,
) -> list[str]:
    """
    The names the evaluation writes to ``engine.state.metrics``
    (:meth:`EvaluationPlan.metric_names` of the plan these settings build), in order::

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

    with ``k = eps * 255`` (:func:`~monai_assim.robustness.results.eps_tag`) and the canonical attack names
    (an ensemble such as ``"autoattack-binary"`` stands for its members).
    """
    plan = build_plan(
        attacks if isinstance(attacks, Mapping) else list(attacks),
        eps,
        check_eps=check_eps,
        worst_case=worst_case,
        structure_checks=structure_checks,
        attack_budget=attack_budget,
        ensemble_eps=ensemble_eps,
        convergence_check=convergence_check,
    )
    return plan.metric_names(prefix)
