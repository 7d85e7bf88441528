"""
The honesty checks of an adversarial evaluation, read from its summary rows (docs/adversarial.md,
"Honesty checks"): a single predicted class, the large-eps PGD check, black-box beside white-box, the
ensemble's black-box catch and the convergence check. Each returns report lines and whether it found
possible gradient masking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai_assim.robustness.attacks import (
    ATTACK_BUDGETS,
    BLACK_BOX_ATTACKS,
    convergence_members,
    describe_attack,
    is_black_box,
)
from monai_assim.robustness.plan import EvaluationPlan
from monai_assim.robustness.results import WORST, eps_tag

__all__ = [
    "black_box_check",
    "ensemble_checks",
    "is_warning",
    "large_eps_check",
    "single_class_lines",
]

Rows = Sequence[Mapping[str, Any]]


def is_warning(line: str) -> bool:
    """Whether a report line is logged as a warning: a failed check, an upper bound, a collapsed model."""
    return "possible gradient masking" in line or line.startswith(("NOT CONVERGED", "QUICK", "SINGLE CLASS"))


def single_class_lines(predicted_classes: Mapping[int, int], clean: Mapping[str, Any]) -> list[str]:
    """The SINGLE CLASS line when the model predicts one class for every image (a collapsed model)."""
    if sum(c > 0 for c in predicted_classes.values()) >= 2 or not sum(predicted_classes.values()):
        return []
    only = next(k for k, c in predicted_classes.items() if c > 0)
    return [
        f"SINGLE CLASS: the model predicts class {only} for all {clean['n']} test images; its accuracy, clean and "
        f"under every attack, equals the class share ({clean['accuracy']:.4f}): not robustness. The model has "
        "collapsed; retrain it (see the run summary's 'warnings' and docs/networks.md)."
    ]


def large_eps_check(rows: Rows, plan: EvaluationPlan) -> tuple[list[str], bool]:
    """PGD at ``check_eps`` must drive accuracy to at most ``masking_tolerance``."""
    check = [r for r in rows if r["role"] == "check"]
    if not check:
        return ["PGD large-eps check not run (check_eps=None)."], False
    r = check[0]
    if r["accuracy"] <= plan.masking_tolerance:
        return [f"check passed: PGD at eps={eps_tag(r['eps'])}/255 drives accuracy to {r['accuracy']:.4f}."], False
    return [
        f"possible gradient masking: PGD at eps={eps_tag(r['eps'])}/255 leaves accuracy {r['accuracy']:.4f} > "
        f"{plan.masking_tolerance}; a working white-box attack at this budget should drive it near 0."
    ], True


def black_box_check(rows: Rows, plan: EvaluationPlan) -> tuple[list[str], bool]:
    """Per eps of the grid: each white-box accuracy, then the black-box one, which must not be much lower."""
    grid = [r for r in rows if r["role"] == "attack"]
    black = {r["eps"]: r for r in grid if is_black_box(r["attack"])}
    white = [r for r in grid if not is_black_box(r["attack"])]
    lines, masking = [], False
    if not black:
        if not any(is_black_box(name) for name in plan.ensemble):
            lines.append(black_box_hint(plan))
    elif not {r["eps"] for r in white} & set(black):
        name = next(iter(black.values()))["attack"]
        lines.append(
            f"{name} (black-box) ran at eps "
            + ", ".join(f"{eps_tag(e)}/255" for e in sorted(black))
            + " but no white-box attack did, so the black-box vs white-box comparison is unavailable; give "
            f"{name} an eps of the white-box grid with attack_eps."
        )
    for e in sorted({r["eps"] for r in grid}):
        at_e = [r for r in white if r["eps"] == e]
        line = f"eps {eps_tag(e)}/255: " + ", ".join(f"{r['attack']} {r['accuracy']:.4f}" for r in at_e)
        if e in black:
            line += f" | {black[e]['attack']} (black-box) {black[e]['accuracy']:.4f}"
        lines.append(line)
        if e in black and at_e:
            best = min(at_e, key=lambda r: r["accuracy"])
            if black[e]["accuracy"] < best["accuracy"] - plan.square_margin:
                masking = True
                lines.append(
                    f"possible gradient masking: black-box {black[e]['attack']} (accuracy {black[e]['accuracy']:.4f}) "
                    f"is stronger than the best white-box attack {best['attack']} ({best['accuracy']:.4f}) "
                    f"at eps={eps_tag(e)}/255."
                )
    return lines, masking


def black_box_hint(plan: EvaluationPlan) -> str:
    """Why the black-box comparison is missing and the settings that add it."""
    name = BLACK_BOX_ATTACKS[0]
    top = f"{eps_tag(max(plan.eps))} / 255"
    attacks = {**plan.attacks, name: {"n_queries": 100}}
    mapping = "{" + ", ".join(f"'{k}': {v!r}" for k, v in attacks.items()) + "}"
    return (
        f"{name} (black-box) not run, so the black-box vs white-box comparison is unavailable: the attacks "
        f"({', '.join(plan.attacks)}) include no black-box attack. To run it, add {name}, e.g. attacks={mapping} "
        f"with attack_eps={{'{name}': [{top}]}}; in the bundles: evaluate.json --attacks \"{mapping}\" ({name} "
        "runs at the largest eps of the grid unless --attack_eps says otherwise). Square costs up to n_queries + 4 "
        "forward passes per image and eps."
    )


def ensemble_checks(rows: Rows, plan: EvaluationPlan) -> tuple[list[str], bool]:
    """The headline lines: budget, cumulative ensemble accuracies, the black-box catch, convergence."""
    if not plan.ensemble:
        return [], False
    lines, masking = [], False
    if plan.budget == "quick":
        lines.append(
            "QUICK attack budget: the worst-case figures are UPPER BOUNDS (10-step attacks, 1 restart, 100 Square "
            "queries stop short on robust models); the headline robust accuracy needs --attack_budget standard."
        )
    lines.append(f"headline robust accuracy: {plan.headline_text()}.")
    worst = {r["eps"]: r["accuracy"] for r in rows if r["role"] == WORST}
    for e in plan.ensemble_eps:
        steps = [r for r in rows if r["role"] == "ensemble" and r["eps"] == e]
        text = " -> ".join(
            f"{describe_attack(r['attack'], plan.ensemble[r['attack']])} {r['accuracy']:.4f}" for r in steps
        )
        lines.append(f"eps {eps_tag(e)}/255: ensemble, cumulative: {text}")
        for before, r in zip(steps, steps[1:]):
            drop = before["accuracy"] - r["accuracy"]
            if is_black_box(r["attack"]) and drop > plan.square_margin:
                masking = True
                lines.append(
                    f"possible gradient masking: black-box {r['attack']} fools {drop:.4f} of the images that every "
                    f"white-box attack left correct at eps={eps_tag(e)}/255."
                )
        checks = [r for r in rows if r["role"] == "check_convergence" and r["eps"] == e]
        if checks and e in worst:
            lines.append(convergence_line(plan, e, worst[e], checks[-1]["accuracy"]))
    return lines, masking


def convergence_line(plan: EvaluationPlan, e: float, worst: float, checked: float) -> str:
    """Whether the convergence check's members (the next budget's, or the plan's own) lower the worst case at
    ``e`` by more than the tolerance."""
    larger = ", ".join(describe_attack(n, kw) for n, kw in plan.convergence.items())
    own = plan.convergence != convergence_members(plan.budget)
    larger = f"the convergence check's own members ({larger}) lower" if own else f"a larger budget ({larger}) lowers"
    drop = worst - checked
    if drop <= plan.convergence_tolerance:
        return (
            f"converged at eps={eps_tag(e)}/255: {larger} the worst case by "
            f"{drop:.4f} (tolerance {plan.convergence_tolerance})."
        )
    order = list(ATTACK_BUDGETS)
    i = order.index(plan.budget)
    advice = (
        f"--attack_budget {order[i + 1]}"
        if i + 1 < len(order)
        else "more steps and restarts (--attacks with APGD / APGDMargin settings of your own)"
    )
    return (
        f"NOT CONVERGED at eps={eps_tag(e)}/255: {larger} the worst case from "
        f"{worst:.4f} to {checked:.4f} (by {drop:.4f} > {plan.convergence_tolerance}); "
        f"the {plan.budget} figure is an upper bound: use {advice}."
    )
