"""
torchattacks attacks by name, with step sizes that scale with eps and a documented seeding rule.

Every attack works on the WHOLE model in [0, 1] pixel space: the model (for instance
:class:`monai_assim.networks.AssimilationNet`) holds its own input normalisation, so no
``set_normalization_used`` is involved and the perturbation budget ``eps`` is measured in pixel
intensity (``eps = k / 255`` means k grey levels of an 8-bit image).

Step-size rule (BIM, MIFGSM, PGD): unless ``alpha`` is given explicitly,

.. math::
    \\alpha = r \\cdot \\epsilon / T,

with ``T = steps`` (default 10) and ``r = alpha_ratio`` (default 2.5, Madry et al. 2018), so the
iterates can reach the boundary of the eps-ball from anywhere inside it and the step size scales with
eps across a sweep. PGD uses a uniform random start in the eps-ball (``random_start=True``).

Seeding rule: :func:`run_attack` seeds torch's global generator with ``seed`` right before calling
the attack, and sets ``attack.seed = seed`` on attacks that reseed themselves (APGD, APGDT, Square),
all inside :func:`torch.random.fork_rng`, so the caller's random state is left as it was. Calling
``torch.manual_seed(seed); attack(images, labels)`` on an attack built with ``seed=seed`` therefore
gives the same adversarial images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torchattacks

from monai_assim.errors import UserInputError

__all__ = [
    "ATTACK_BUDGETS",
    "APGDMargin",
    "BLACK_BOX_ATTACKS",
    "attack_budget",
    "convergence_members",
    "describe_attack",
    "ENSEMBLES",
    "SUPPORTED_ATTACKS",
    "PAPER_ATTACKS",
    "DLR_ATTACKS",
    "EPS_GROUPABLE_ATTACKS",
    "DEFAULT_EPS",
    "attack_defaults",
    "build_attack",
    "canonical_attack_name",
    "check_eps",
    "check_num_classes",
    "build_eps_grouped_attack",
    "is_black_box",
    "is_eps_groupable",
    "margin_loss",
    "min_classes",
    "parse_attacks",
    "run_attack",
    "step_size",
]


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""
    The margin loss an attacker maximises, per sample:
    :math:`\ell(z, y) = \max_{j \ne y} z_j - z_y` (positive iff the sample is misclassified).

    For 2 classes it is the logit of the other class minus that of the true one. Unlike CE, whose
    gradient is scaled by :math:`1 - p_y` and vanishes in float32 once the model is very confident, the
    margin's gradient never saturates.

    Shapes:
        logits ``(B, K)``, labels ``(B,)`` class indices -> ``(B,)``.
    """
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.masked_fill(torch.nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return others.max(dim=1).values - true


class APGDMargin(torchattacks.APGD):
    """
    torchattacks' APGD (Croce & Hein 2020: step-size free, momentum, checkpoints, restarts) maximising
    :func:`margin_loss` instead of CE or DLR; it works from 2 classes, where DLR is undefined.

    Implemented by subclassing: APGD's ``loss="dlr"`` branch calls ``self.dlr_loss(logits, labels)``,
    which this class replaces with the margin loss, so every other part of APGD (step-size rule, seeding
    with ``seed``, restarts) is torchattacks' own. Keyword arguments as ``torchattacks.APGD`` except
    ``loss``.
    """

    def __init__(self, model: torch.nn.Module, **kwargs: Any) -> None:
        if kwargs.pop("loss", "margin") != "margin":
            raise ValueError("APGDMargin always uses the margin loss; use APGD for loss='ce' or 'dlr'.")
        super().__init__(model, loss="dlr", **kwargs)

    def dlr_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: D102 (the margin, see class)
        return margin_loss(x, y)


SUPPORTED_ATTACKS: dict[str, type] = {
    "FGSM": torchattacks.FGSM,
    "BIM": torchattacks.BIM,
    "MIFGSM": torchattacks.MIFGSM,
    "PGD": torchattacks.PGD,
    "APGD": torchattacks.APGD,
    "APGDT": torchattacks.APGDT,
    "APGDMargin": APGDMargin,
    "Square": torchattacks.Square,
}
"""Supported attack names (matched case-insensitively) and their torchattacks classes."""

BLACK_BOX_ATTACKS: tuple[str, ...] = ("Square",)
"""Attacks that use only the model's outputs: no gradient, so the straight-through (BPDA) rerun does not
apply to them, and they check the white-box ones for gradient masking."""

ENSEMBLES: dict[str, dict[str, dict[str, Any]]] = {
    "autoattack-binary": {
        "APGD": {"loss": "ce", "steps": 20},
        "APGDMargin": {"steps": 20},
        "Square": {"loss": "margin", "n_queries": 1000},
    },
}
"""Named attack ensembles that :func:`parse_attacks` expands. ``"autoattack-binary"``: AutoAttack's
idea (Croce & Hein 2020) for 2-class models, where the DLR losses do not apply: APGD on CE, APGD on the
margin loss (:class:`APGDMargin`) and black-box Square on the margin loss; read it with the per-eps
worst case over its members."""

ATTACK_BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "APGD": {"loss": "ce", "steps": 10},
        "APGDMargin": {"steps": 10},
        "Square": {"loss": "margin", "n_queries": 100},
    },
    "standard": {
        "APGD": {"loss": "ce", "steps": 100, "n_restarts": 2},
        "APGDMargin": {"steps": 100, "n_restarts": 2},
        "Square": {"loss": "margin", "n_queries": 1000},
    },
    "thorough": {
        "APGD": {"loss": "ce", "steps": 200, "n_restarts": 5},
        "APGDMargin": {"steps": 200, "n_restarts": 5},
        "Square": {"loss": "margin", "n_queries": 5000},
    },
}
"""The strong ensembles whose per-image worst case is the headline robust accuracy, by budget (in the
order of :func:`convergence_members`): AutoAttack's idea for 2-class models (Croce & Hein, ICML 2020),
where the DLR losses do not apply: APGD on CE, APGD on the margin loss (:class:`APGDMargin`) and black-box
Square. ``quick`` is torchattacks' default strength (10 steps, 1 restart): its figures are upper bounds.
The figures behind ``standard`` are in docs/performance.md."""


