"""The one-step adversarial-training modes (FGSM-RS, N-FGSM): their crafting against direct implementations."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from helpers.tiny_nets import TinyNet, synthetic_data

from monai_assim.engines import (
    ADVERSARIAL_TRAINING_MODES,
    STEPS,
    AssimilationTrainer,
    assimilation_output_transform,
    fgsm_perturb,
    make_step,
)

EPS = 8 / 255


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Images on [0, 1] with rows at 0 and 1, so that the clip to [0, 1] matters."""
    x, y = synthetic_data(n, seed=2)
    x[:, :, 0, :], x[:, :, -1, :] = 0.0, 1.0
    return x, y


def _net() -> TinyNet:
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():  # BatchNorm statistics away from (0, 1): train and eval mode differ
        net.features[1].running_mean.fill_(0.3)
        net.features[1].running_var.fill_(2.0)
    return net


def _one_iteration(mode: str, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
    """One AssimilationTrainer iteration of ``mode`` on ``(x, y)`` with the random stream at ``seed``."""
    trainer = AssimilationTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[None],
        network=net,
        loss_function=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        decollate=False,
        adversarial_training=mode,
        at_eps=EPS,
    )
    torch.manual_seed(seed)
    return trainer._iteration(trainer, {"image": x, "label": y})


def fgsm_rs_reference(model, x, y, eps):
    """Wong, Rice & Kolter's FGSM-RS in their delta form: uniform start, one step of 1.25 eps, projection."""
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = torch.max(torch.min(delta, 1 - x), -x).requires_grad_(True)  # x + delta on [0, 1]
    grad = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)[0]
    delta = (delta.detach() + 1.25 * eps * grad.sign()).clamp(-eps, eps)
    return x + torch.max(torch.min(delta, 1 - x), -x)


def n_fgsm_reference(model, x, y, eps):
    """de Jorge et al.'s N-FGSM: noise U(-2 eps, 2 eps), one step of eps, no projection, clip to [0, 1]."""
    x0 = (x + torch.empty_like(x).uniform_(-2 * eps, 2 * eps)).clamp(0, 1).requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(model(x0), y), x0)[0]
    return (x0.detach() + eps * grad.sign()).clamp(0, 1)


@pytest.mark.parametrize("mode, reference", [("fgsm_rs", fgsm_rs_reference), ("n_fgsm", n_fgsm_reference)])
def test_one_step_crafting_equals_a_direct_implementation(mode, reference):
    """The trainer's adversarial batch is the reference's, with the same random draws, on the eval-mode model."""
    x, y = _batch()
    net = _net()
    before = copy.deepcopy(net).eval()  # the attack sees the weights before the update, BatchNorm in eval mode
    out = _one_iteration(mode, net, x, y, seed=7)
    torch.manual_seed(7)
    expected = reference(before, x, y, EPS)
    torch.testing.assert_close(out["image_adv"], expected, rtol=0, atol=1e-6)
    adv = out["image_adv"]
    assert adv.min() >= 0 and adv.max() <= 1 and net.training  # train mode restored after the attack
    reach = (adv - x).abs().max()
    if mode == "fgsm_rs":
        assert reach <= EPS + 1e-6
    else:  # not projected: the noise and the step reach beyond eps (up to 3 eps)
        assert EPS + 1e-3 < reach <= 3 * EPS + 1e-6
    # the update was computed on the adversarial batch: PGD-AT's logged terms
    logged = {"loss", "loss_ce", "loss_glcm", "loss_adv", "acc_adv"}  # ratio 1: no clean sample to log
    assert set(assimilation_output_transform(out)) == logged
    with torch.no_grad():
        assert float(out["loss_adv"]) == pytest.approx(float(F.cross_entropy(out["pred"], y)), rel=1e-5)
    # another seed, another start: the draws are the step's own
    assert not torch.equal(_one_iteration(mode, _net(), x, y, seed=8)["image_adv"], adv)


def test_fgsm_rs_is_one_torchattacks_pgd_step_of_one_and_a_quarter_eps():
    """FGSM-RS = torchattacks' PGD with one step of 1.25 eps from its random start (what its FFGSM computes)."""
    x, y = _batch()
    net = _net().eval()
    torch.manual_seed(3)
    ours = fgsm_perturb(net, x, y, EPS, alpha=1.25 * EPS, noise=EPS, project=True)
    torch.manual_seed(3)
    direct = torchattacks.PGD(net, eps=EPS, alpha=1.25 * EPS, steps=1, random_start=True)(x, y)
    assert torch.equal(ours, direct)


def test_the_one_step_modes_are_registered():
    assert set(STEPS) == set(ADVERSARIAL_TRAINING_MODES) >= {"fgsm_rs", "n_fgsm"}
    step = make_step("N_FGSM", eps=EPS, steps=3, ratio=0.5)
    assert step.mode == "n_fgsm" and step.eps == EPS and step.ratio == 0.5 and step.noise_factor == 2.0
    assert make_step("fgsm_rs", eps=EPS).step_factor == 1.25
    with pytest.raises(ValueError, match="at_ratio"):
        make_step("fgsm_rs", eps=EPS, ratio=0.0)
