"""
Cost of one adversarial-training step per mode, in plain training steps, measured side by side in one run.

    python benchmarks/at_overhead.py [--modes pgd fgsm_rs n_fgsm] [--steps 5] [--batch 32] [--size 224]
                                     [--backbone resnet18] [--variant vanilla] [--repeats 5] [--device cpu]

One ``AssimilationTrainer`` iteration of each mode divided by one iteration of the same trainer with
``adversarial_training="none"`` (forward, backward, optimiser step). Each mode's iteration holds its
attack's forward+backward passes w.r.t. the input in eval mode (TRADES also one no-grad clean forward, its
attack's target), and the training forward+backward and optimiser step:

- ``pgd`` with k = ``--steps`` attack steps: k attack passes, so its target is k + 1 plain steps with 15%
  slack (``ratio / (k + 1) <= 1.15``);
- ``fgsm_rs`` and ``n_fgsm``: one attack pass, target <= 2.2 plain steps;
- ``trades`` (k steps; its update forward runs on the clean and adversarial batches together): printed,
  no target.

Every repeat times one plain step and one step of each mode in turn (after one warm-up of each), so the
modes see the same machine load; the medians are compared.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from monai_assim.engines import ONE_STEP_MODES, AssimilationTrainer
from monai_assim.losses import AssimilationLoss
from monai_assim.networks import AssimilationNet

#: plain steps a one-step mode may cost
ONE_STEP_TARGET = 2.2
#: slack of PGD-AT over k + 1 plain steps
PGD_SLACK = 1.15


def _trainer(args: argparse.Namespace, mode: str, device: torch.device) -> AssimilationTrainer:
    torch.manual_seed(0)
    net = AssimilationNet(args.backbone, 2, variant=args.variant).to(device)
    return AssimilationTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=[None],
        network=net,
        loss_function=AssimilationLoss(alpha=0.99),
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-4),
        decollate=False,
        adversarial_training=mode,
        at_eps=2 / 255,
        at_steps=args.steps,
    )


def target(mode: str, steps: int) -> float | None:
    """The most plain steps one step of ``mode`` may cost (``None``: no target)."""
    if mode in ONE_STEP_MODES:
        return ONE_STEP_TARGET
    if mode == "pgd":
        return PGD_SLACK * (steps + 1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["pgd", *ONE_STEP_MODES], help="adversarial-training modes")
    parser.add_argument("--steps", type=int, default=5, help="attack steps k of pgd / trades")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--variant", default="vanilla", choices=("vanilla", "assimilated"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(args.batch, 1, args.size, args.size, generator=gen).to(device),
        "label": torch.randint(0, 2, (args.batch,), generator=gen).to(device),
    }
    trainers = {mode: _trainer(args, mode, device) for mode in ["none", *args.modes]}

    def timed(trainer: AssimilationTrainer) -> float:
        sync()
        start = time.perf_counter()
        trainer._iteration(trainer, batch)
        sync()
        return time.perf_counter() - start

    for trainer in trainers.values():  # warm-up
        timed(trainer)
    times: dict[str, list[float]] = {mode: [] for mode in trainers}
    for _ in range(args.repeats):
        for mode, trainer in trainers.items():
            times[mode].append(timed(trainer))
    medians = {mode: statistics.median(t) for mode, t in times.items()}
    plain = medians["none"]
    print(
        f"{args.backbone} {args.variant}, batch {args.batch} x 1 x {args.size} x {args.size}, {device}, "
        f"{torch.get_num_threads()} threads, k = {args.steps}, {args.repeats} repeats (medians)"
    )
    print(f"{'mode':<10} {'ms':>9} {'plain steps':>12} {'target':>8}")
    print(f"{'none':<10} {plain * 1000:9.1f} {1.0:12.2f} {'':>8}")
    for mode in args.modes:
        ratio = medians[mode] / plain
        most = target(mode, args.steps)
        verdict = "" if most is None else f"<= {most:.2f} {'ok' if ratio <= most else 'MISSED'}"
        print(f"{mode:<10} {medians[mode] * 1000:9.1f} {ratio:12.2f} {verdict:>8}")
        if mode == "pgd":
            print(f"{'':<10} ratio AT / (k+1) plain: {ratio / (args.steps + 1):.3f}   (target <= {PGD_SLACK})")


if __name__ == "__main__":
    main()
