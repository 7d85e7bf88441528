"""Textured synthetic batches and a small AssimilationNet for the trainer tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_assim.networks import AssimilationNet

SIZE = 40  # 2 x 2 GLCM windows of the default 20 pixels

OUTPUT_KEYS = {"image", "label", "pred", "loss", "loss_ce", "loss_glcm"}


def textured_dataset(n: int, seed: int = 0) -> list[dict]:
    """Class 0: smooth random blobs; class 1: the same with fine-grained noise (a texture difference)."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        smooth = F.avg_pool2d(torch.rand(1, 1, SIZE + 8, SIZE + 8, generator=gen), 9, 1)[0]
        smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
        if i % 2:
            smooth = 0.7 * smooth + 0.3 * torch.rand(1, SIZE, SIZE, generator=gen)
        items.append({"image": smooth.clamp(0, 1), "label": i % 2})
    return items


def textured_net(seed: int = 0) -> AssimilationNet:
    """An assimilated ResNet18 whose T starts away from the identity, so the GLCM term starts above 0."""
    torch.manual_seed(seed)
    net = AssimilationNet("resnet18", num_classes=2)
    with torch.no_grad():
        for p in net.texture.residual[-1].parameters():
            p.normal_(0.0, 0.2)
    return net
