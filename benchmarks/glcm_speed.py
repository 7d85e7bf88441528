"""GLCM speed benchmark; prints figures measured in one run on this machine.

(a) hard GLCM features of a 32x1x224x224 batch (default settings: 32 levels, distance 3, 8 angles,
    20x20 tiles, the paper's five features) vs scikit-image looped over the same windows;
(b) GLCMLoss forward + backward on 32x1x224x224 (the issue's shape: gray prediction and target) divided
    by one ResNet18 training step on 32x3x224x224; also with an RGB prediction (32x3x224x224, converted
    to gray inside the loss), as in assimilation training;
(c) peak memory of (b): the peak resident set size (RSS, /proc/self/statm sampled every 0.5 ms by a
    thread) of a fresh subprocess during its first forward + backward of (b), minus its RSS just before
    (no warm-up: after one, the step reuses memory the allocator kept and the rise reads 0). tracemalloc
    cannot see torch's allocations, and ru_maxrss is dominated by the import-time peak.

The two sides of each ratio are timed alternately, repeat by repeat, and each side's best time is used
(the medians are printed too): on this shared 2-vCPU machine there are episodes of a minute or more in
which two-thread runs of the GLCM code (many medium-sized parallel operations) take about twice as long
while one-thread runs and large matrix products (ResNet18) keep their speed (docs/performance.md), so
timing one side after the other would compare different machines. (a) and (b) are measured with
torch's default thread count and with one thread (``--threads 0,1``).

On CUDA (``--device cuda``) every timing is bracketed by ``torch.cuda.synchronize`` (the warm-up call
excluded), scikit-image still runs on the CPU, the thread counts only affect the scikit-image side, and
(c) is replaced by the CUDA allocator's peak (``torch.cuda.max_memory_allocated``, reset before every
call) of each timed function, printed with (a) and (b).

Usage: python benchmarks/glcm_speed.py [--skimage-windows 300] [--repeats 5] [--threads 0,1]
           [--device cpu] [--batch 32] [--size 224] [--skip-memory] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np
import torch

from monai_assim.glcm import DEFAULT_ANGLES, PAPER_FEATURES, glcm_features, quantize
from monai_assim.losses import GLCMLoss

B, H, W = 32, 224, 224
DEFAULT_THREADS = torch.get_num_threads()  # torch's default, before any --threads


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(fns: dict, repeats: int, device: torch.device | None = None, peaks: dict | None = None) -> dict:
    """
    Time every function once per repeat, in turn (after one warm-up call each): ``{name: [seconds]}``.

    On CUDA each call is bracketed by ``torch.cuda.synchronize``; with ``peaks`` (a dict) the CUDA
    allocator's peak during each function's calls, above what was allocated before the call, is stored
    as ``peaks[name] = (rise, peak)`` in bytes (``max_memory_allocated`` is reset before each call).
    """
    device = torch.device("cpu") if device is None else device
    cuda = device.type == "cuda"
    for fn in fns.values():
        fn()
    _sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if cuda and peaks is not None:
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
            if cuda and peaks is not None:
                peak = torch.cuda.max_memory_allocated(device)
                old = peaks.get(name, (0, 0))
                peaks[name] = (max(old[0], peak - before), max(old[1], peak))
    return times


def best_and_median(times: list) -> tuple[float, float]:
    return min(times), float(np.median(times))


def skimage_windows(x: torch.Tensor, n_windows: int, levels: int = 32, window: int = 20):
    """A function that computes the paper's features of the first ``n_windows`` windows with scikit-image."""
    from skimage.feature import graycomatrix, graycoprops

    names = {"asm": "ASM", "contrast": "contrast", "correlation": "correlation", "dissimilarity": "dissimilarity"}
    q = quantize(x.cpu(), levels).numpy().astype(np.uint8)
    B, _, H, W = q.shape
    nh, nw = H // window, W // window
    i_lev, j_lev = np.ogrid[0:levels, 0:levels]

    def run():
        for k in range(n_windows):
            b, r, c = (k // (nh * nw)) % B, (k // nw) % nh, k % nw
            win = q[b, 0, r * window : (r + 1) * window, c * window : (c + 1) * window]
            g = graycomatrix(win, [3], np.deg2rad(DEFAULT_ANGLES), levels=levels, symmetric=False, normed=True)
            for f in PAPER_FEATURES:
                if f == "homogeneity":  # the paper's homogeneity from scikit-image's P
                    (g[:, :, 0, :] / (1.0 + np.abs(i_lev - j_lev))[..., None]).sum((0, 1))
                else:
                    graycoprops(g, names[f])

    return run


def loss_step(pred: torch.Tensor, target: torch.Tensor, loss: GLCMLoss) -> None:
    pred.grad = None
    loss(pred, target).backward()


def resnet_step(b: int = B, h: int = H, w: int = W, device: torch.device | None = None):
    """A function that makes one SGD training step of ResNet18 on a ``b x 3 x h x w`` (default 32x3x224x224) batch."""
    from torchvision.models import resnet18

    device = torch.device("cpu") if device is None else device
    net = resnet18(weights=None, num_classes=2).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(b, 3, h, w, device=device)
    y = torch.randint(0, 2, (b,), device=device)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def peak_memory_child(channels: int, b: int = B, h: int = H, w: int = W) -> None:
    """Run only (b) once (cold) and print the RSS before and the sampled peak RSS during it, in bytes."""
    page = resource.getpagesize()

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    torch.manual_seed(0)
    pred = torch.rand(b, channels, h, w, requires_grad=True)
    target = torch.rand(b, 1, h, w)
    loss = GLCMLoss()
    before, peak, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    loss_step(pred, target, loss)
    done.set()
    sampler.join()
    print(before, max(peak[0], rss()))


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def speed(threads: int, args, results: dict) -> None:
    """(a) and (b) with ``threads`` intra-op threads (0: torch's default); figures into ``results[threads]``."""
    torch.set_num_threads(threads or DEFAULT_THREADS)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    b, h, w = args.batch, args.size, args.size
    gray_shape, rgb_shape = f"{b}x1x{h}x{w}", f"{b}x3x{h}x{w}"
    print(
        f"-- {torch.get_num_threads()} thread(s) ({'torch default' if not threads else 'set'}); {args.repeats} "
        f"alternating repeats after a warm-up; best (median) times" + (f"; device {device}" if cuda else "")
    )
    x = torch.rand(b, 1, h, w)
    x_dev = x.to(device)
    fig: dict = {}
    peaks: dict = {}

    # (a)
    n_total = b * (h // 20) * (w // 20)
    n_sk = min(args.skimage_windows, n_total)
    functions = {"ours": lambda: glcm_features(x_dev), "skimage": skimage_windows(x, n_sk)}
    times = alternate(functions, args.repeats, device, peaks)
    ours, ours_med = best_and_median(times["ours"])
    sk, sk_med = (t / n_sk * n_total for t in best_and_median(times["skimage"]))
    where = f" on {device}, scikit-image on the CPU" if cuda else ""
    print(
        f"(a) hard features {gray_shape} (32 levels, d=3, 8 angles, 20x20 tiles, {len(PAPER_FEATURES)} features){where}: "
        f"monai_assim {ours * 1e3:.1f} ms ({ours_med * 1e3:.1f}); scikit-image timed on {n_sk} of "
        f"the {n_total} windows, extrapolated to {sk:.2f} s ({sk_med:.2f}); speed-up {sk / ours:.0f}x "
        f"({sk_med / ours_med:.0f}x on medians) (target >= 50x)"
    )
    fig["a_ms"], fig["a_skimage_s"], fig["a_speedup"] = ours * 1e3, sk, sk / ours
    if cuda:
        print(
            f"    CUDA peak of the hard features: {_mib(peaks['ours'][1])} ({_mib(peaks['ours'][0])} above the inputs)"
        )
        fig["a_cuda_peak_mib"] = peaks["ours"][1] / 2**20

    # (b)
    loss = GLCMLoss()
    target = torch.rand(b, 1, h, w, device=device)
    gray = torch.rand(b, 1, h, w, device=device, requires_grad=True)
    rgb = torch.rand(b, 3, h, w, device=device, requires_grad=True)
    times = alternate(
        {
            "gray": lambda: loss_step(gray, target, loss),
            "rgb": lambda: loss_step(rgb, target, loss),
            "resnet": resnet_step(b, h, w, device),
        },
        args.repeats,
        device,
        peaks,
    )
    t_res, t_res_med = best_and_median(times["resnet"])
    print(
        f"(b) ResNet18 SGD training step {rgb_shape}: {t_res * 1e3:.{1 if cuda else 0}f} ms ({t_res_med * 1e3:.{1 if cuda else 0}f})"
    )
    fig["b_resnet_ms"] = t_res * 1e3
    if cuda:
        print(f"    CUDA peak of the ResNet18 step: {_mib(peaks['resnet'][1])}")
        fig["b_resnet_cuda_peak_mib"] = peaks["resnet"][1] / 2**20
    for name, shape in (("gray", gray_shape), ("rgb", f"{rgb_shape} RGB")):
        t, t_med = best_and_median(times[name])
        print(
            f"    GLCMLoss (levels={loss.glcm_args['levels']}, soft) forward+backward, pred {shape}, target "
            f"{gray_shape}: {t * 1e3:.{1 if cuda else 0}f} ms ({t_med * 1e3:.{1 if cuda else 0}f}); ratio {t / t_res:.3f} "
            f"({t_med / t_res_med:.3f} on medians) (target <= 0.05)"
        )
        fig[f"b_{name}_ms"], fig[f"b_ratio_{name}"], fig[f"b_ratio_{name}_median"] = (
            t * 1e3,
            t / t_res,
            t_med / t_res_med,
        )
        if cuda:
            rise, peak = peaks[name]
            print(f"    CUDA peak of that step: {_mib(peak)} ({_mib(rise)} above the inputs)")
            fig[f"b_{name}_cuda_peak_mib"], fig[f"b_{name}_cuda_rise_mib"] = peak / 2**20, rise / 2**20
    results[str(threads)] = fig


def main(argv: list | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skimage-windows", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        default="0,1",
        help="comma-separated torch intra-op thread counts, each measured in turn (0: torch's default)",
    )
    parser.add_argument(
        "--device", default="cpu", help="where monai_assim and ResNet18 run: cpu (default), cuda, cuda:1"
    )
    parser.add_argument("--batch", type=int, default=B, help="batch size (default 32)")
    parser.add_argument("--size", type=int, default=H, help="image height and width (default 224)")
    parser.add_argument("--skip-memory", action="store_true", help="skip (c), the peak-RSS subprocesses (CPU only)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    thread_counts = [int(v) for v in args.threads.split(",")]
    if args.child:
        torch.set_num_threads(thread_counts[0] or DEFAULT_THREADS)
        peak_memory_child(args.child, args.batch, args.size, args.size)
        return

    device = torch.device(args.device)
    extra = f", device {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs{extra}")
    results: dict = {
        "device": str(device),
        "batch": args.batch,
        "size": args.size,
        "repeats": args.repeats,
        "threads": {},
    }
    for threads in thread_counts:
        speed(threads, args, results["threads"])

    # (c), on the CPU: on CUDA the allocator's peaks are printed with (a) and (b)
    if device.type == "cpu" and not args.skip_memory:
        for channels in (1, 3):
            command = [sys.executable, __file__, "--child", str(channels), "--threads", str(thread_counts[0])]
            command += ["--batch", str(args.batch), "--size", str(args.size)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            before, after = (int(v) for v in out.stdout.split())
            print(
                f"(c) peak memory of (b), pred with {channels} channel(s), {thread_counts[0] or DEFAULT_THREADS} thread(s): "
                f"sampled RSS of a fresh process rises by {(after - before) / 2**20:.0f} MiB during its first "
                f"forward+backward (peak RSS {after / 2**20:.0f} MiB in all, torch and inputs included)"
            )
            results[f"c_rss_rise_mib_{channels}ch"] = (after - before) / 2**20
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
