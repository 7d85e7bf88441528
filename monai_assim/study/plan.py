"""
What a study runs: the arms, the options (:class:`StudyOptions`) and, from them, one job per (seed, arm)
(:func:`plan_study`) with the bundle overrides of its training and evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_assim.bundle.templates import bundles_dir

__all__ = ["ARMS", "DEFAULT_ARMS", "STUDY_ATTACKS", "StudyOptions", "StudyPlan", "plan_study"]

#: arm name -> bundle overrides of its training run
ARMS: dict[str, dict[str, Any]] = {
    "vanilla": {"variant": "vanilla"},
    "assimilated": {"variant": "assimilated"},
    "alpha1": {"variant": "assimilated", "alpha": 1.0},
    "vanilla_pgdat": {"variant": "vanilla", "adversarial_training": "pgd"},
    "assimilated_pgdat": {"variant": "assimilated", "adversarial_training": "pgd"},
    "vanilla_trades": {"variant": "vanilla", "adversarial_training": "trades"},
    "assimilated_trades": {"variant": "assimilated", "adversarial_training": "trades"},
    "vanilla_fgsm_rs": {"variant": "vanilla", "adversarial_training": "fgsm_rs"},
    "assimilated_fgsm_rs": {"variant": "assimilated", "adversarial_training": "fgsm_rs"},
    "vanilla_n_fgsm": {"variant": "vanilla", "adversarial_training": "n_fgsm"},
    "assimilated_n_fgsm": {"variant": "assimilated", "adversarial_training": "n_fgsm"},
}


#: the arms a study runs unless ``arms`` is given (``alpha1`` dropped by ``ablation=False``)
DEFAULT_ARMS = ("vanilla", "assimilated", "alpha1")


#: the white-box attacks of the paper, drawn as curves; the headline worst case adds the strong ensemble of
#: the study's ``attack_budget`` (APGD-CE, APGD-margin, Square; :data:`monai_assim.robustness.attacks.ATTACK_BUDGETS`)
STUDY_ATTACKS: dict[str, dict[str, Any]] = {"FGSM": {}, "BIM": {}, "MIFGSM": {}, "PGD": {}}


PER_IMAGE_FILE = "robustness_per_image.csv"


MOVEMENT_FILE = "assimilation_movement.json"


JOB_LOG = "study_job.log"


@dataclasses.dataclass
class StudyOptions:
    """
    Everything a study is run with. ``None`` leaves a setting to the bundle (the paper's defaults with a
    real data set, demo-sized ones with the synthetic demo set).

    ``seeds=None`` runs the single seed ``seed`` with the one-seed layout (``runs/<arm>``, ``comparison.*``
    at the root); a list of seeds uses ``runs/seed<k>/<arm>`` and adds the aggregate and paired tables.
    ``jobs > 1`` runs that many (seed, arm) jobs at once, each a single-thread subprocess.
    ``attack_budget`` (default ``"standard"``; ``None`` or ``"none"``: no ensemble) adds the strong
    ensemble whose per-image worst case, with the grid attacks, is the headline (role ``worst``, always in
    the tables then; the tables name its members). ``worst_case`` adds the per-image worst case over
    attacks per eps to the tables without an ensemble. ``structure_checks`` names the arms whose
    evaluation also runs the structure-aware checks (straight-through clamps, APGD-CE with a larger
    budget ``structure_check_kwargs``; see :class:`~monai_assim.handlers.AdversarialRobustnessHandler`),
    for the seeds ``structure_check_seeds`` (default all): they double the cost of an evaluation, so a
    study runs them where a gain is to be checked.
    """

    bundle: str = "chest_xray"
    output_dir: str | Path = "study"
    bundle_root: str | Path | None = None
    dataset_dir: str | None = None
    backbone: str = "resnet18"
    pretrained: str | None = None
    mean: float | Sequence[float] | None = None
    std: float | Sequence[float] | None = None
    image_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    alpha: float | None = None
    train_per_class: int | None = None
    val_per_class: int | None = None
    test_per_class: int | None = None
    attacks: Mapping[str, Mapping[str, Any]] | None = None
    eps: Sequence[float] | None = None
    attack_eps: Mapping[str, Sequence[float]] | None = None
    check_eps: float | None = 64 / 255
    seed: int = 0
    ablation: bool = True
    n_examples: int = 6
    prune: bool = False
    device: str | None = None
    seeds: Sequence[int] | None = None
    arms: Sequence[str] | None = None
    jobs: int = 1
    assimilation_lr: float | None = None
    assimilation_init: str | None = None
    at_eps: float | None = None
    at_steps: int | None = None
    trades_beta: float | None = None
    movement_images: int = 16
    worst_case: bool = False
    structure_checks: Sequence[str] = ()
    structure_check_seeds: Sequence[int] | None = None
    structure_check_kwargs: Mapping[str, Any] | None = None
    attack_budget: str | None = "standard"


@dataclasses.dataclass
class StudyPlan:
    """The jobs of a study and what its report needs to find their results."""

    root: Path  #: the bundle folder
    out: Path  #: the study's output folder (absolute)
    multi: bool  #: the multi-seed layout (``runs/seed<k>/<arm>``)
    seeds: list[int]
    names: list[str]  #: the arms, in order
    attacks: dict[str, Any]
    worst_case: bool  #: the tables hold the per-image worst case (asked for, or an ensemble runs)
    specs: list[dict[str, Any]]  #: one job spec per (seed, arm), the input of :func:`~monai_assim.study.run_job`

    def run_dir(self, seed: int, name: str) -> Path:
        return self.out / "runs" / (f"seed{seed}/{name}" if self.multi else name)

    def label(self, seed: int, name: str) -> str:
        return f"seed{seed}/{name}" if self.multi else name


def bundle_folder(bundle: str, bundle_root: str | Path | None) -> Path:
    """The bundle folder of a study: ``bundle_root``, or the bundle ``bundle`` of :func:`bundles_dir`."""
    root = Path(bundle_root) if bundle_root is not None else bundles_dir() / bundle
    if not (root / "train.json").is_file():
        raise ValueError(f"bundle folder {root} has no train.json; pass --bundle_root <path to bundles/{bundle}>.")
    return root


def plan_study(o: StudyOptions) -> StudyPlan:
    """Check the options and write nothing but the output folder: the jobs, one per (seed, arm)."""
    root = bundle_folder(o.bundle, o.bundle_root)
    out = Path(o.output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    multi = o.seeds is not None
    seed_list = [int(s) for s in (o.seeds if multi else [o.seed])]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds must be distinct and at least one, got {seed_list}.")
    names = list(o.arms) if o.arms is not None else [n for n in DEFAULT_ARMS if o.ablation or n != "alpha1"]
    unknown = [n for n in [*names, *o.structure_checks] if n not in ARMS]
    if unknown or not names:
        raise ValueError(f"unknown arms {unknown}; choose among {', '.join(ARMS)}.")
    caps = {"train": o.train_per_class, "validation": o.val_per_class, "test": o.test_per_class}
    common: dict[str, Any] = {
        "backbone": o.backbone,
        "pretrained": o.pretrained,
        "mean": o.mean,
        "std": o.std,
        "image_size": o.image_size,
        "epochs": o.epochs,
        "batch_size": o.batch_size,
        "learning_rate": o.learning_rate,
        "assimilation_lr": o.assimilation_lr,
        "assimilation_init": o.assimilation_init,
        "dataset_dir": o.dataset_dir if o.dataset_dir is not None else "demo",
        "max_per_class": caps if any(v is not None for v in caps.values()) else None,
    }
    if o.device is not None:
        common["device"] = f"$torch.device('{o.device}')"
    train_common = {k: v for k, v in common.items() if v is not None or k in ("mean", "std")}
    adversarial = {
        k: v
        for k, v in (("at_eps", o.at_eps), ("at_steps", o.at_steps), ("trades_beta", o.trades_beta))
        if v is not None
    }
    attacks = dict(STUDY_ATTACKS if o.attacks is None else o.attacks)
    # MONAI's run() drops None overrides, so "no check" is passed as the expression "$None"
    eval_common: dict[str, Any] = {
        "attacks": attacks,
        "check_eps": o.check_eps if o.check_eps is not None else "$None",
        "backbone": o.backbone,
        "worst_case": bool(o.worst_case),
        "attack_budget": "none" if o.attack_budget is None else str(o.attack_budget),
    }
    worst_case = bool(o.worst_case) or str(o.attack_budget).lower() not in ("none", "")
    checks: dict[str, Any] = {"structure_checks": True}
    if o.structure_check_kwargs:
        checks["structure_check_kwargs"] = dict(o.structure_check_kwargs)
    check_seeds = set(seed_list if o.structure_check_seeds is None else [int(s) for s in o.structure_check_seeds])
    if o.eps is not None:
        eval_common["eps"] = list(o.eps)
    # always given: without it evaluate.json's default would run Square at the largest eps only
    eval_common["attack_eps"] = {k: list(v) for k, v in (o.attack_eps or {}).items()}
    if o.device is not None:
        eval_common["device"] = common["device"]

    plan = StudyPlan(root, out, multi, seed_list, names, attacks, worst_case, [])
    for s in seed_list:
        for name in names:
            arm = dict(ARMS[name])
            if "alpha" not in arm and o.alpha is not None:
                arm["alpha"] = float(o.alpha)
            if "adversarial_training" in arm:
                arm.update(adversarial)
            run_dir = plan.run_dir(s, name)
            plan.specs.append(
                {
                    "seed": s,
                    "arm": name,
                    "bundle_root": str(root),
                    "run_dir": str(run_dir),
                    "movement_images": o.movement_images,
                    "train_override": dict(train_common, **arm, seed=s, output_dir=str(run_dir)),
                    "eval_override": dict(
                        eval_common,
                        variant=arm["variant"],
                        seed=s,
                        output_dir=str(run_dir),
                        **(checks if name in o.structure_checks and s in check_seeds else {}),
                    ),
                }
            )
    return plan
