"""
Overhead of AdversarialRobustnessHandler over the passes its attacks must make, and eps grouping.

Model: ``AssimilationNet(backbone="mobilenet_v2", variant="assimilated", num_classes=2)`` (random
weights), input (8, 1, 64, 64) on [0, 1], eval mode, CPU. Sweep: the paper's FGSM, BIM, MIFGSM and PGD
(10 steps each, alpha = 2.5 eps / 10) at eps = 1/255 ... 8/255, i.e. (1 + 10 + 10 + 10) * 8 = 248
forward+backward passes of the batch.

    ratio = t(handler sweep of one batch) / (248 * t(one forward+backward of the batch))

measured in one run (median of ``--repeats``). The handler's extra work (one clean forward, one
forward per (attack, eps) to score the adversarial batch, bookkeeping) is inside the numerator.
Then the same sweep with ``group_eps=8`` (FGSM, BIM and MIFGSM craft all 8 eps values in one pass on
the batch repeated 8 times; PGD's random start needs a scalar eps in torchattacks and stays per eps).

    python benchmarks/attack_sweep.py [--batch 8] [--size 64] [--repeats 3] [--threads 0]
        [--device cpu] [--n-eps 8] [--json FILE]

On CUDA (``--device cuda``) every timing ends with ``torch.cuda.synchronize`` (warm-up passes excluded)
and the CUDA allocator's peak during each sweep (``torch.cuda.max_memory_allocated``, reset before it)
is printed. ``--n-eps N`` sweeps only the first N eps values (a quicker run; the floor counts the
passes of those alone, and ``group_eps`` is then N).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from ignite.engine import Engine

from monai_assim.handlers import AdversarialRobustnessHandler
from monai_assim.networks import AssimilationNet
from monai_assim.robustness.attacks import DEFAULT_EPS, PAPER_ATTACKS

STEPS = {"FGSM": 1, "BIM": 10, "MIFGSM": 10, "PGD": 10}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fb(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> float:
    """Seconds of one forward+backward (gradient w.r.t. the input, as the attacks take it)."""

    def once():
        xi = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(xi), y)
        torch.autograd.grad(loss, xi)

    once()
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(n):
        once()
    _sync(x.device)
    return (time.perf_counter() - start) / n


def time_sweep(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    group_eps: int,
    eps: tuple = DEFAULT_EPS,
    peaks: list | None = None,
) -> tuple[float, dict]:
    """Seconds of the handler's sweep of one batch and its metrics; with ``peaks``, appends the CUDA peak (bytes)."""
    engine = Engine(lambda e, b: None)
    handler = AdversarialRobustnessHandler(
        net, attacks=list(PAPER_ATTACKS), eps=list(eps), check_eps=None, group_eps=group_eps, progress=False
    )
    handler.attach(engine)
    cuda = x.device.type == "cuda"
    _sync(x.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(x.device)
    start = time.perf_counter()
    engine.run([(x, y)])
    _sync(x.device)
    seconds = time.perf_counter() - start
    if cuda and peaks is not None:
        peaks.append(torch.cuda.max_memory_allocated(x.device))
    return seconds, dict(engine.state.metrics)


def main(argv: list | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    parser.add_argument("--n-eps", type=int, default=len(DEFAULT_EPS), help="sweep the first N eps values only")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    eps = tuple(DEFAULT_EPS[: args.n_eps])
    G = len(eps)  # group_eps of the grouped sweep: all eps values in one pass
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    net = AssimilationNet(backbone="mobilenet_v2", num_classes=2, pretrained=None, variant="assimilated").eval()
    net = net.to(device)
    x = torch.rand(args.batch, 1, args.size, args.size).to(device)
    y = (torch.arange(args.batch) % 2).to(device)
    n_fb = sum(STEPS[a] for a in PAPER_ATTACKS) * G

    # one-pass timings are taken right before and after each sweep, so load changes on a shared
    # machine hit numerator and denominator alike
    t_fb, t_fb8, plain, grouped = [], [], [], []
    peaks_plain, peaks_grouped = [], []
    for _ in range(args.repeats):
        t_fb.append(time_fb(net, x, y, 10))
        t, m_plain = time_sweep(net, x, y, 1, eps, peaks_plain)
        plain.append(t)
        t_fb.append(time_fb(net, x, y, 10))
        t_fb8.append(time_fb(net, x.repeat(G, 1, 1, 1), y.repeat(G), 3))
        t, m_grouped = time_sweep(net, x, y, G, eps, peaks_grouped)
        grouped.append(t)
        t_fb8.append(time_fb(net, x.repeat(G, 1, 1, 1), y.repeat(G), 3))
    t_fb, t_fb8 = statistics.median(t_fb), statistics.median(t_fb8)
    t_plain, t_grouped = statistics.median(plain), statistics.median(grouped)
    n_fb_grouped = (STEPS["FGSM"] + STEPS["BIM"] + STEPS["MIFGSM"]) + STEPS["PGD"] * G
    ratio = t_plain / (n_fb * t_fb)

    where = f", device {device}" if device.type != "cpu" else ""
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch} x 1 x {args.size}^2{where}"
    )
    print(f"one forward+backward, batch B:        {t_fb * 1e3:8.1f} ms")
    print(f"one forward+backward, batch {G}B:       {t_fb8 * 1e3:8.1f} ms  ({G} x batch B: {G * t_fb * 1e3:.1f} ms)")
    print(f"passes the sweep must make:           {n_fb} x batch B")
    print(f"handler sweep, per eps:               {t_plain:8.2f} s   ideal {n_fb * t_fb:.2f} s")
    print(f"ratio (target <= 1.15):               {ratio:8.3f}")
    print(
        f"handler sweep, group_eps={G}:           {t_grouped:8.2f} s   "
        f"ideal {n_fb_grouped - G * STEPS['PGD']} x {G}B + {G * STEPS['PGD']} x B = "
        f"{(n_fb_grouped - G * STEPS['PGD']) * t_fb8 + G * STEPS['PGD'] * t_fb:.2f} s"
    )
    print(f"grouped / per-eps wall time:          {t_grouped / t_plain:8.3f}")
    print(f"grouped / (passes x t(batch B)):      {t_grouped / (n_fb * t_fb):8.3f}")
    same = all(m_plain[k] == m_grouped[k] for k in m_plain if k != "adv_gradient_masking")
    print(f"grouped metrics equal per-eps ones:   {same}")
    figures = {
        "device": str(device), "batch": args.batch, "size": args.size, "repeats": args.repeats, "n_eps": G,
        "fb_ms": t_fb * 1e3, "passes": n_fb, "sweep_s": t_plain, "ratio": ratio, "grouped_s": t_grouped,
        "grouped_over_per_eps": t_grouped / t_plain, "grouped_metrics_equal": same,
    }  # fmt: skip
    if peaks_plain:
        pp, pg = max(peaks_plain) / 2**20, max(peaks_grouped) / 2**20
        print(f"CUDA peak memory of a sweep:          per eps {pp:.0f} MiB, group_eps={G} {pg:.0f} MiB")
        figures["sweep_cuda_peak_mib"], figures["grouped_cuda_peak_mib"] = pp, pg
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
