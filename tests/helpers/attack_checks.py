"""Loaders and a direct torchattacks reference for the robustness handler tests."""

from __future__ import annotations

import torch

from helpers.tiny_nets import synthetic_data

BATCH = 16


def tuple_loader(n: int = 32, seed: int = 2, label_fn=None):
    x, y = synthetic_data(n, seed=seed)
    labels = y if label_fn is None else label_fn(y)
    return [(x[i : i + BATCH], labels[i : i + BATCH]) for i in range(0, n, BATCH)], x, y


def direct_accuracy(net, x, y, make_attack, seed: int) -> float:
    """torchattacks called directly, batch i seeded with seed + i (the handler's documented rule)."""
    correct = 0
    for i in range(0, len(x), BATCH):
        torch.manual_seed(seed + i // BATCH)
        adv = make_attack()(x[i : i + BATCH], y[i : i + BATCH])
        with torch.no_grad():
            correct += int((net(adv).argmax(1) == y[i : i + BATCH]).sum())
    return correct / len(x)