def attack_budget(budget: str) -> dict[str, dict[str, Any]]:
    """The members (name -> kwargs) of budget ``budget`` of :data:`ATTACK_BUDGETS` (case-insensitive)."""
    key = str(budget).strip().lower()
    if key not in ATTACK_BUDGETS:
        raise UserInputError(
            f"unknown attack budget {budget!r}.",
            f"choose one of {', '.join(ATTACK_BUDGETS)} (standard: the strong default; quick: upper bounds only).",
        )
    return {name: dict(kwargs) for name, kwargs in ATTACK_BUDGETS[key].items()}


def convergence_members(budget: str) -> dict[str, dict[str, Any]]:
    """
    The gradient members of the next larger budget than ``budget``, which the convergence check runs on
    the images the ensemble left correct; above ``thorough``: its members with twice the steps and restarts.
    """
    order = list(ATTACK_BUDGETS)
    key = str(budget).strip().lower()
    attack_budget(key)  # validates
    if order.index(key) + 1 < len(order):
        members = attack_budget(order[order.index(key) + 1])
    else:
        members = {
            name: {**kw, "steps": 2 * kw["steps"], "n_restarts": 2 * kw.get("n_restarts", 1)}
            for name, kw in attack_budget(key).items()
            if "steps" in kw
        }
    return {name: kw for name, kw in members.items() if not is_black_box(name)}


