"""
Robust accuracy of a classifier under one L-inf attack, as an Ignite metric for a validation evaluator:
the measure that chooses the kept checkpoint under adversarial training (``docs/adversarial.md``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from torch import nn

from monai_assim.robustness.attacks import build_attack, canonical_attack_name, check_eps, run_attack
from monai_assim.utils import as_class_indices, eval_mode, output_tensor, unwrap_module

__all__ = ["ROBUST_VALIDATION_ATTACKS", "RobustAccuracy", "stratified_mask"]

#: the attacks :class:`RobustAccuracy` runs: PGD with a uniform random start (step ``2.5 * eps / steps``),
#: APGD on CE (torchattacks' ``APGD``, step-size free) and APGD on the margin loss (``APGDMargin``).
ROBUST_VALIDATION_ATTACKS = ("PGD", "APGD", "APGDMargin")


def stratified_mask(labels: torch.Tensor, taken: dict[int, int], per_class: int | None) -> torch.Tensor:
    """
    Which samples of a batch belong to the stratified subset "the first ``per_class`` images of each class
    in the order the loader gives them"; ``taken`` (class -> count so far) is updated in place.
    ``per_class=None`` keeps every sample. Shapes: labels ``(B,)`` -> bool ``(B,)``.
    """
    if per_class is None:
        return torch.ones(labels.shape[0], dtype=torch.bool, device=labels.device)
    keep = []
    for c in labels.tolist():
        keep.append(taken.get(c, 0) < per_class)
        if keep[-1]:
            taken[c] = taken.get(c, 0) + 1
    return torch.tensor(keep, dtype=torch.bool, device=labels.device)


class RobustAccuracy(Metric):
    r"""
    Accuracy on adversarial examples crafted by one L-inf attack through the WHOLE network in [0, 1] pixel
    space (T, C, the backbone's normalisation and the backbone: the model a user deploys), over the images
    of an engine's outputs, or over a fixed stratified subset of them.

    For every batch of the epoch the metric takes the images and labels from the engine output (a
    ``SupervisedEvaluator`` leaves them there, batched or decollated), keeps the first ``per_class`` images
    of each class in loader order (all with ``None``: the validation loader is not shuffled, so the subset
    is the same every epoch), crafts their adversarial examples with the network in eval mode (every
    submodule's ``training`` flag restored afterwards, BatchNorm statistics untouched) and counts the
    correct predictions on them.

    Seeding: batch ``i`` of the epoch on rank ``r`` of ``W`` processes is attacked with seed
    ``seed + i * W + r`` through :func:`monai_assim.robustness.attacks.run_attack`, inside ``torch.random.fork_rng``:
    two runs with one seed measure the same numbers, every epoch uses the same random starts (a paired
    comparison of epochs), and the caller's random stream, that of training, is left as it was, so
    turning the metric on does not change what a run learns.

    ``engine.state.metrics`` gets ``<name>`` (the robust accuracy) and ``<name>_seconds`` (the time this
    metric spent in the epoch, on this process).

    Args:
        network: the classifier, ``(B, 1, H, W)`` on [0, 1] -> logits (DDP / DataParallel /
            ``torch.compile`` wrappers are unwrapped for the attack).
        eps: L-inf budget in [0, 1] pixel units (``2 / 255``: two grey levels of an 8-bit image).
        attack: one of :data:`ROBUST_VALIDATION_ATTACKS` (case-insensitive).
        steps: attack iterations (PGD: step size ``2.5 * eps / steps``; APGD: its own step-size rule).
        restarts: APGD restarts (``n_restarts``); PGD takes 1.
        per_class: size per class of the stratified subset; ``None`` attacks every image.
        seed: base seed of the rule above.
        num_classes: number of classes (default ``network.num_classes``, else the logits' width).
        image_key, label_key: keys of the images and labels in the engine output.
        output_transform: applied to ``engine.state.output`` first (default: identity).
    """

    def __init__(
        self,
        network: nn.Module,
        eps: float = 2 / 255,
        attack: str = "PGD",
        steps: int = 10,
        restarts: int = 1,
        per_class: int | None = None,
        seed: int = 0,
        num_classes: int | None = None,
        image_key: str = "image",
        label_key: str = "label",
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        name = canonical_attack_name(attack)
        if name not in ROBUST_VALIDATION_ATTACKS:
            raise ValueError(f"attack must be one of {', '.join(ROBUST_VALIDATION_ATTACKS)}, got {attack!r}.")
        for key, value in (("steps", steps), ("restarts", restarts)):
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}.")
        if name == "PGD" and int(restarts) != 1:
            raise ValueError("PGD runs one random start; restarts apply to APGD and APGDMargin.")
        if per_class is not None and (isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1):
            raise ValueError(f"per_class must be a positive int or None, got {per_class!r}.")
        self.network = network
        self.eps = check_eps(eps)
        self.attack = name
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.per_class = None if per_class is None else int(per_class)
        self.seed = int(seed)
        self.num_classes = num_classes
        self.image_key = image_key
        self.label_key = label_key
        self._attack: Any = None
        super().__init__(output_transform=output_transform, device=device)

    def attack_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`monai_assim.robustness.attacks.build_attack` (besides the model and eps)."""
        if self.attack == "PGD":
            return {"steps": self.steps}
        kwargs: dict[str, Any] = {"steps": self.steps, "n_restarts": self.restarts}
        return {"loss": "ce", **kwargs} if self.attack == "APGD" else kwargs

    def describe(self) -> str:
        """E.g. ``"PGD-10 at 2/255"``, ``"APGD-CE-50 x 3 restarts at 2/255"``."""
        label = {"PGD": "PGD", "APGD": "APGD-CE", "APGDMargin": "APGD-margin"}[self.attack]
        restarts = f" x {self.restarts} restarts" if self.restarts > 1 else ""
        return f"{label}-{self.steps}{restarts} at {round(self.eps * 255, 4):g}/255"

    @reinit__is_reduced
    def reset(self) -> None:
        self._correct = torch.zeros((), dtype=torch.float64, device=self._device)
        self._num_examples = torch.zeros((), dtype=torch.float64, device=self._device)
        self._taken: dict[int, int] = {}
        self._batch = 0
        self.seconds = 0.0

    def _world(self) -> tuple[int, int]:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        start = time.perf_counter()
        net = unwrap_module(self.network)
        param = next(net.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = output_tensor(output, self.image_key).float().to(device)
        num_classes = self.num_classes or getattr(net, "num_classes", None)
        if num_classes is None:
            with torch.no_grad(), eval_mode(net):
                num_classes = int(net(x[:1]).shape[1])
        y = as_class_indices(output_tensor(output, self.label_key), int(num_classes), x.shape[0], device)
        keep = stratified_mask(y, self._taken, self.per_class)
        rank, world = self._world()
        seed = self.seed + self._batch * world + rank
        self._batch += 1
        if not bool(keep.any()):
            return
        x, y = x[keep], y[keep]
        with eval_mode(net):
            if self._attack is None or self._attack.model is not net:
                self._attack = build_attack(self.attack, net, self.eps, int(num_classes), **self.attack_kwargs())
            adv = run_attack(self._attack, x, y, seed)
            with torch.no_grad():
                pred = net(adv).argmax(dim=1)
        self._correct += float((pred == y).sum())
        self._num_examples += float(y.shape[0])
        self.seconds += time.perf_counter() - start

    def iteration_completed(self, engine: Any) -> None:
        """Pass the whole transformed output (a dict, or a decollated list of dicts) to :meth:`update`."""
        self.update(self._output_transform(engine.state.output))

    @sync_all_reduce("_correct", "_num_examples")
    def compute(self) -> float:
        if float(self._num_examples) == 0:
            raise NotComputableError("RobustAccuracy must have at least one example before it can be computed.")
        return float(self._correct) / float(self._num_examples)

    def completed(self, engine: Any, name: str) -> None:
        """Store the robust accuracy under ``name`` and this epoch's cost under ``<name>_seconds``."""
        super().completed(engine, name)
        engine.state.metrics[f"{name}_seconds"] = float(self.seconds)

    def summary(self) -> Mapping[str, Any]:
        """The attack as recorded in a run summary."""
        return {
            "attack": self.attack,
            "kwargs": self.attack_kwargs(),
            "eps": self.eps,
            "eps_255": round(self.eps * 255, 4),
            "per_class": self.per_class,
            "seed": self.seed,
            "description": self.describe(),
        }
