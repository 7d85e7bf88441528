r"""
Adversarial training inside :class:`~monai_assim.engines.AssimilationTrainer`: PGD-AT, TRADES and the
one-step modes FGSM-RS and N-FGSM (the attacks and the KL here; each mode's whole step in
:mod:`monai_assim.engines.steps`).

Both craft L-inf adversarial examples against the WHOLE model (texture module T, colour module C, the
backbone's normalisation and the backbone: the network as the evaluator calls it) in [0, 1] pixel space,
with the step rule of evaluation (:func:`monai_assim.robustness.attacks.step_size`, :math:`\alpha = 2.5\,\epsilon/T`)
and a uniform random start in the eps-ball:

.. math::
    x^{0} = \Pi(x + U(-\epsilon, \epsilon)), \qquad
    x^{t+1} = \Pi\big(x^{t} + \alpha\,\mathrm{sign}\,\nabla_{x^t} L(x^t)\big),

with :math:`\Pi` the projection on :math:`\{|x' - x|_\infty \le \epsilon\} \cap [0, 1]`; for the CE loss
this is exactly ``torchattacks.PGD`` (same calls, so the same random start for the same seed).

- **PGD-AT** (Madry et al. 2018): :math:`L = \mathrm{CE}`; the first ``round(ratio * B)`` samples of
  each batch are replaced by their adversarial examples (``ratio = 1``: Madry's training), and the
  model is updated on that batch with the trainer's loss.
- **TRADES** (Zhang et al. 2019): the inner loss is :math:`\mathrm{KL}(p(x) \,\|\, p(x'))` with
  :math:`p(x)` the clean prediction of the model in eval mode (fixed during crafting), and the objective
  :math:`\mathrm{CE}(f(x), y) + \beta\, \mathrm{KL}(p(x) \,\|\, p(x_{adv}))` (:func:`trades_kl`).
- **FGSM-RS** (Wong, Rice & Kolter, ICLR 2020) and **N-FGSM** (de Jorge et al., NeurIPS 2022): one
  signed-gradient step of CE from a uniform random start (:func:`fgsm_perturb`), then trained on as
  PGD-AT's batch. FGSM-RS: start :math:`U(-\epsilon, \epsilon)`, step :math:`1.25\,\epsilon`, projected
  on the eps-ball (torchattacks' ``FFGSM``); N-FGSM: noise :math:`U(-2\epsilon, 2\epsilon)`, step
  :math:`\epsilon`, NOT projected on the eps-ball (only clipped to [0, 1]), so
  :math:`|x_{adv} - x|_\infty \le 3\epsilon`.

**Model mode.** The attack runs with the whole network in eval mode (:func:`eval_mode`): BatchNorm uses
and does NOT update its running statistics, dropout is off; every submodule's ``training`` flag is
restored afterwards. The update forward runs in train mode, once, on the batch the loss sees (PGD-AT: the
mixed batch; TRADES: clean and adversarial batches concatenated, one forward, so DistributedDataParallel
sees one forward per backward), so the running statistics after a PGD-AT step equal those after a plain
step on the adversarial batch.

**The GLCM term of the assimilated variant** compares the assimilated image of the batch the model is
trained on with the CLEAN image, :math:`\mathrm{GLCM}(C(T(x_{in})), x)`: the term asks C∘T to keep the
texture of the medical image, and the adversarial perturbation is not texture to keep (asking
:math:`C(T(x_{adv}))` to match :math:`x_{adv}` would reward T for passing the perturbation through). It
costs no extra forward, and without an attack (:math:`x_{in} = x`) it is the paper's term. For TRADES
the clean half of the batch gives :math:`\mathrm{GLCM}(C(T(x)), x)`, the paper's term itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils.enums import StrEnum
from torch import nn

from monai_assim.robustness.attacks import check_eps, step_size
from monai_assim.utils import eval_mode

__all__ = [
    "ADVERSARIAL_TRAINING_MODES",
    "ONE_STEP_MODES",
    "AdversarialKeys",
    "check_attack",
    "eval_mode",
    "fgsm_perturb",
    "pgd_perturb",
    "trades_kl",
]

#: ``none`` (plain training), ``pgd`` (PGD-AT, Madry et al.), ``trades`` (Zhang et al.), ``fgsm_rs`` (FGSM
#: from a random start, Wong, Rice & Kolter), ``n_fgsm`` (noisy FGSM, de Jorge et al.)
ADVERSARIAL_TRAINING_MODES = ("none", "pgd", "trades", "fgsm_rs", "n_fgsm")
#: the modes that craft their examples with one gradient step (prone to catastrophic overfitting)
ONE_STEP_MODES = ("fgsm_rs", "n_fgsm")


class AdversarialKeys(StrEnum):
    """Keys adversarial training adds to ``engine.state.output``."""

    LOSS_ADV = "loss_adv"  # PGD-AT, FGSM-RS, N-FGSM: CE on the adversarial samples; TRADES: KL(p(x) || p(x_adv))
    ACC_CLEAN = "acc_clean"  # clean accuracy: PGD-AT/one-step, the update forward's clean part; TRADES, eval mode
    ACC_ADV = "acc_adv"  # accuracy on the adversarial samples (the training forward)
    IMAGE_ADV = "image_adv"  # the batch the update was computed on (PGD-AT, one-step) / the adversarial batch (TRADES)


#: the logged adversarial-training scalars
AT_LOG_KEYS = (AdversarialKeys.LOSS_ADV, AdversarialKeys.ACC_CLEAN, AdversarialKeys.ACC_ADV)


def check_attack(eps: float, steps: int) -> tuple[float, int]:
    """``(eps, steps)`` checked: eps in [0, 1] (:func:`~monai_assim.robustness.attacks.check_eps`), steps a positive int."""
    eps = check_eps(eps)
    if isinstance(steps, bool) or int(steps) != steps or int(steps) < 1:
        raise ValueError(f"at_steps must be a positive int, got {steps!r}.")
    return eps, int(steps)


def trades_kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    r"""
    :math:`\frac{1}{B}\sum_i \sum_k p_{ik} (\log p_{ik} - \log q_{ik})`, :math:`p = \mathrm{softmax}(z_{clean})`,
    :math:`q = \mathrm{softmax}(z_{adv})`: TRADES' KL(p(x) || p(x_adv)), batch mean.

    Shapes:
        both ``(B, K)`` -> scalar.
    """
    log_p = F.log_softmax(logits_clean.float(), dim=1)
    log_q = F.log_softmax(logits_adv.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def pgd_perturb(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    eps: float,
    steps: int,
    alpha: float | None = None,
    target_logits: torch.Tensor | None = None,
    random_start: bool = True,
) -> torch.Tensor:
    """
    L-inf PGD on ``network`` (eval mode, flags restored) from a uniform random start, maximising CE
    (``labels``) or, with ``target_logits``, TRADES' :func:`trades_kl` (target fixed). Gradients are taken
    w.r.t. the input only; parameters' ``.grad`` are left untouched.

    Args:
        network: the whole model, ``(B, 1, H, W)`` on [0, 1] -> logits.
        images: ``(B, 1, H, W)`` on [0, 1].
        labels: ``(B,)`` class indices (CE), or None with ``target_logits``.
        eps: budget in [0, 1]. steps: iterations T. alpha: step size, default ``2.5 * eps / T``.
        target_logits: ``(B, K)`` clean logits for the TRADES inner maximisation.
        random_start: start at a uniform random point of the eps-ball (``Tensor.uniform_``, as torchattacks).

    Returns:
        adversarial images, detached, ``|x_adv - x|_inf <= eps``, on [0, 1].
    """
    eps = check_eps(eps)
    alpha = step_size(eps, steps) if alpha is None else float(alpha)
    images = images.detach()
    adv = images.clone()
    if random_start:
        adv = torch.clamp(adv + torch.empty_like(adv).uniform_(-eps, eps), 0, 1).detach()
    target = None if target_logits is None else target_logits.detach()
    with eval_mode(network), torch.enable_grad():
        for _ in range(int(steps)):
            adv.requires_grad_(True)
            logits = network(adv)
            if target is None:
                cost = F.cross_entropy(logits.float(), labels)
            else:
                cost = trades_kl(target, logits)
            grad = torch.autograd.grad(cost, adv)[0]
            adv = adv.detach() + alpha * grad.sign()
            delta = torch.clamp(adv - images, -eps, eps)
            adv = torch.clamp(images + delta, 0, 1).detach()
    return adv


def fgsm_perturb(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    alpha: float,
    noise: float,
    project: bool = True,
) -> torch.Tensor:
    r"""
    One signed-gradient step of CE on ``network`` (eval mode, flags restored) from a uniform random start:

    .. math::
        x^{0} = \mathrm{clip}_{[0,1]}(x + U(-\eta, \eta)), \qquad
        x_{adv} = P\big(x^{0} + \alpha\,\mathrm{sign}\,\nabla_{x^0} \mathrm{CE}(f(x^0), y)\big),

    with :math:`P` the projection on :math:`\{|x' - x|_\infty \le \epsilon\} \cap [0, 1]` (``project=True``)
    or the clip to [0, 1] alone (``project=False``). FGSM-RS is ``noise=eps, alpha=1.25 * eps, project=True``
    (one step of :func:`pgd_perturb` with that step size, and torchattacks' ``FFGSM``); N-FGSM is
    ``noise=2 * eps, alpha=eps, project=False``. The noise is drawn with ``Tensor.uniform_`` as in
    :func:`pgd_perturb`. Gradients are taken w.r.t. the input only.

    Args:
        network: the whole model, ``(B, 1, H, W)`` on [0, 1] -> logits.
        images: ``(B, 1, H, W)`` on [0, 1]. labels: ``(B,)`` class indices.
        eps: the budget of the projection, in [0, 1]. alpha: step size. noise: half-width of the start's noise.
        project: project on the eps-ball (else only clip to [0, 1]).

    Returns:
        adversarial images, detached, on [0, 1].
    """
    eps = check_eps(eps)
    images = images.detach()
    adv = images
    if noise > 0:
        adv = torch.clamp(images + torch.empty_like(images).uniform_(-float(noise), float(noise)), 0, 1)
    adv = adv.detach()
    with eval_mode(network), torch.enable_grad():
        adv.requires_grad_(True)
        cost = F.cross_entropy(network(adv).float(), labels)
        grad = torch.autograd.grad(cost, adv)[0]
    adv = adv.detach() + float(alpha) * grad.sign()
    if project:
        adv = images + torch.clamp(adv - images, -eps, eps)
    return torch.clamp(adv, 0, 1).detach()