def describe_attack(name: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """
    A short readable name with the budget an attack runs with: ``"APGD-CE 100 steps x 2 restarts"``,
    ``"APGD-margin 100 steps"``, ``"Square 1000 queries"``, ``"PGD 10 steps"``, ``"FGSM"``.
    """
    name = canonical_attack_name(name)
    kwargs = dict(kwargs or {})
    label = {"APGD": f"APGD-{str(kwargs.get('loss', 'ce')).upper()}", "APGDMargin": "APGD-margin"}.get(name, name)
    if name == "Square":
        return f"{label} {kwargs.get('n_queries', 5000)} queries"
    if name == "FGSM":
        return label
    steps = kwargs.get("steps", 10)
    restarts = int(kwargs.get("n_restarts", 1))
    return f"{label} {steps} steps" + (f" x {restarts} restarts" if restarts > 1 else "")


PAPER_ATTACKS: tuple[str, ...] = ("FGSM", "BIM", "MIFGSM", "PGD")
"""The four white-box attacks of Chen & Luo (PAKDD 2024)."""

DLR_ATTACKS: tuple[str, ...] = ("APGDT",)
"""Attacks that always use the (targeted) DLR loss; APGD uses it when ``loss="dlr"``."""

EPS_GROUPABLE_ATTACKS: tuple[str, ...] = ("FGSM", "BIM", "MIFGSM")
"""Attacks whose torchattacks code accepts a per-sample eps tensor of shape (N, 1, 1, 1) unchanged.
PGD only without random start: its random start calls ``Tensor.uniform_(-eps, eps)``, which takes
Python floats; APGD and Square index sample subsets and therefore need a scalar eps."""

DEFAULT_EPS: tuple[float, ...] = tuple(k / 255 for k in range(1, 9))
"""The paper's eps grid, 1/255 ... 8/255."""

_STEPPED = ("BIM", "MIFGSM", "PGD")
_DEFAULT_STEPS = 10
_DEFAULT_ALPHA_RATIO = 2.5


def is_black_box(name: str) -> bool:
    """Whether attack ``name`` is one of :data:`BLACK_BOX_ATTACKS` (case-insensitive)."""
    return canonical_attack_name(name) in BLACK_BOX_ATTACKS


def canonical_attack_name(name: str) -> str:
    """
    Return the canonical spelling of a supported attack name (case-insensitive match).

    Raises:
        TypeError: when ``name`` is not a string.
        ValueError: when ``name`` is not supported; the message lists the supported names.
    """
    if not isinstance(name, str):
        raise TypeError(f"attack name must be a str, got {type(name).__name__}.")
    lookup = {k.lower(): k for k in SUPPORTED_ATTACKS}
    key = name.strip().lower()
    if key not in lookup:
        raise UserInputError(f"unknown attack {name!r}.", f"supported attacks: {', '.join(SUPPORTED_ATTACKS)}.")
    return lookup[key]


def check_eps(eps: Any) -> float:
    """
    Validate one perturbation budget: a finite number in [0, 1] (pixel intensity units).

    Raises:
        TypeError: when ``eps`` is not a real number.
        ValueError: when ``eps`` is outside [0, 1] or not finite.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        if isinstance(eps, torch.Tensor) and eps.numel() == 1:
            eps = float(eps)
        else:
            raise TypeError(f"eps must be a real number in [0, 1], got {type(eps).__name__}.")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0.0 or eps > 1.0:
        raise UserInputError(
            f"eps must lie in [0, 1] (images are on [0, 1]), got {eps!r}.", "give eps in pixel units, e.g. 4 / 255."
        )
    return eps


def step_size(eps: float, steps: int = _DEFAULT_STEPS, alpha_ratio: float = _DEFAULT_ALPHA_RATIO) -> float:
    """
    The eps-scaled step size :math:`\\alpha = r \\cdot \\epsilon / T` of the iterative attacks.

    Args:
        eps: perturbation budget in [0, 1].
        steps: number of iterations T (>= 1).
        alpha_ratio: r, default 2.5.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    return alpha_ratio * eps / steps


def min_classes(name: str, kwargs: Mapping[str, Any] | None = None) -> int:
    """
    The fewest classes attack ``name`` with ``kwargs`` works on.

    The DLR loss divides by the gap between the largest and the third-largest logit, so APGD with
    ``loss="dlr"`` needs >= 3 classes; torchattacks' targeted DLR (APGDT) also uses the fourth-largest
    logit and needs >= 4. Every other attack works from 2 classes.
    """
    name = canonical_attack_name(name)
    kwargs = kwargs or {}
    if name == "APGDT":
        return 4
    if name == "APGD" and str(kwargs.get("loss", "ce")).lower() == "dlr":
        return 3
    return 2


def check_num_classes(name: str, kwargs: Mapping[str, Any] | None, num_classes: int) -> None:
    """
    Raise a ``ValueError`` when attack ``name`` with ``kwargs`` cannot work on ``num_classes`` classes
    (DLR-based attacks on a 2-class model; see :func:`min_classes`).
    """
    needed = min_classes(name, kwargs)
    if num_classes < needed:
        which = {3: "third", 4: "fourth"}[needed]
        raise ValueError(
            f"{canonical_attack_name(name)} uses the DLR loss, which needs >= {needed} classes (its denominator "
            f"uses the {which}-largest logit), but the model has {num_classes}; use APGD with loss='ce' or "
            "another CE-based attack (FGSM, BIM, MIFGSM, PGD, Square)."
        )


def attack_defaults(name: str, eps: float, **kwargs: Any) -> dict[str, Any]:
    """
    The keyword arguments :func:`build_attack` passes to the torchattacks class of ``name``.

    BIM, MIFGSM and PGD get ``steps=10`` and ``alpha = alpha_ratio * eps / steps`` unless ``alpha``
    is given; PGD gets ``random_start=True``. Other keyword arguments pass through unchanged.
    """
    name = canonical_attack_name(name)
    kwargs = dict(kwargs)
    alpha_ratio = kwargs.pop("alpha_ratio", _DEFAULT_ALPHA_RATIO)
    if name in _STEPPED:
        kwargs.setdefault("steps", _DEFAULT_STEPS)
        if "alpha" not in kwargs:
            kwargs["alpha"] = step_size(eps, int(kwargs["steps"]), float(alpha_ratio))
    elif "alpha" in kwargs or "alpha_ratio" in kwargs:
        raise ValueError(f"{name} takes no step size (alpha); it is only used by {', '.join(_STEPPED)}.")
    if name == "PGD":
        kwargs.setdefault("random_start", True)
    return {"eps": eps, **kwargs}


def build_attack(
    name: str, model: torch.nn.Module, eps: float, num_classes: int | None = None, **kwargs: Any
) -> torchattacks.attack.Attack:
    """
    Build the torchattacks attack ``name`` on ``model`` at budget ``eps``.

    Args:
        name: one of :data:`SUPPORTED_ATTACKS` (case-insensitive).
        model: the whole classifier, (B, C, H, W) on [0, 1] -> logits (B, num_classes).
        eps: L-inf budget in [0, 1].
        num_classes: number of classes; defaults to ``model.num_classes`` where that exists. Needed to
            refuse DLR-based attacks on 2-class models and to configure APGDT.
        kwargs: passed to the torchattacks class after :func:`attack_defaults` (e.g. ``steps``,
            ``alpha``, ``alpha_ratio``, ``n_queries``, ``loss``, ``seed``).

    Raises:
        ValueError: unknown attack (lists the supported ones), eps outside [0, 1], or a DLR-based
            attack asked of a model with fewer than 3 classes.
    """
    name = canonical_attack_name(name)
    eps = check_eps(eps)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if num_classes is None:
        num_classes = getattr(model, "num_classes", None)
    if num_classes is not None:
        check_num_classes(name, kwargs, int(num_classes))
    if name == "APGDT" and num_classes is not None:
        kwargs.setdefault("n_classes", int(num_classes))
    if name == "Square" and str(kwargs.get("loss", "margin")) not in ("margin", "ce"):
        raise ValueError(f"Square takes loss='margin' or 'ce', got {kwargs['loss']!r}.")
    return SUPPORTED_ATTACKS[name](model, **attack_defaults(name, eps, **kwargs))


def is_eps_groupable(name: str, kwargs: Mapping[str, Any] | None = None) -> bool:
    """Whether torchattacks' ``name`` (with ``kwargs``) accepts a per-sample eps tensor unchanged."""
    name = canonical_attack_name(name)
    kwargs = kwargs or {}
    return name in EPS_GROUPABLE_ATTACKS or (name == "PGD" and not kwargs.get("random_start", True))


def build_eps_grouped_attack(
    name: str,
    model: torch.nn.Module,
    eps_values: Sequence[float],
    batch_size: int,
    num_classes: int | None = None,
    **kwargs: Any,
) -> torchattacks.attack.Attack:
    """
    One torchattacks attack that crafts a batch repeated once per eps value in a single pass.

    The input is ``images.repeat(G, 1, 1, 1)`` for ``G = len(eps_values)``; sample ``g * B + i`` gets
    budget ``eps_values[g]`` (and, by the step-size rule, ``alpha = alpha_ratio * eps_values[g] / steps``)
    through per-sample tensors of shape (G * B, 1, 1, 1) that torchattacks' own code broadcasts. Since
    the L-inf attacks use the sign of the gradient of a batch-mean loss and the model is in eval mode,
    every sample is crafted as it would be alone, up to floating-point rounding.

    Raises:
        ValueError: when the attack cannot take a per-sample eps (see :data:`EPS_GROUPABLE_ATTACKS`).
    """
    name = canonical_attack_name(name)
    if not is_eps_groupable(name, kwargs):
        raise ValueError(
            f"{name} cannot craft several eps values in one pass with torchattacks "
            f"(groupable: {', '.join(EPS_GROUPABLE_ATTACKS)}, and PGD with random_start=False)."
        )
    eps_values = [check_eps(e) for e in eps_values]
    if not eps_values or batch_size < 1:
        raise ValueError("eps_values must be non-empty and batch_size >= 1.")
    attack = build_attack(name, model, max(eps_values), num_classes, **kwargs)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    column = torch.tensor(eps_values, device=device).repeat_interleave(int(batch_size)).view(-1, 1, 1, 1)
    attack.eps = column
    if name in _STEPPED and "alpha" not in kwargs:
        attack.alpha = step_size(column, int(attack.steps), float(kwargs.get("alpha_ratio", _DEFAULT_ALPHA_RATIO)))
    return attack


def run_attack(
    attack: torchattacks.attack.Attack, images: torch.Tensor, labels: torch.Tensor, seed: int
) -> torch.Tensor:
    """
    Run ``attack`` with the seeding rule of this module, leaving the caller's RNG state unchanged.

    Inside :func:`torch.random.fork_rng`: ``attack.seed = seed`` where the attack has a ``seed``
    attribute, ``torch.manual_seed(seed)``, then ``attack(images, labels)`` with gradients enabled.

    Args:
        attack: a torchattacks attack.
        images: (B, C, H, W) on [0, 1].
        labels: (B,) class indices.
        seed: the seed.

    Returns:
        adversarial images, (B, C, H, W) on [0, 1], detached.
    """
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        if hasattr(attack, "seed"):
            attack.seed = int(seed)
        torch.manual_seed(int(seed))
        return attack(images, labels).detach()


def parse_attacks(attacks: str | Sequence | Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """
    Normalise an attack configuration to ``{canonical name: kwargs}``.

    Accepts a name, a sequence of names or ``(name, kwargs)`` pairs, or a mapping name -> kwargs. The
    name of an ensemble of :data:`ENSEMBLES` (e.g. ``"autoattack-binary"``), alone or in a sequence,
    stands for its members with their settings.

    Raises:
        ValueError: unknown or repeated attack names.
        TypeError: malformed entries.
    """
    if isinstance(attacks, str):
        attacks = [attacks]
    if isinstance(attacks, Sequence) and not isinstance(attacks, str):
        expanded: list = []
        for a in attacks:
            if isinstance(a, str) and a.strip().lower() in ENSEMBLES:
                expanded += [(n, kw) for n, kw in ENSEMBLES[a.strip().lower()].items()]
            else:
                expanded.append(a)
        attacks = expanded
    items: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(attacks, Mapping):
        items = [(k, v or {}) for k, v in attacks.items()]
    elif isinstance(attacks, Sequence):
        for a in attacks:
            if isinstance(a, str):
                items.append((a, {}))
            elif isinstance(a, Sequence) and len(a) == 2 and isinstance(a[1], Mapping):
                items.append((a[0], a[1]))
            else:
                raise TypeError(f"each attack must be a name or a (name, kwargs) pair, got {a!r}.")
    else:
        raise TypeError(f"attacks must be a name, a sequence or a mapping, got {type(attacks).__name__}.")
    if not items:
        raise ValueError("at least one attack is needed.")
    out: dict[str, dict[str, Any]] = {}
    for n, kw in items:
        if not isinstance(kw, Mapping):
            raise TypeError(f"kwargs of attack {n!r} must be a mapping, got {type(kw).__name__}.")
        c = canonical_attack_name(n)
        if c in out:
            raise ValueError(f"attack {c!r} is listed twice.")
        if "eps" in kw:
            raise ValueError(f"give eps through the eps grid, not in the kwargs of {c!r}.")
        out[c] = dict(kw)
    return out
