"""GLCM speed benchmark; prints figures measured in one run on this machine.

(a) hard GLCM features of a 32x1x224x224 batch (default settings: 32 levels, distance 3, 8 angles,
    20x20 tiles, the paper's five features) vs scikit-image looped over the same windows;
(b) GLCMLoss forward + backward on a 32x224x224 batch (RGB prediction, gray target) divided by one
    ResNet18 training step on 32x3x224x224;
(c) peak memory of (b): the peak resident set size (RSS, /proc/self/statm sampled every 0.5 ms by a
    thread) of a fresh subprocess during its first forward + backward of (b), minus its RSS just before
    (no warm-up: after one, the step reuses memory the allocator kept and the rise reads 0). tracemalloc
    cannot see torch's allocations, and ru_maxrss is dominated by the import-time peak.

Usage: python benchmarks/glcm_speed.py [--skimage-windows 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
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


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def skimage_per_window(x: torch.Tensor, n_windows: int, levels: int = 32, window: int = 20) -> float:
    from skimage.feature import graycomatrix, graycoprops

    names = {"asm": "ASM", "contrast": "contrast", "correlation": "correlation", "dissimilarity": "dissimilarity"}
    q = quantize(x, levels).numpy().astype(np.uint8)
    nh, nw = H // window, W // window
    i_lev, j_lev = np.ogrid[0:levels, 0:levels]
    start = time.perf_counter()
    for k in range(n_windows):
        b, r, c = (k // (nh * nw)) % B, (k // nw) % nh, k % nw
        win = q[b, 0, r * window : (r + 1) * window, c * window : (c + 1) * window]
        g = graycomatrix(win, [3], np.deg2rad(DEFAULT_ANGLES), levels=levels, symmetric=False, normed=True)
        for f in PAPER_FEATURES:
            if f == "homogeneity":  # the paper's homogeneity from scikit-image's P
                (g[:, :, 0, :] / (1.0 + np.abs(i_lev - j_lev))[..., None]).sum((0, 1))
            else:
                graycoprops(g, names[f])
    return (time.perf_counter() - start) / n_windows


def loss_step(pred: torch.Tensor, target: torch.Tensor, loss: GLCMLoss) -> None:
    pred.grad = None
    loss(pred, target).backward()


def resnet_step(repeats: int) -> float:
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=2)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(B, 3, H, W)
    y = torch.randint(0, 2, (B,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return best_time(step, repeats)


def peak_memory_child() -> None:
    """Run only (b) once (cold) and print the RSS before and the sampled peak RSS during it, in bytes."""
    page = resource.getpagesize()

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    torch.manual_seed(0)
    pred = torch.rand(B, 3, H, W, requires_grad=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skimage-windows", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        peak_memory_child()
        return

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.repeats} runs after a warm-up")
    x = torch.rand(B, 1, H, W)

    # (a)
    ours = best_time(lambda: glcm_features(x), args.repeats)
    n_total = B * (H // 20) * (W // 20)
    per_window = skimage_per_window(x, args.skimage_windows)
    sk_total = per_window * n_total
    print(
        f"(a) hard features 32x1x224x224 (32 levels, d=3, 8 angles, 20x20 tiles, {len(PAPER_FEATURES)} features): "
        f"monai_assim {ours * 1e3:.1f} ms; scikit-image {per_window * 1e3:.3f} ms/window timed on "
        f"{args.skimage_windows} of the {n_total} windows, extrapolated to {sk_total:.2f} s; "
        f"speed-up {sk_total / ours:.0f}x (target >= 50x)"
    )

    # (b)
    pred = torch.rand(B, 3, H, W, requires_grad=True)
    target = torch.rand(B, 1, H, W)
    loss = GLCMLoss()
    t_loss = best_time(lambda: loss_step(pred, target, loss), args.repeats)
    t_resnet = resnet_step(max(1, args.repeats - 1))
    print(
        f"(b) GLCMLoss (levels={loss.glcm_args['levels']}, soft) forward+backward, pred 32x3x224x224 RGB, target "
        f"32x1x224x224: {t_loss * 1e3:.0f} ms; ResNet18 SGD training step 32x3x224x224: {t_resnet * 1e3:.0f} ms; "
        f"ratio {t_loss / t_resnet:.3f} (target <= 0.05)"
    )

    # (c)
    out = subprocess.run([sys.executable, __file__, "--child", "--threads", str(torch.get_num_threads())], capture_output=True, text=True, check=True)
    before, after = (int(v) for v in out.stdout.split())
    print(
        f"(c) peak memory of (b): sampled RSS of a fresh process rises by {(after - before) / 2**20:.0f} MiB "
        f"during its first forward+backward (peak RSS {after / 2**20:.0f} MiB in all, torch and inputs included)"
    )


if __name__ == "__main__":
    main()
