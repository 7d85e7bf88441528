"""
How far T and C move in a short training run, per learning rate of their own parameter group.

    python benchmarks/assimilation_lr.py --data ../shared/data/chest_xray \
        --weights ../shared/weights/mobilenet_v2_imagenet_from_tflite.pt

Trains the assimilated MobileNetV2 (mean = std = 0.5) on ``--n`` real chest X-rays (half normal, half
pneumonia, the first files of ``train/``) at ``--size`` pixels for ``--steps`` Adam steps, the backbone at
``--lr`` and T and C at each ``--assimilation_lr``, the loss ``alpha * CE + (1 - alpha) * GLCM``, and
prints, on the same images after training, mean |gray(C(T(x))) - x|, mean chroma and the GLCM term
(see ``monai_assim.metrics``), in grey levels of 255 for the first two. One thread, seed 0.
"""

from __future__ import annotations

import argparse
import glob
import os
import time

import torch

from monai_assim.data import image_transforms
from monai_assim.losses import AssimilationLoss
from monai_assim.metrics import assimilation_distances
from monai_assim.networks import AssimilationNet, param_groups


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--alpha", type=float, default=0.99)
    p.add_argument("--assimilation_lr", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 3e-2])
    p.add_argument("--init", nargs="+", default=["identity"])
    a = p.parse_args()
    torch.set_num_threads(1)
    load = image_transforms(a.size, keys=["image"], augment=False)
    files = [
        (f, lab)
        for lab, cls in enumerate(("NORMAL", "PNEUMONIA"))
        for f in sorted(glob.glob(os.path.join(a.data, "train", cls, "*")))[: a.n // 2]
    ]
    x_all = torch.stack([torch.as_tensor(load({"image": f})["image"]) for f, _ in files]).float()
    y_all = torch.tensor([lab for _, lab in files])
    print(
        f"{len(files)} images {tuple(x_all.shape[1:])}, {a.steps} Adam steps of batch {a.batch}, lr {a.lr}, alpha {a.alpha}"
    )
    print("| init | assimilation_lr | grey shift (/255) | chroma (/255) | GLCM term | train CE (last 10 steps) | s |")
    print("|---|---|---|---|---|---|---|")
    for init in a.init:
        for alr in a.assimilation_lr:
            torch.manual_seed(0)
            net = AssimilationNet("mobilenet_v2", 2, pretrained=a.weights, mean=0.5, std=0.5, assimilation_init=init)
            loss_fn = AssimilationLoss(alpha=a.alpha)
            opt = torch.optim.Adam(param_groups(net, a.lr, alr))
            g = torch.Generator().manual_seed(0)
            ces, t0 = [], time.perf_counter()
            net.train()
            for _ in range(a.steps):
                idx = torch.randperm(len(files), generator=g)[: a.batch]
                logits, rgb = net(x_all[idx], return_assimilated=True)
                loss, terms = loss_fn.terms(logits, y_all[idx], rgb, x_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                ces.append(float(terms["ce"]))
            net.eval()
            with torch.no_grad():
                d = assimilation_distances(net.assimilate(x_all), x_all, loss_fn)
            print(
                f"| {init} | {alr:g} | {255 * d['grey_shift'].mean():.2f} | {255 * d['chroma'].mean():.2f} | "
                f"{d['glcm'].mean():.3f} | {sum(ces[-10:]) / 10:.3f} | {time.perf_counter() - t0:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
