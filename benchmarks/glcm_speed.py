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

Usage: python benchmarks/glcm_speed.py [--skimage-windows 300] [--repeats 5] [--threads 0,1]
"""

from __future__ import annotations

import argparse
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


def alternate(fns: dict, repeats: int) -> dict:
    """Time every function once per repeat, in turn (after one warm-up call each): ``{name: [seconds]}``."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def best_and_median(times: list) -> tuple[float, float]:
    return min(times), float(np.median(times))


def skimage_windows(x: torch.Tensor, n_windows: int, levels: int = 32, window: int = 20):
    """A function that computes the paper's features of the first ``n_windows`` windows with scikit-image."""
    from skimage.feature import graycomatrix, graycoprops

    names = {"asm": "ASM", "contrast": "contrast", "correlation": "correlation", "dissimilarity": "dissimilarity"}
    q = quantize(x, levels).numpy().astype(np.uint8)
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


def resnet_step():
    """A function that makes one SGD training step of ResNet18 on a 32x3x224x224 batch."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=2)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(B, 3, H, W)
    y = torch.randint(0, 2, (B,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def peak_memory_child(channels: int) -> None:
    """Run only (b) once (cold) and print the RSS before and the sampled peak RSS during it, in bytes."""
    page = resource.getpagesize()

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    torch.manual_seed(0)
    pred = torch.rand(B, channels, H, W, requires_grad=True)
    target = torch.rand(B, 1, H, W)
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


def speed(threads: int, args) -> None:
    """(a) and (b) with ``threads`` intra-op threads (0: torch's default)."""
    torch.set_num_threads(threads or DEFAULT_THREADS)
    torch.manual_seed(0)
    print(
        f"-- {torch.get_num_threads()} thread(s) ({'torch default' if not threads else 'set'}); {args.repeats} "
        f"alternating repeats after a warm-up; best (median) times"
    )
    x = torch.rand(B, 1, H, W)

    # (a)
    n_total = B * (H // 20) * (W // 20)
    functions = {"ours": lambda: glcm_features(x), "skimage": skimage_windows(x, args.skimage_windows)}
    times = alternate(functions, args.repeats)
    ours, ours_med = best_and_median(times["ours"])
    sk, sk_med = (t / args.skimage_windows * n_total for t in best_and_median(times["skimage"]))
    print(
        f"(a) hard features 32x1x224x224 (32 levels, d=3, 8 angles, 20x20 tiles, {len(PAPER_FEATURES)} features): "
        f"monai_assim {ours * 1e3:.1f} ms ({ours_med * 1e3:.1f}); scikit-image timed on {args.skimage_windows} of "
        f"the {n_total} windows, extrapolated to {sk:.2f} s ({sk_med:.2f}); speed-up {sk / ours:.0f}x "
        f"({sk_med / ours_med:.0f}x on medians) (target >= 50x)"
    )

    # (b)
    loss = GLCMLoss()
    target = torch.rand(B, 1, H, W)
    gray = torch.rand(B, 1, H, W, requires_grad=True)
    rgb = torch.rand(B, 3, H, W, requires_grad=True)
    times = alternate(
        {
            "gray": lambda: loss_step(gray, target, loss),
            "rgb": lambda: loss_step(rgb, target, loss),
            "resnet": resnet_step(),
        },
        args.repeats,
    )
    t_res, t_res_med = best_and_median(times["resnet"])
    print(f"(b) ResNet18 SGD training step 32x3x224x224: {t_res * 1e3:.0f} ms ({t_res_med * 1e3:.0f})")
    for name, shape in (("gray", "32x1x224x224"), ("rgb", "32x3x224x224 RGB")):
        t, t_med = best_and_median(times[name])
        print(
            f"    GLCMLoss (levels={loss.glcm_args['levels']}, soft) forward+backward, pred {shape}, target "
            f"32x1x224x224: {t * 1e3:.0f} ms ({t_med * 1e3:.0f}); ratio {t / t_res:.3f} ({t_med / t_res_med:.3f} "
            f"on medians) (target <= 0.05)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skimage-windows", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", default="0,1", help="comma-separated torch intra-op thread counts, each measured in turn (0: torch's default)"
    )
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    thread_counts = [int(v) for v in args.threads.split(",")]
    if args.child:
        torch.set_num_threads(thread_counts[0] or DEFAULT_THREADS)
        peak_memory_child(args.child)
        return

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    for threads in thread_counts:
        speed(threads, args)

    # (c)
    for channels in (1, 3):
        command = [sys.executable, __file__, "--child", str(channels), "--threads", str(thread_counts[0])]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        before, after = (int(v) for v in out.stdout.split())
        print(
            f"(c) peak memory of (b), pred with {channels} channel(s), {thread_counts[0] or DEFAULT_THREADS} thread(s): "
            f"sampled RSS of a fresh process rises by {(after - before) / 2**20:.0f} MiB during its first "
            f"forward+backward (peak RSS {after / 2**20:.0f} MiB in all, torch and inputs included)"
        )


if __name__ == "__main__":
    main()
