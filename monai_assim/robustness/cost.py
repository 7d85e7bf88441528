"""
The cost of an adversarial evaluation, counted in passes through the network before it runs.

Every (attack, eps) of a plan costs, per image:

- **gradient passes** (one forward + one backward w.r.t. the input): FGSM 1; BIM, MIFGSM, PGD ``steps``;
  APGD (and :class:`~monai_assim.robustness.attacks.APGDMargin`) ``n_restarts * (steps + 1) * eot_iter``; APGDT the
  same times its ``n_target_classes``; Square none;
- **forward-only passes**: APGD 1 (the clean prediction torchattacks starts from), APGDT
  ``1 + n_target_classes * n_restarts`` (also one to choose each run's target); Square
  ``1 + n_restarts * (n_queries + 2)`` (the clean prediction, then per restart the initial square, one
  forward per query and one check of the result); plus, for every attack, 1 forward of the adversarial
  batch to score it.

The numbers of steps, restarts and queries are read from the torchattacks objects that
:func:`monai_assim.robustness.attacks.build_attack` builds with the plan's keyword arguments, so a default of
torchattacks (APGD's 10 steps, Square's 5000 queries, BIM's ``steps=0`` rule) is counted as it runs.
APGD and Square only keep attacking the images they have not fooled yet, so their counts are upper
bounds, reached on a model they never fool; the other attacks' counts are exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from monai_assim.robustness.attacks import build_attack, canonical_attack_name
from monai_assim.robustness.plan import EvaluationPlan

__all__ = ["AttackCost", "EvaluationCost", "attack_passes", "estimate_cost", "format_duration"]

_APGD_LIKE = ("APGD", "APGDMargin", "APGDT")


@dataclass(frozen=True)
class AttackCost:
    """
    Passes per image of one entry of a plan: ``attack`` in ``role`` at each of ``eps``.

    ``grads`` and ``forwards`` are per image and per eps (``forwards`` includes the scoring forward);
    ``exact`` is False where they are upper bounds (APGD, Square); ``detail`` names the parameters used.
    """

    role: str
    attack: str
    eps: tuple[float, ...]
    grads: int
    forwards: int
    exact: bool
    detail: str

    @property
    def runs(self) -> int:
        """How many (attack, eps) results this entry gives per batch."""
        return len(self.eps)


@dataclass
class EvaluationCost:
    """
    The cost of a plan on ``n_images`` images (None: unknown): the entries, then per image and in total.
    The clean forward (one per image) is counted in :attr:`forwards_per_image`.
    """

    entries: list[AttackCost] = field(default_factory=list)
    n_images: int | None = None

    @property
    def runs(self) -> int:
        """(attack, eps) results per batch."""
        return sum(e.runs for e in self.entries)

    @property
    def grads_per_image(self) -> int:
        return sum(e.grads * e.runs for e in self.entries)

    @property
    def forwards_per_image(self) -> int:
        return 1 + sum(e.forwards * e.runs for e in self.entries)

    @property
    def exact(self) -> bool:
        return all(e.exact for e in self.entries)

    @property
    def total_grads(self) -> int | None:
        return None if self.n_images is None else self.grads_per_image * self.n_images

    @property
    def total_forwards(self) -> int | None:
        return None if self.n_images is None else self.forwards_per_image * self.n_images

    def lines(self) -> list[str]:
        """A readable account: one summary line, then one line per entry."""
        # Square's bound is on forward passes only; APGD's on both
        g_bound = "" if all(e.exact or e.grads == 0 for e in self.entries) else "up to "
        f_bound = "" if self.exact else "up to "
        head = (
            f"cost of the robustness evaluation: {self.runs} (attack, eps) runs; per image {g_bound}"
            f"{self.grads_per_image:,} forward+backward and {f_bound}{self.forwards_per_image:,} forward passes"
        )
        if self.n_images is not None:
            head += (
                f"; on {self.n_images:,} images {g_bound}{self.total_grads:,} forward+backward and {f_bound}"
                f"{self.total_forwards:,} forward passes"
            )
        head += " (forward passes: the clean one, and per (attack, eps) 1 to score the adversarial batch plus the attack's own)"
        if not self.exact:
            head += "; APGD and Square stop early on the images they fool, so these are upper bounds"
        out = [head]
        for e in self.entries:
            role = "" if e.role == "attack" else f"{e.role} "
            eps = ", ".join(f"{x * 255:g}" for x in e.eps)
            kind = "" if e.exact else "up to "
            grads = f"{kind}{e.grads} forward+backward and " if e.grads else "no gradient, "
            out.append(
                f"  {role}{e.attack} at eps {eps}/255 ({e.detail}): per image and eps {grads}{kind}{e.forwards} forward passes"
            )
        return out


def attack_passes(
    name: str, kwargs: Mapping[str, Any] | None = None, eps: float = 8 / 255, num_classes: int | None = 2
) -> tuple[int, int, bool, str]:
    """
    Passes per image of one attack at one eps, from the torchattacks object it builds to.

    Args:
        name: a supported attack name (:data:`monai_assim.robustness.attacks.SUPPORTED_ATTACKS`).
        kwargs: its keyword arguments, as given to :func:`monai_assim.robustness.attacks.build_attack`.
        eps: the budget (BIM with ``steps=0`` takes its steps from eps).
        num_classes: classes of the model (APGDT attacks ``num_classes - 1`` target classes).

    Returns:
        ``(gradient passes, forward-only passes, exact, detail)`` per image, without the scoring forward.
    """
    name = canonical_attack_name(name)
    # a stand-in model: torchattacks only reads its device; nothing runs
    attack = build_attack(name, torch.nn.Linear(1, 1), eps, num_classes, **dict(kwargs or {}))
    if name == "FGSM":
        return 1, 0, True, "1 step"
    if name in ("BIM", "MIFGSM", "PGD"):
        return int(attack.steps), 0, True, f"steps={attack.steps}"
    if name in _APGD_LIKE:
        targets = int(getattr(attack, "n_target_classes", 1)) if name == "APGDT" else 1
        per_run = int(attack.n_restarts) * (int(attack.steps) + 1) * int(attack.eot_iter)
        detail = f"steps={attack.steps}, n_restarts={attack.n_restarts}"
        if int(attack.eot_iter) != 1:
            detail += f", eot_iter={attack.eot_iter}"
        if name == "APGDT":
            detail += f", {targets} target classes"
        # APGDT also predicts the clean images once per run to choose the target class
        forwards = 1 + (targets * int(attack.n_restarts) if name == "APGDT" else 0)
        return targets * per_run, forwards, False, detail
    if name == "Square":
        n_queries, restarts = int(attack.n_queries), int(attack.n_restarts)
        detail = f"n_queries={n_queries}" + (f", n_restarts={restarts}" if restarts != 1 else "")
        return 0, 1 + restarts * (n_queries + 2), False, detail
    raise ValueError(f"no cost model for attack {name!r}.")  # pragma: no cover (every supported attack is above)


def estimate_cost(
    plan: EvaluationPlan | Iterable[Sequence[Any]],
    n_images: int | None = None,
    num_classes: int | None = 2,
    has_output_maps: bool = True,
) -> EvaluationCost:
    """
    Count the passes a plan of attacks costs before running it.

    Args:
        plan: an :class:`~monai_assim.robustness.plan.EvaluationPlan` (the runs it crafts, see
            ``has_output_maps``), or entries ``(role, attack, kwargs, eps_values)`` (or ``(attack, kwargs, eps_values)``, role
            ``"attack"``), e.g. FGSM on the eps grid, the large-eps PGD check, the structure checks; an
            entry whose results are reused rather than recomputed does not belong in the plan.
            ``eps_values`` may be a flat sequence of eps or a sequence of eps groups (tuples), as the
            handler crafts them; grouping does not change the passes per image and eps.
        n_images: images evaluated; None gives the per-image counts only.
        num_classes: classes of the model.
        has_output_maps: with a plan: whether the network has T and C output maps (without them the
            straight-through check reuses the plain attacks and costs nothing).

    Returns:
        an :class:`EvaluationCost`; ``.lines()`` formats it.
    """
    if isinstance(plan, EvaluationPlan):
        plan = plan.crafted_runs(has_output_maps)
    entries = []
    for item in plan:
        role, name, kwargs, eps_values = item if len(item) == 4 else ("attack", *item)
        flat: list[float] = []
        for e in eps_values:
            flat += list(e) if isinstance(e, (tuple, list)) else [e]
        if not flat:
            continue
        counts = [attack_passes(name, kwargs, e, num_classes) for e in flat]
        grads, forwards, exact, detail = counts[0]
        if any(c[:2] != (grads, forwards) for c in counts):  # BIM steps=0: steps differ per eps
            for e, (g, f, x, d) in zip(flat, counts):
                entries.append(AttackCost(role, canonical_attack_name(name), (float(e),), g, f + 1, x, d))
            continue
        entries.append(
            AttackCost(
                role, canonical_attack_name(name), tuple(float(e) for e in flat), grads, forwards + 1, exact, detail
            )
        )
    return EvaluationCost(entries, None if n_images is None else int(n_images))


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1 min 15 s"``, ``3725`` -> ``"1 h 2 min"``, ``42.4`` -> ``"42 s"``, ``4.25`` -> ``"4.2 s"``."""
    seconds = max(float(seconds), 0.0)
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
