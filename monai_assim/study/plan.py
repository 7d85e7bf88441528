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

__all__ = [
    "ARMS",
    "CLEAN_SELECTION",
    "DEFAULT_ARMS",
    "STUDY_ATTACKS",
    "StudyOptions",
    "StudyPlan",
    "paired_comparisons",
    "plan_study",
]

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


#: what a study measures of T and C besides :data:`~monai_assim.metrics.assimilation.MOVEMENT_KEYS`: the
#: fraction of output values their output maps saturate (:func:`monai_assim.networks.saturation`)
SATURATION_KEYS = ("saturation_texture", "saturation_color")


#: an evaluation folder copied from another (the same network under two names) holds this note
COPIED_FILE = "copied.json"


JOB_LOG = "study_job.log"


#: ``clean_selection``: the row of an adversarial arm that evaluates its clean-selected checkpoint is named
#: ``<arm>`` + this suffix; it reads ``checkpoints/best_clean.pt`` of the same training and writes
#: ``eval_best_clean/`` (the arm's own row evaluates ``best.pt``, chosen by robust validation accuracy)
CLEAN_SELECTION = "_cleansel"
CLEAN_CHECKPOINT = "best_clean"


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

    ``arm_epochs`` (arm -> epochs) replaces ``epochs`` for the arms it names, e.g. to give a one-step arm
    (``vanilla_n_fgsm``) the training wall-clock of PGD-AT. ``clean_selection`` adds, for every arm with
    adversarial training, the row ``<arm>_cleansel`` (:data:`CLEAN_SELECTION`): the same training's
    clean-selected checkpoint ``best_clean.pt``, evaluated with the same attacks into ``eval_best_clean/``
    (no second training), and paired with the robust-selected row in the paired tables.
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
    at_eps_warmup_epochs: float | int | None = None
    lr_schedule: str | None = None
    co_probe_every: int | None = None
    movement_images: int = 16
    worst_case: bool = False
    structure_checks: Sequence[str] = ()
    structure_check_seeds: Sequence[int] | None = None
    structure_check_kwargs: Mapping[str, Any] | None = None
    attack_budget: str | None = "standard"
    #: the budget's convergence check (True), none (False) or its own gradient members (name -> kwargs)
    convergence_check: bool | Mapping[str, Mapping[str, Any]] = True
    arm_epochs: Mapping[str, int] | None = None
    clean_selection: bool = False


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
    #: the evaluated rows of the tables, in order: row -> (the arm whose training it reads, the checkpoint);
    #: the arms themselves (``best``), each followed by its clean-selection row where there is one
    evaluations: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    #: arm -> the epochs it trains (``arm_epochs``, else ``epochs``; ``None``: the bundle's), which
    #: :func:`paired_comparisons` needs to tell the same training
    epochs: dict[str, int | None] = dataclasses.field(default_factory=dict)

    @property
    def rows(self) -> list[str]:
        """The rows of the tables: every arm and, with ``clean_selection``, the clean-selection rows."""
        return list(self.evaluations) if self.evaluations else list(self.names)

    def arm_of(self, row: str) -> str:
        """The arm whose training run a row evaluates."""
        return self.evaluations.get(row, (row, "best"))[0]

    def checkpoint_of(self, row: str) -> str:
        """The checkpoint a row evaluates (``best`` or ``best_clean``)."""
        return self.evaluations.get(row, (row, "best"))[1]

    def run_dir(self, seed: int, name: str) -> Path:
        return self.out / "runs" / (f"seed{seed}/{name}" if self.multi else name)

    def eval_dir(self, seed: int, row: str) -> Path:
        """Where a row's evaluation is: ``<run>/eval`` for ``best.pt``, ``<run>/eval_<checkpoint>`` otherwise."""
        checkpoint = self.checkpoint_of(row)
        return self.run_dir(seed, self.arm_of(row)) / ("eval" if checkpoint == "best" else f"eval_{checkpoint}")

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
    arm_epochs = {str(k): v for k, v in (o.arm_epochs or {}).items()}
    if set(arm_epochs) - set(names):
        raise ValueError(
            f"arm_epochs names arms the study does not run: {sorted(set(arm_epochs) - set(names))}; "
            f"its arms are {', '.join(names)}."
        )
    for arm, epochs in arm_epochs.items():
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"arm_epochs[{arm!r}] must be a positive integer, got {epochs!r}.")
    adversarial_arms = [n for n in names if "adversarial_training" in ARMS[n]]
    if o.clean_selection and not adversarial_arms:
        raise ValueError(
            "clean_selection evaluates the clean-selected checkpoint of the adversarial arms, and the study runs "
            f"none ({', '.join(names)}); add one, e.g. vanilla_pgdat."
        )
    if isinstance(o.convergence_check, Mapping):  # a check the evaluations would refuse fails now, not after training
        from monai_assim.robustness.plan import build_plan

        build_plan(["FGSM"], attack_budget=o.attack_budget, convergence_check=o.convergence_check)
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
        "lr_schedule": o.lr_schedule,
        "dataset_dir": o.dataset_dir if o.dataset_dir is not None else "demo",
        "max_per_class": caps if any(v is not None for v in caps.values()) else None,
    }
    if o.device is not None:
        common["device"] = f"$torch.device('{o.device}')"
    train_common = {k: v for k, v in common.items() if v is not None or k in ("mean", "std")}
    adversarial = {
        k: v
        for k, v in (
            ("at_eps", o.at_eps),
            ("at_steps", o.at_steps),
            ("trades_beta", o.trades_beta),
            ("at_eps_warmup_epochs", o.at_eps_warmup_epochs),
            ("co_probe_every", o.co_probe_every),
        )
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
        "convergence_check": o.convergence_check
        if isinstance(o.convergence_check, Mapping)
        else bool(o.convergence_check),
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
    plan.epochs = {n: arm_epochs.get(n, o.epochs) for n in names}
    for name in names:
        plan.evaluations[name] = (name, "best")
        if o.clean_selection and name in adversarial_arms:
            plan.evaluations[name + CLEAN_SELECTION] = (name, CLEAN_CHECKPOINT)
    for s in seed_list:
        for name in names:
            arm = dict(ARMS[name])
            if "alpha" not in arm and o.alpha is not None:
                arm["alpha"] = float(o.alpha)
            if "adversarial_training" in arm:
                arm.update(adversarial)
            if name in arm_epochs:
                arm["epochs"] = arm_epochs[name]
            run_dir = plan.run_dir(s, name)
            spec: dict[str, Any] = {
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
            if o.clean_selection and name in adversarial_arms:
                row = name + CLEAN_SELECTION
                eval_dir = plan.eval_dir(s, row)
                # the same evaluation as the arm's own row, of the other checkpoint, into its own folder
                spec["evaluations"] = [
                    {
                        "row": row,
                        "checkpoint": CLEAN_CHECKPOINT,
                        "eval_dir": str(eval_dir),
                        "eval_override": dict(
                            spec["eval_override"], checkpoint=CLEAN_CHECKPOINT, eval_dir=str(eval_dir)
                        ),
                    }
                ]
            plan.specs.append(spec)
    return plan


def _same_training(arm: str) -> dict[str, Any]:
    """What an arm's training is, apart from the network (variant and alpha)."""
    return {k: v for k, v in ARMS[arm].items() if k not in ("variant", "alpha")}


def paired_comparisons(rows: Sequence[str], epochs: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """
    The ``(reference, row)`` pairs of the paired tables among the study's ``rows`` (arms and
    clean-selection rows), in this order, each once:

    - every arm against ``vanilla`` (plain transfer learning);
    - every assimilated arm against the vanilla arm with the same training (``assimilated_pgdat`` against
      ``vanilla_pgdat``; for the plain arms that is the first kind), robust-selected rows with each other
      and clean-selected rows with each other; the same training includes the epochs (``epochs``, arm ->
      epochs, :attr:`StudyPlan.epochs`), so two arms that ``arm_epochs`` trains for different epochs are
      not paired;
    - the robust-selected row of an adversarial arm against its clean-selected row of the same training
      (``vanilla_pgdat`` against ``vanilla_pgdat_cleansel``: a positive net gain is the robust rule's gain).
    """
    present, epochs = set(rows), dict(epochs or {})
    arms = [r for r in rows if r in ARMS]
    pairs: list[tuple[str, str]] = []
    if "vanilla" in present:
        pairs += [("vanilla", a) for a in arms if a != "vanilla"]
    for a in arms:
        if ARMS[a]["variant"] != "assimilated":
            continue
        for v in arms:
            same = _same_training(v) == _same_training(a) and epochs.get(v) == epochs.get(a)
            if ARMS[v]["variant"] == "vanilla" and same:
                pairs.append((v, a))
                if v + CLEAN_SELECTION in present and a + CLEAN_SELECTION in present:
                    pairs.append((v + CLEAN_SELECTION, a + CLEAN_SELECTION))
    pairs += [(a + CLEAN_SELECTION, a) for a in arms if a + CLEAN_SELECTION in present]
    return list(dict.fromkeys(pairs))
