"""Classification labels in any of the usual layouts, as one vector of class indices."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["as_class_indices"]


def as_class_indices(
    labels: Any, num_classes: int, batch_size: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """
    Class-index labels ``(B,)`` (``torch.long``) from ``(B,)`` or ``(B, 1)`` class indices (integer, or
    floating point holding whole numbers) or ``(B, num_classes)`` one-hot / class scores (their argmax).

    Args:
        labels: a tensor (a ``MetaTensor`` is read as a plain tensor), array or sequence.
        num_classes: the number of classes ``K``; indices must lie in ``[0, K - 1]``.
        batch_size: the expected ``B``; ``None`` accepts any.
        device: where the result goes; ``None`` keeps the labels' device.

    Raises:
        ValueError: another shape, non-whole or out-of-range indices.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.as_subclass(torch.Tensor).detach()  # MetaTensor -> plain tensor, no metadata
    else:
        labels = torch.as_tensor(labels)
    if device is not None:
        labels = labels.to(device)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim == 2 and labels.shape[1] == num_classes and num_classes > 1:
        labels = labels.argmax(dim=1)
    if labels.ndim != 1 or (batch_size is not None and labels.shape[0] != batch_size):
        expected = "B" if batch_size is None else f"B={batch_size}"
        raise ValueError(
            f"labels must be (B,), (B, 1) or one-hot (B, {num_classes}) for {expected}, "
            f"got shape {tuple(labels.shape)}."
        )
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ValueError("class-index labels must hold whole numbers.")
    labels = labels.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got {int(labels.min())}..{int(labels.max())}.")
    return labels
