"""PGD-AT (Madry et al. 2018): train on a batch whose first ``round(ratio * B)`` samples are adversarial."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_assim.engines.adversarial_training import AdversarialKeys as K, check_attack, pgd_perturb
from monai_assim.engines.steps.base import StepContext, StepResult, accuracy, class_indices

__all__ = ["PGDStep"]


class PGDStep:
    """
    Args:
        eps: L-inf budget in [0, 1]. steps: attack iterations (step size ``2.5 * eps / steps``).
        ratio: fraction of each batch replaced by adversarial examples, in (0, 1] (at least one sample).

    The objective (with the GLCM term against the CLEAN image) is that of the mixed batch. No forward is
    spent on logging: ``acc_clean`` is the training forward's accuracy on the clean samples of a mixed batch
    (``ratio < 1``) and is not logged when every sample is adversarial. A subclass changes the attack alone by overriding
    :meth:`perturb` (the one-step modes). ``eps`` may be changed between iterations (the eps warm-up,
    :class:`~monai_assim.engines.EpsWarmup`); the step size follows it.
    """

    mode = "pgd"

    def __init__(self, eps: float, steps: int, ratio: float = 1.0) -> None:
        self.eps, self.steps = check_attack(eps, steps)
        if not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"at_ratio must lie in (0, 1], got {ratio!r}.")
        self.ratio = float(ratio)

    def perturb(self, network: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The adversarial examples of ``x`` (eval mode, whole model): PGD with a random start."""
        return pgd_perturb(network, x, labels, self.eps, self.steps)

    def __call__(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        batch = x.shape[0]
        n_adv = min(batch, max(1, int(round(self.ratio * batch))))
        labels = class_indices(ctx.network, y)
        with ctx.amp():
            adv = self.perturb(ctx.network, x[:n_adv], labels[:n_adv])
            x_in = torch.cat([adv, x[n_adv:]]) if n_adv < batch else adv
            logits, rgb = ctx.forward(x_in)
        loss, terms = ctx.objective(logits, y, rgb, x)
        adv_logits = logits[:n_adv].detach().float()
        terms[K.LOSS_ADV] = F.cross_entropy(adv_logits, labels[:n_adv])
        if n_adv < batch:
            terms[K.ACC_CLEAN] = accuracy(logits[n_adv:], labels[n_adv:])
        terms[K.ACC_ADV] = accuracy(adv_logits, labels[:n_adv])
        terms[K.IMAGE_ADV] = x_in.detach()
        return logits, loss, terms
