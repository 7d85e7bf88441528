r"""
Schedules of adversarial training, per iteration: the eps warm-up (:class:`EpsWarmup`) and the learning-rate
schedule (:func:`lr_scheduler`, a ``torch.optim.lr_scheduler`` stepped by MONAI's ``LrScheduleHandler``).

**Eps warm-up.** Over the first ``E`` epochs of ``L`` iterations the training attack's budget rises
linearly from 0, then stays at ``eps``: iteration :math:`i` (1-based, across epochs) attacks with

.. math::
    \epsilon_i = \epsilon \cdot \min\!\big(1,\ i / (E L)\big),

so the last warm-up iteration already uses the full budget. A ramp is a common guard against the early
failures of adversarial training at a large eps (a collapse, catastrophic overfitting); it is not a cure,
which is why the guard still watches. The step size of every mode follows (``2.5 eps_i / T``,
``1.25 eps_i``, ...), as does N-FGSM's noise. The robust validation keeps its own eps.

**Learning-rate schedules** (``total`` = epochs x iterations per epoch; the scheduler is stepped after
every iteration, so iteration :math:`i` trains with :math:`\eta_0 f(i - 1)`, for every parameter group):

- ``none``: :math:`f = 1`;
- ``cosine``: :math:`f(t) = \tfrac{1}{2}(1 + \cos(\pi \min(t, \mathrm{total}) / \mathrm{total}))`, to 0;
- ``step``: :math:`f(t) = 0.1^{\#\{m \in M : t \ge m\}}`, milestones :math:`M` at 50% and 75% of the
  iterations (the piecewise decay of Madry et al. and Rice et al.).

Each is a ``torch.optim.lr_scheduler.LambdaLR`` of that closed form: its state (the step count and the
base learning rates) goes into the checkpoint and a resumed run continues it exactly; ``f`` itself is
rebuilt from the run's settings, so a run resumed with more ``--epochs`` follows the longer schedule from
the iteration it reached (``CosineAnnealingLR``'s recursive form would restore the old length and rise again
after it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["LR_SCHEDULES", "STEP_MILESTONES", "STEP_GAMMA", "EpsWarmup", "lr_factor", "lr_scheduler"]

#: the learning-rate schedules of :func:`lr_scheduler`
LR_SCHEDULES = ("none", "cosine", "step")
#: ``step``: where the learning rate drops, as fractions of the iterations, and by what factor
STEP_MILESTONES = (0.5, 0.75)
STEP_GAMMA = 0.1


def lr_factor(schedule: str, total_iterations: int) -> Callable[[int], float]:
    """``f(t)`` of ``schedule`` over ``total_iterations`` (see the module docstring), ``t`` the scheduler steps so far."""
    schedule = str(schedule).lower()
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}.")
    if isinstance(total_iterations, bool) or int(total_iterations) < 1:
        raise ValueError(f"total_iterations must be a positive int, got {total_iterations!r}.")
    total = int(total_iterations)
    if schedule == "cosine":
        return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
    if schedule == "step":
        milestones = [max(1, round(f * total)) for f in STEP_MILESTONES]
        return lambda t: STEP_GAMMA ** sum(t >= m for m in milestones)
    return lambda t: 1.0


def lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_iterations: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """
    The torch scheduler of ``schedule`` (:func:`lr_factor`) over ``total_iterations`` iterations, to step once
    per iteration (``monai.handlers.LrScheduleHandler(..., epoch_level=False)``); ``None`` for ``"none"`` (the
    learning rate stays as the optimiser has it: nothing to step or checkpoint).
    """
    factor = lr_factor(schedule, total_iterations)
    if str(schedule).lower() == "none":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EpsWarmup:
    """
    Handler of the trainer that sets its adversarial step's ``eps`` before every iteration: a linear ramp
    from 0 over the first ``warmup_epochs`` epochs (see the module docstring), then ``eps``.

    Args:
        warmup_epochs: epochs of the ramp (a float is allowed; 0: no warm-up, the handler does nothing).
        eps: the full budget in [0, 1]; default the trainer's step's ``eps`` when the handler is attached.
        epoch_length: iterations per epoch; default the engine's ``state.epoch_length``.

    The value used at each iteration is also left in ``engine.state.at_eps``. A trainer without an
    adversarial step (``adversarial_training="none"``) is left alone. Nothing is stored: a resumed run
    continues the ramp from its restored iteration.
    """

    def __init__(self, warmup_epochs: float = 0, eps: float | None = None, epoch_length: int | None = None) -> None:
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be a number >= 0, got {warmup_epochs!r}.")
        self.warmup_epochs = float(warmup_epochs)
        self.eps = None if eps is None else float(eps)
        self.epoch_length = epoch_length

    def attach(self, engine: Engine) -> None:
        step = getattr(engine, "step", None)
        if self.warmup_epochs <= 0 or not hasattr(step, "eps"):
            return
        if self.eps is None:
            self.eps = float(step.eps)
        if not engine.has_event_handler(self, Events.ITERATION_STARTED):
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def value(self, iteration: int, epoch_length: int) -> float:
        """The eps of (1-based) ``iteration`` with ``epoch_length`` iterations per epoch."""
        ramp = self.warmup_epochs * int(epoch_length)
        return float(self.eps) * min(1.0, int(iteration) / ramp) if ramp > 0 else float(self.eps)

    def __call__(self, engine: Engine) -> None:
        epoch_length = self.epoch_length or engine.state.epoch_length
        eps = self.value(engine.state.iteration, epoch_length)
        engine.step.eps = eps
        engine.state.at_eps = eps
