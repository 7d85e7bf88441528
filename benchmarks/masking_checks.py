"""
Is a trained model's robustness real or gradient masking? Checks beyond the evaluation's own, on one run's
kept checkpoint and its test split (the whole model, [0, 1] pixel space, one seed per attack):

- **steps and step size** at each ``--eps_255``: PGD-10 (torchattacks' step, 2/255 at most), PGD-50 with
  step eps/10, PGD-10 with step eps (a large step), APGD-CE and APGD-margin at 100 steps. Under masking
  a few-step or large-step attack does as well as, or better than, a long one;
- **transfer** (with ``--source``, another run): APGD-CE 100 crafted on the source model and scored on this
  one. Accuracy under transfer lower than under the white-box attacks means the white-box gradients of
  this model mislead;
- **large eps**: PGD-20 at 8, 16 and 64/255 must drive accuracy towards 0;
- **logits and gradients**: mean largest |logit| and mean logit margin (a large scale saturates CE), and
  the fraction of images whose CE input gradient is exactly zero.

    python benchmarks/masking_checks.py --run study/chest_ct/runs/seed0/assimilated_pgdat \\
        --source study/chest_ct/runs/seed0/vanilla_pgdat --eps_255 2 4 [--checkpoint best] \\
        [--per_class N] [--seed 0] [--json FILE]

It prints a markdown table (and writes it as JSON with ``--json``). The evaluation
(:class:`monai_assim.handlers.AdversarialRobustnessHandler`) stays the record; these are checks of it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

LARGE_EPS_255 = (8, 16, 64)


def load_run_network(run: str | Path, checkpoint: str = "best") -> torch.nn.Module:
    """The run's whole classifier (T, C, backbone, head) from ``checkpoint``, in eval mode."""
    from monai_assim.bundle import checkpoint_path, load_run_summary
    from monai_assim.networks import AssimilationNet

    summary = load_run_summary(run)
    s = summary["settings"]
    net = AssimilationNet(
        s["backbone"],
        len(summary.get("class_names", [0, 1])),
        pretrained=None,
        variant=s["variant"],
        mean=s["mean"],
        std=s["std"],
        output_map=s.get("assimilation_map", "clamp"),
    )
    state = torch.load(checkpoint_path(run, checkpoint), map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("network", state))
    return net.eval()


def load_test_images(run: str | Path, per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's test split (the first ``per_class`` of each class with a cap), as it evaluated them."""
    from monai_assim.bundle import load_datalist, load_run_summary
    from monai_assim.data import image_transforms

    size = load_run_summary(run)["settings"]["image_size"]
    items = load_datalist(run, "test")
    if per_class is not None:
        items = [
            d for c in sorted({d["label"] for d in items}) for d in [d for d in items if d["label"] == c][:per_class]
        ]
    load = image_transforms(size, keys=["image"], augment=False)
    images = torch.stack([torch.as_tensor(load(dict(d))["image"]) for d in items]).float()
    return images, torch.tensor([int(d["label"]) for d in items])


def _predict(net: torch.nn.Module, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])


def adversarial(net, x, y, name: str, eps: float, seed: int, batch: int = 32, **kwargs: Any) -> torch.Tensor:
    """Adversarial images of attack ``name`` crafted on ``net`` (the evaluation's builder and seeding)."""
    from monai_assim.robustness.attacks import build_attack, run_attack

    attack = build_attack(name, net, eps, int(net(x[:1]).shape[1]), **kwargs)
    return torch.cat([run_attack(attack, x[i : i + batch], y[i : i + batch], seed) for i in range(0, len(x), batch)])


def logit_stats(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean largest |logit|, mean margin (true logit minus the largest other) and zero-gradient fraction."""
    x = x.clone().requires_grad_(True)
    logits = net(x)
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    logits = logits.detach()
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return {
        "max_abs_logit": float(logits.abs().amax(1).mean()),
        "margin": float((true - other).mean()),
        "zero_gradient": float((grad.flatten(1).abs().amax(1) == 0).float().mean()),
    }


def white_box_attacks(eps: float) -> dict[str, tuple[str, dict[str, Any]]]:
    """label -> (attack, kwargs) of the steps and step-size check at ``eps``."""
    return {
        "PGD-10": ("PGD", {"steps": 10}),
        "PGD-50, step eps/10": ("PGD", {"steps": 50, "alpha": eps / 10}),
        "PGD-10, step eps": ("PGD", {"steps": 10, "alpha": eps}),
        "APGD-CE 100": ("APGD", {"loss": "ce", "steps": 100}),
        "APGD-margin 100": ("APGDMargin", {"steps": 100}),
    }


def run_checks(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_255: list[float],
    source: torch.nn.Module | None = None,
    seed: int = 0,
    large_eps_255: tuple[float, ...] = LARGE_EPS_255,
    log=print,
) -> list[dict[str, Any]]:
    """The rows ``{check, attack, eps_255, accuracy, n, seconds}`` of every check (see the module docstring)."""
    rows: list[dict[str, Any]] = []

    def add(check: str, attack: str, e: float, correct: torch.Tensor, start: float) -> None:
        rows.append(
            {
                "check": check,
                "attack": attack,
                "eps_255": e,
                "accuracy": float(correct.float().mean()),
                "n": len(correct),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        log(f"[{time.strftime('%H:%M:%S')}] {check} {attack} {e}/255: {rows[-1]['accuracy']:.4f}")

    start = time.perf_counter()
    add("clean", "none", 0, _predict(net, x) == y, start)
    for e in eps_255:
        for label, (name, kwargs) in white_box_attacks(e / 255).items():
            start = time.perf_counter()
            add(
                "steps and step size",
                label,
                e,
                _predict(net, adversarial(net, x, y, name, e / 255, seed, **kwargs)) == y,
                start,
            )
        if source is not None:
            start = time.perf_counter()
            adv = adversarial(source, x, y, "APGD", e / 255, seed, loss="ce", steps=100)
            add("transfer", "APGD-CE 100 on the source", e, _predict(net, adv) == y, start)
            add("transfer", "(the same, on the source)", e, _predict(source, adv) == y, start)
    for e in large_eps_255:
        start = time.perf_counter()
        add("large eps", "PGD-20", e, _predict(net, adversarial(net, x, y, "PGD", e / 255, seed, steps=20)) == y, start)
    stats = logit_stats(net, x, y)
    for key, value in stats.items():
        rows.append({"check": "logits", "attack": key, "eps_255": 0, "accuracy": value, "n": len(y), "seconds": 0.0})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| check | attack | eps (/255) | accuracy (or value) | n | seconds |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['check']} | {r['attack']} | {r['eps_255']:g} | {r['accuracy']:.4f} | {r['n']} | {r['seconds']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="the run folder whose checkpoint is checked")
    p.add_argument("--source", default=None, help="another run: the surrogate of the transfer check")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--eps_255", type=float, nargs="+", default=[2.0])
    p.add_argument("--per_class", type=int, default=None, help="test images per class (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    net = load_run_network(a.run, a.checkpoint)
    source = load_run_network(a.source, a.checkpoint) if a.source else None
    x, y = load_test_images(a.run, a.per_class)
    rows = run_checks(net, x, y, a.eps_255, source, a.seed)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(
            json.dumps({"run": a.run, "source": a.source, "checkpoint": a.checkpoint, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
