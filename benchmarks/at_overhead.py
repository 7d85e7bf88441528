"""
Cost of one PGD adversarial-training step, measured in one run on this machine.

    python benchmarks/at_overhead.py [--steps 5] [--batch 32] [--size 224] [--backbone resnet18]
                                     [--variant vanilla] [--repeats 5] [--device cpu]

One ``AssimilationTrainer`` iteration with ``adversarial_training="pgd"`` and k = ``--steps`` attack steps
(k forward+backward passes w.r.t. the input in eval mode, one no-grad clean forward for ``acc_clean``, the
training forward+backward and the optimiser step) divided by (k + 1) iterations of the same trainer with
``adversarial_training="none"``: the attack's passes cost about as much as training steps, so the target
is <= 1.15. The two are timed alternately (AT step, then k + 1 plain steps, ``--repeats`` times after one
warm-up of each) and the ratio of the medians is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from monai_assim.engines import AssimilationTrainer
from monai_assim.losses import AssimilationLoss
from monai_assim.networks import AssimilationNet


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="attack steps k of PGD-AT")
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
    at, plain = _trainer(args, "pgd", device), _trainer(args, "none", device)

    def timed(trainer: AssimilationTrainer, n: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(n):
            trainer._iteration(trainer, batch)
        sync()
        return time.perf_counter() - start

    timed(at, 1), timed(plain, 1)  # warm-up
    at_times, plain_times = [], []
    for _ in range(args.repeats):
        at_times.append(timed(at, 1))
        plain_times.append(timed(plain, args.steps + 1))
    a, p = statistics.median(at_times), statistics.median(plain_times)
    print(
        f"{args.backbone} {args.variant}, batch {args.batch} x 1 x {args.size} x {args.size}, {device}, "
        f"{torch.get_num_threads()} threads, k = {args.steps}, {args.repeats} repeats"
    )
    print(f"PGD-AT step:           {a * 1000:9.1f} ms (median)")
    print(f"{args.steps + 1} plain steps:        {p * 1000:9.1f} ms (median)")
    print(f"ratio AT / (k+1) plain: {a / p:.3f}   (target <= 1.15)")


if __name__ == "__main__":
    main()
