"""
What robust validation costs, and whether the logged ``val_robust_acc_seconds`` says it.

A MONAI ``SupervisedEvaluator`` over a validation set, with and without the
:class:`monai_assim.metrics.RobustAccuracy` metric, alternating (timings drift on a shared CPU: compare
within one run). The added wall time of an epoch should equal the seconds the metric logs, within noise.

Usage::

    python benchmarks/robust_validation_cost.py [--images 96] [--size 128] [--steps 10] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from ignite.metrics import Accuracy
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine

from monai_assim.metrics import RobustAccuracy
from monai_assim.networks import AssimilationNet


def epoch_time(net, batches, robust: bool, steps: int, attack: str) -> tuple[float, float | None]:
    metrics = {"val_acc": Accuracy(output_transform=from_engine(["pred", "label"]))}
    extra = {"val_robust_acc": RobustAccuracy(net, eps=2 / 255, attack=attack, steps=steps)} if robust else {}
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=batches,
        network=net,
        key_val_metric=metrics,
        additional_metrics=extra,
    )
    start = time.perf_counter()
    evaluator.run()
    wall = time.perf_counter() - start
    return wall, evaluator.state.metrics.get("val_robust_acc_seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--attack", default="PGD")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = AssimilationNet("mobilenet_v2", num_classes=2, pretrained="none", variant="vanilla", mean=0.5, std=0.5)
    net.eval()
    x = torch.rand(args.images, 1, args.size, args.size)
    y = torch.arange(args.images) % 2
    batches = [
        {"image": x[i : i + args.batch], "label": y[i : i + args.batch]} for i in range(0, args.images, args.batch)
    ]
    epoch_time(net, batches[:1], True, 1, args.attack)  # warm-up
    plain, robust, logged = [], [], []
    for _ in range(args.repeats):
        plain.append(epoch_time(net, batches, False, args.steps, args.attack)[0])
        wall, seconds = epoch_time(net, batches, True, args.steps, args.attack)
        robust.append(wall)
        logged.append(seconds)
    added = [r - p for r, p in zip(robust, plain)]
    print(
        f"MobileNetV2 {args.size}x{args.size}, {args.images} images, batch {args.batch}, {args.attack}-{args.steps}, "
        f"{args.threads} thread(s), {args.repeats} alternations"
    )
    print(f"validation epoch, clean only:        {', '.join(f'{t:.2f}' for t in plain)} s")
    print(f"validation epoch, with robust:       {', '.join(f'{t:.2f}' for t in robust)} s")
    print(f"added wall time:                     {', '.join(f'{t:.2f}' for t in added)} s")
    print(f"logged val_robust_acc_seconds:       {', '.join(f'{t:.2f}' for t in logged)} s")
    ratio = [a / b for a, b in zip(logged, added)]
    print(f"logged / added: {', '.join(f'{r:.3f}' for r in ratio)} (median {statistics.median(ratio):.3f})")
    print(f"robust epoch / clean epoch: median {statistics.median(r / p for r, p in zip(robust, plain)):.1f}x")


if __name__ == "__main__":
    main()
