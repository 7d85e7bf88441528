"""FGSM-RS (Wong, Rice & Kolter, ICLR 2020): PGD-AT's step with one FGSM step from a uniform random start."""

from __future__ import annotations

import torch

from monai_assim.engines.adversarial_training import fgsm_perturb
from monai_assim.engines.steps.pgd import PGDStep

__all__ = ["FGSMRSStep"]


class FGSMRSStep(PGDStep):
    """
    Args:
        eps: L-inf budget in [0, 1]. ratio: fraction of each batch replaced by adversarial examples, in (0, 1].

    The examples: start ``x + U(-eps, eps)`` clipped to [0, 1], one signed-gradient step of CE of size
    ``1.25 * eps``, projected back on the eps-ball and [0, 1] (torchattacks' ``FFGSM`` with
    ``alpha = 1.25 * eps``); the rest of the step is :class:`PGDStep`'s (two passes a step instead of k + 1).
    Prone to catastrophic overfitting at large eps (:class:`~monai_assim.engines.CatastrophicOverfittingGuard`).
    """

    mode = "fgsm_rs"
    #: step size in units of eps (Wong et al.)
    step_factor = 1.25
    #: half-width of the random start in units of eps
    noise_factor = 1.0
    #: project the example back on the eps-ball
    project = True

    def __init__(self, eps: float, ratio: float = 1.0) -> None:
        super().__init__(eps, 1, ratio)

    def perturb(self, network: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        eps = self.eps
        return fgsm_perturb(
            network, x, labels, eps, self.step_factor * eps, self.noise_factor * eps, project=self.project
        )
