"""The command line of the study: ``python -m monai_assim.study``."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from monai_assim.engines.schedules import LR_SCHEDULES
from monai_assim.study.plan import ARMS, DEFAULT_ARMS

__all__ = ["main"]


def _parse_caps(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def _parse_lr(value: str) -> float | str:
    return "none" if value.lower() == "none" else float(value)


def _parse_arm_epochs(value: str) -> dict[str, int]:
    """``--arm_epochs``: a JSON object arm -> positive integer epochs, checked here so that a bad value is an
    argparse error naming the option, not a traceback from the planning."""
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from e
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object arm -> epochs, got {value!r}")
    unknown = sorted(set(parsed) - set(ARMS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown arms {unknown}; choose among {', '.join(ARMS)}")
    bad = {k: v for k, v in parsed.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise argparse.ArgumentTypeError(f"epochs must be positive integers, got {json.dumps(bad)}")
    return parsed


def _parse_convergence(value: str) -> bool | dict:
    """``--convergence_check``: ``default`` (the next budget's members), ``none``, or a JSON object
    attack -> torchattacks kwargs (its own gradient members)."""
    if value.strip().lower() in ("default", "true"):
        return True
    if value.strip().lower() in ("none", "false"):
        return False
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not default, none or JSON: {e}") from e
    if not isinstance(parsed, dict) or not parsed:
        raise argparse.ArgumentTypeError(f"expected a JSON object attack -> kwargs, got {value!r}")
    try:  # the members' settings (the study checks them against its --attack_budget too)
        from monai_assim.robustness.plan import build_plan

        build_plan(["FGSM"], attack_budget="quick", convergence_check=parsed)
    except (ValueError, TypeError) as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m monai_assim.study", description=_description())
    p.add_argument("--bundle", default="chest_xray", help="bundle name under bundles/ (default chest_xray)")
    p.add_argument("--bundle_root", default=None, help="the bundle folder (default: the repository's bundles/<bundle>)")
    p.add_argument("--output_dir", default="study", help="study output folder")
    p.add_argument("--dataset_dir", default=None, help="the real data set; omitted: the synthetic demo set")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--pretrained", default=None, help="imagenet | none | path to a torchvision state dict")
    p.add_argument("--mean", type=float, default=None, help="input normalisation mean (default: the weights')")
    p.add_argument("--std", type=float, default=None, help="input normalisation std (default: the weights')")
    p.add_argument("--image_size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument(
        "--assimilation_lr",
        type=_parse_lr,
        default=None,
        help="learning rate of T and C (default: the bundle's, 1e-2); 'none': the same as --learning_rate",
    )
    p.add_argument(
        "--assimilation_init",
        choices=("identity", "random"),
        default=None,
        help="start of T and C (default: the bundle's, identity)",
    )
    p.add_argument("--alpha", type=float, default=None, help="alpha of the assimilated arms (default: the bundle's)")
    p.add_argument("--train_per_class", type=_parse_caps, default=None)
    p.add_argument("--val_per_class", type=_parse_caps, default=None)
    p.add_argument("--test_per_class", type=_parse_caps, default=None)
    p.add_argument("--attacks", default=None, help="JSON mapping name -> torchattacks kwargs (default: the paper's 4)")
    p.add_argument(
        "--attack_budget",
        default="standard",
        choices=["none", "quick", "standard", "thorough"],
        help="the strong ensemble of the headline worst case (default standard; quick gives upper bounds)",
    )
    p.add_argument(
        "--convergence_check",
        type=_parse_convergence,
        default=True,
        help="the convergence check: default (the next budget's gradient members on what the ensemble left), "
        'none, or a JSON object of its own members, e.g. \'{"APGD": {"loss": "ce", "steps": 200}}\'',
    )
    p.add_argument("--eps_255", default=None, help="comma-separated eps in units of 1/255 (default 1,...,8)")
    p.add_argument(
        "--attack_eps_255",
        default=None,
        help="JSON mapping attack -> its own eps grid in units of 1/255, e.g. '{\"Square\": [4, 8]}'",
    )
    p.add_argument(
        "--check_eps_255", type=float, default=64.0, help="eps (x/255) of the PGD sanity check; 0 disables it"
    )
    p.add_argument("--seed", type=int, default=0, help="the seed of a one-seed study (layout runs/<arm>)")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="several seeds (split, initialisation, data order): runs/seed<k>/<arm>, aggregate and paired tables",
    )
    p.add_argument(
        "--arms", nargs="+", default=None, choices=list(ARMS), help=f"arms to run (default {' '.join(DEFAULT_ARMS)})"
    )
    p.add_argument("--jobs", type=int, default=1, help="(seed, arm) jobs at once, each a single-thread subprocess")
    p.add_argument(
        "--at_eps", type=float, default=None, help="adversarial-training eps, forwarded to the adversarial arms"
    )
    p.add_argument("--at_steps", type=int, default=None, help="adversarial-training steps, forwarded likewise")
    p.add_argument("--trades_beta", type=float, default=None, help="TRADES beta, forwarded likewise")
    p.add_argument(
        "--at_eps_warmup_epochs",
        type=float,
        default=None,
        help="epochs of the linear adversarial-training eps warm-up (0: none), forwarded likewise",
    )
    p.add_argument(
        "--co_probe_every",
        type=int,
        default=None,
        help="iterations between two catastrophic-overfitting probes (0: per epoch only), forwarded likewise",
    )
    p.add_argument(
        "--lr_schedule",
        type=str.lower,
        choices=LR_SCHEDULES,
        default=None,
        help="learning-rate schedule of every arm (default: the bundle's, none)",
    )
    p.add_argument(
        "--arm_epochs",
        type=_parse_arm_epochs,
        default=None,
        help="JSON mapping arm -> epochs, replacing --epochs for those arms, e.g. '{\"vanilla_n_fgsm\": 11}' "
        "(a one-step arm at PGD-AT's training wall-clock)",
    )
    p.add_argument(
        "--clean_selection",
        action="store_true",
        help="also evaluate each adversarial arm's clean-selected checkpoint (best_clean.pt of the same training) "
        "as the row <arm>_cleansel, paired with the robust-selected row",
    )
    p.add_argument(
        "--worst_case", action="store_true", help="add the per-image worst case over attacks, per eps, to the tables"
    )
    p.add_argument(
        "--structure_checks",
        nargs="+",
        default=[],
        metavar="ARM",
        help="arms whose evaluation also runs the structure-aware checks (BPDA clamps, larger APGD-CE)",
    )
    p.add_argument(
        "--structure_check_seeds", type=int, nargs="+", default=None, help="seeds of those checks (default: every seed)"
    )
    p.add_argument(
        "--structure_check_kwargs",
        default=None,
        help='JSON torchattacks APGD kwargs of the larger-budget check, e.g. \'{"loss": "ce", "steps": 50, "n_restarts": 3}\'',
    )
    p.add_argument("--movement_images", type=int, default=16, help="test images for the assimilation movement numbers")
    p.add_argument("--no_ablation", action="store_true", help="skip the alpha = 1 run")
    p.add_argument("--n_examples", type=int, default=6)
    p.add_argument("--prune", action="store_true", help="delete checkpoints and generated demo data afterwards")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)
    p.add_argument("--job_threads", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if isinstance(a.convergence_check, dict) and a.attack_budget == "none":
        p.error("--convergence_check with members of its own checks an attack budget; --attack_budget is none.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if a.job:
        from monai_assim.study.run import _job_main

        return _job_main(a.job, a.job_threads)
    from monai_assim import study

    doc = study.run_study(
        bundle=a.bundle,
        output_dir=a.output_dir,
        bundle_root=a.bundle_root,
        dataset_dir=a.dataset_dir,
        backbone=a.backbone,
        pretrained=a.pretrained,
        mean=a.mean,
        std=a.std,
        image_size=a.image_size,
        epochs=a.epochs,
        batch_size=a.batch_size,
        learning_rate=a.learning_rate,
        alpha=a.alpha,
        train_per_class=a.train_per_class,
        val_per_class=a.val_per_class,
        test_per_class=a.test_per_class,
        attacks=json.loads(a.attacks) if a.attacks else None,
        eps=[float(k) / 255 for k in a.eps_255.split(",")] if a.eps_255 else None,
        attack_eps={k: [float(e) / 255 for e in v] for k, v in json.loads(a.attack_eps_255).items()}
        if a.attack_eps_255
        else None,
        check_eps=a.check_eps_255 / 255 if a.check_eps_255 > 0 else None,
        seed=a.seed,
        ablation=not a.no_ablation,
        n_examples=a.n_examples,
        prune=a.prune,
        device=a.device,
        seeds=a.seeds,
        arms=a.arms,
        jobs=a.jobs,
        assimilation_lr=a.assimilation_lr,
        assimilation_init=a.assimilation_init,
        at_eps=a.at_eps,
        at_steps=a.at_steps,
        trades_beta=a.trades_beta,
        at_eps_warmup_epochs=a.at_eps_warmup_epochs,
        lr_schedule=a.lr_schedule,
        co_probe_every=a.co_probe_every,
        movement_images=a.movement_images,
        worst_case=a.worst_case,
        attack_budget=a.attack_budget,
        convergence_check=a.convergence_check,
        arm_epochs=a.arm_epochs,
        clean_selection=a.clean_selection,
        structure_checks=a.structure_checks,
        structure_check_seeds=a.structure_check_seeds,
        structure_check_kwargs=json.loads(a.structure_check_kwargs) if a.structure_check_kwargs else None,
    )
    table = Path(a.output_dir) / ("aggregate.md" if a.seeds is not None else "comparison.md")
    print(table)
    print(table.read_text())
    for name, lines in doc["reports"].items():
        print(f"[{name}] " + "\n[{name}] ".join(lines).replace("{name}", name))
    return 0


def _description() -> str:
    from monai_assim import study

    return (study.__doc__ or "").strip().split("\n\n")[0]
