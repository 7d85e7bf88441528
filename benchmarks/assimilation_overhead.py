"""
Overhead of domain assimilation on one training step, measured in one run on this machine.

    python benchmarks/assimilation_overhead.py [--batch 32] [--size 224] [--repeats 5] [--device cpu]
        [--amp] [--json FILE]

(a) one AssimilationTrainer-style step (forward, AssimilationLoss with the GLCM term, backward,
    optimiser step) of the assimilated ResNet18 divided by the same step of the vanilla ResNet18
    (cross-entropy only, as AssimilationTrainer trains it): target <= 1.2;
(b) forward latency of T + C alone (no grad), and its share of the vanilla forward;
(c) for the breakdown, GLCMLoss forward+backward alone, as a share of the vanilla step.
Each figure is the median of ``--repeats`` timings after one warm-up; on CUDA every timing is
bracketed by ``torch.cuda.synchronize`` and the CUDA allocator's peak of each training step
(``torch.cuda.max_memory_allocated``, reset before the step) is printed too. With ``--amp`` both
steps run as AssimilationTrainer runs them with ``amp=True``: the forward pass under ``torch.autocast``
(float16 on CUDA with a ``GradScaler``, bfloat16 on the CPU), the loss in float32 outside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

from monai_assim.losses import AssimilationLoss
from monai_assim.networks import AssimilationNet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--texture-features", type=int, default=8, help="hidden channels of T")
    parser.add_argument("--texture-layers", type=int, default=3, help="3x3 convolutions of T")
    parser.add_argument("--amp", action="store_true", help="mixed precision, as AssimilationTrainer(amp=True)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if (args.amp and cuda) else None

    def autocast():
        return torch.autocast(device.type) if args.amp else contextlib.nullcontext()

    def backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, args.size, args.size, device=device)
    y = torch.randint(0, 2, (args.batch,), device=device)
    loss_fn = AssimilationLoss(alpha=0.5).to(device)
    t_args = {"texture_features": args.texture_features, "texture_layers": args.texture_layers}
    nets = {
        v: AssimilationNet("resnet18", 2, variant=v, **t_args).to(device).train() for v in ("assimilated", "vanilla")
    }
    with torch.no_grad():  # a T that is not the identity, as after some training
        for p in nets["assimilated"].texture.residual[-1].parameters():
            p.normal_(0.0, 0.05)
    opts = {v: torch.optim.SGD(n.parameters(), lr=1e-3, momentum=0.9) for v, n in nets.items()}

    def step_assimilated():
        net, opt = nets["assimilated"], opts["assimilated"]
        opt.zero_grad()
        with autocast():
            logits, rgb = net(x, return_assimilated=True)
        backward_step(loss_fn(logits.float(), y, rgb.float(), x), opt)

    def step_vanilla():
        net, opt = nets["vanilla"], opts["vanilla"]
        opt.zero_grad()
        with autocast():
            logits = net(x)
        backward_step(torch.nn.functional.cross_entropy(logits.float(), y), opt)

    def tc_forward():
        with torch.no_grad(), autocast():
            nets["assimilated"].assimilate(x)

    rgb_probe = torch.rand(args.batch, 3, args.size, args.size, device=device, requires_grad=True)

    def glcm_alone():
        loss_fn.glcm(rgb_probe, x).backward()

    def vanilla_forward():
        with torch.no_grad(), autocast():
            nets["vanilla"](x)

    # interleave the two steps' timings so that load changes on a shared machine hit both alike
    t_assim, t_vanilla = [], []
    peaks = {step_assimilated: 0, step_vanilla: 0}
    step_assimilated(), step_vanilla()  # warm-up
    for _ in range(args.repeats):
        for fn, out in ((step_assimilated, t_assim), (step_vanilla, t_vanilla)):
            _sync(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - start)
            if cuda:
                peaks[fn] = max(peaks[fn], torch.cuda.max_memory_allocated(device))
    a, v = statistics.median(t_assim), statistics.median(t_vanilla)
    tc = _median_seconds(tc_forward, args.repeats, device)
    fwd = _median_seconds(vanilla_forward, args.repeats, device)
    glcm = _median_seconds(glcm_alone, args.repeats, device)
    n_t = sum(p.numel() for p in nets["assimilated"].texture.parameters())
    n_c = sum(p.numel() for p in nets["assimilated"].color.parameters())
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch} x 1 x {args.size} x {args.size}, "
        f"ResNet18, median of {args.repeats} after 1 warm-up" + (", AMP" if args.amp else "")
    )
    print(f"training step, assimilated (T+C+GLCM loss): {a * 1000:.0f} ms")
    print(f"training step, vanilla (CE):                {v * 1000:.0f} ms")
    print(f"ratio assimilated / vanilla:                {a / v:.3f}  (target <= 1.2)")
    print(f"of which GLCM loss forward+backward alone:  {glcm * 1000:.0f} ms ({glcm / v:.1%} of the vanilla step)")
    t_shape = f"T {args.texture_features}x{args.texture_layers}: {n_t} + C: {n_c} parameters"
    print(
        f"forward T+C alone ({t_shape}): {tc * 1000:.1f} ms ({tc / fwd:.1%} of the vanilla forward, {fwd * 1000:.0f} ms)"
    )
    figures = {
        "device": str(device), "batch": args.batch, "size": args.size, "repeats": args.repeats, "amp": args.amp,
        "assimilated_ms": a * 1e3, "vanilla_ms": v * 1e3, "ratio": a / v, "glcm_ms": glcm * 1e3,
        "glcm_share_of_vanilla": glcm / v, "tc_forward_ms": tc * 1e3, "vanilla_forward_ms": fwd * 1e3,
    }  # fmt: skip
    if cuda:
        pa, pv = peaks[step_assimilated] / 2**20, peaks[step_vanilla] / 2**20
        print(f"CUDA peak memory of a training step: assimilated {pa:.0f} MiB, vanilla {pv:.0f} MiB")
        figures["assimilated_cuda_peak_mib"], figures["vanilla_cuda_peak_mib"] = pa, pv
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
