"""A tiny CNN trained once per session on separable synthetic data, for the attack and evaluation tests."""

from __future__ import annotations

import functools

import torch

SIZE = 16


class TinyNet(torch.nn.Module):
    """(B, 1, 16, 16) on [0, 1] -> logits; normalisation inside, BatchNorm so mode handling matters."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(),
            torch.nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - 0.5) / 0.25)


def synthetic_data(n: int, num_classes: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable images on [0, 1]: class k has a brighter k-th vertical band (contrast 0.04) plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = 0.45 + 0.03 * torch.randn(n, 1, SIZE, SIZE, generator=g)
    width = SIZE // num_classes
    for k in range(num_classes):
        images[labels == k, :, :, k * width : (k + 1) * width] += 0.04
    return images.clamp(0, 1), labels


@functools.cache
def trained_tiny_net(num_classes: int = 2) -> TinyNet:
    """A TinyNet trained for a few seconds on :func:`synthetic_data` (clean accuracy ~1)."""
    torch.manual_seed(0)
    net = TinyNet(num_classes)
    x, y = synthetic_data(128, num_classes, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()
