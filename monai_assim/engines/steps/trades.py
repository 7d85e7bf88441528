"""TRADES (Zhang et al. 2019): ``weight * (CE(clean) + beta * KL(p(x) || p(x_adv)))`` plus the GLCM term."""

from __future__ import annotations

import torch

from monai_assim.engines.adversarial_training import AdversarialKeys as K, check_attack, pgd_perturb, trades_kl
from monai_assim.engines.steps.base import StepContext, StepResult, accuracy
from monai_assim.utils import as_class_indices, eval_mode

__all__ = ["TradesStep"]


class TradesStep:
    """
    Args:
        eps: L-inf budget in [0, 1]. steps: attack iterations (step size ``2.5 * eps / steps``).
        beta: weight of the KL term, >= 0.

    The examples maximise the KL to the clean prediction of the model in eval mode; the update runs one
    train-mode forward of ``[x; x_adv]`` and stores the clean half as ``pred``. With the GLCM objective the
    KL term is weighted like the CE term (``alpha``).
    """

    mode = "trades"

    def __init__(self, eps: float, steps: int, beta: float = 6.0) -> None:
        self.eps, self.steps = check_attack(eps, steps)
        if float(beta) < 0:
            raise ValueError(f"trades_beta must be >= 0, got {beta!r}.")
        self.beta = float(beta)

    def __call__(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        batch = x.shape[0]
        with ctx.amp():
            with torch.no_grad(), eval_mode(ctx.network):
                clean = ctx.network(x)
            labels = as_class_indices(y, int(clean.shape[1]))
            x_adv = pgd_perturb(ctx.network, x, None, self.eps, self.steps, target_logits=clean)
            logits, rgb = ctx.forward(torch.cat([x, x_adv]))
        loss, terms = ctx.objective(logits[:batch], y, None if rgb is None else rgb[:batch], x)
        kl = trades_kl(logits[:batch].float(), logits[batch:].float())
        loss = loss + ctx.objective.weight * self.beta * kl
        terms[K.LOSS_ADV] = kl.detach()
        terms[K.ACC_CLEAN] = accuracy(clean, labels)
        terms[K.ACC_ADV] = accuracy(logits[batch:], labels)
        terms[K.IMAGE_ADV] = x_adv.detach()
        return logits[:batch], loss, terms
