"""
The CUDA path, checked against the CPU path or against torchattacks on the same device: AMP in
AssimilationTrainer (float16 autocast with a GradScaler), the GLCM engine's scatters and chunking, the
GLCM loss's gradient, the robustness handler, and a short chest X-ray bundle run with
``--device cuda --amp True`` followed by an evaluation with attacks and inference.

Every test is marked ``cuda``: it skips without a CUDA device, and ``pytest --require-cuda`` (what
``benchmarks/gpu_check.py`` runs) makes a missing device an error instead.
"""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch
from helpers.attack_checks import BATCH, direct_accuracy, tuple_loader
from helpers.bundle_runs import bundle_cmd, run_ok, tiny_dataset
from helpers.textured import textured_dataset, textured_net
from helpers.tiny_nets import trained_tiny_net
from monai.data import DataLoader
from monai.engines.utils import IterationEvents

from monai_assim.engines import AssimilationTrainer
from monai_assim.glcm import SUPPORTED_FEATURES, glcm_features
from monai_assim.handlers import AdversarialRobustnessHandler
from monai_assim.losses import AssimilationLoss, GLCMLoss

pytestmark = pytest.mark.cuda


def _train(device: str, amp: bool, iterations: int = 2):
    """Train a textured assimilated ResNet18 for ``iterations`` iterations; returns (trainer, net, pred dtypes)."""
    net = textured_net(1).to(device)
    loader = DataLoader(textured_dataset(4 * iterations), batch_size=4)
    trainer = AssimilationTrainer(
        device=torch.device(device), max_epochs=1, train_data_loader=loader, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=AssimilationLoss(alpha=0.5),
        amp=amp, decollate=False,
    )  # fmt: skip
    dtypes = []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: dtypes.append(e.state.output["pred"].dtype))
    trainer.run()
    return trainer, net, dtypes


def test_trainer_amp_on_cuda_uses_float16_and_a_grad_scaler():
    """amp=True on CUDA: float16 autocast for the forward, a GradScaler, a float32 loss; the weights move."""
    before = copy.deepcopy(textured_net(1).state_dict())
    trainer, net, dtypes = _train("cuda", amp=True)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    assert dtypes == [torch.float16, torch.float16]
    out = trainer.state.output
    assert out["loss"].dtype == torch.float32 and out["loss"].is_cuda and torch.isfinite(out["loss"])
    assert float(out["loss_glcm"]) > 0
    after = net.state_dict()
    assert all(after[k].is_cuda for k in after)
    moved = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k].cpu())]
    assert moved, "no parameter changed: the scaled optimiser step was skipped every time"


def test_trainer_float32_on_cuda_matches_cpu():
    """Without AMP, the same two iterations give the same loss terms on CUDA as on the CPU."""
    results = {}
    for device in ("cpu", "cuda"):
        trainer, _, _ = _train(device, amp=False)
        assert trainer.scaler is None
        out = trainer.state.output
        results[device] = [float(out[k].detach()) for k in ("loss", "loss_ce", "loss_glcm")]
    assert results["cuda"] == pytest.approx(results["cpu"], rel=1e-3, abs=1e-5)


def test_glcm_features_on_cuda_match_cpu_across_chunks():
    """Hard and soft features of 12 images of 224 x 224 (several image chunks) agree on CUDA and the CPU."""
    x = torch.rand(12, 1, 224, 224, generator=torch.Generator().manual_seed(3))
    for soft in (False, True):
        cpu = glcm_features(x, features=SUPPORTED_FEATURES, soft=soft)
        gpu = glcm_features(x.cuda(), features=SUPPORTED_FEATURES, soft=soft)
        assert gpu.is_cuda and gpu.dtype == cpu.dtype
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_glcm_loss_and_gradient_on_cuda_match_cpu():
    """GLCMLoss forward + backward (RGB prediction, gray target) agree on CUDA and the CPU."""
    g = torch.Generator().manual_seed(4)
    pred, target = torch.rand(4, 3, 60, 60, generator=g), torch.rand(4, 1, 60, 60, generator=g)
    values, grads = {}, {}
    for device in ("cpu", "cuda"):
        p = pred.to(device).requires_grad_(True)
        loss = GLCMLoss()(p, target.to(device))
        loss.backward()
        values[device], grads[device] = loss.detach().cpu(), p.grad.cpu()
    torch.testing.assert_close(values["cuda"], values["cpu"], rtol=1e-4, atol=1e-6)
    scale = float(grads["cpu"].abs().max())
    assert scale > 0
    torch.testing.assert_close(grads["cuda"], grads["cpu"], rtol=1e-3, atol=1e-3 * scale)


def test_handler_on_cuda_equals_torchattacks_on_cuda():
    """The robustness handler on CUDA gives the accuracies of torchattacks called directly on CUDA."""
    import torchattacks
    from ignite.engine import Engine

    net = copy.deepcopy(trained_tiny_net()).cuda().eval()
    loader, x, y = tuple_loader()
    loader = [(a.cuda(), b.cuda()) for a, b in loader]
    eps = (2 / 255, 8 / 255)
    handler = AdversarialRobustnessHandler(
        net, attacks={"FGSM": {}, "PGD": {"steps": 5}}, eps=eps, seed=11, check_eps=None, progress=False
    )
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run(loader)
    m = engine.state.metrics
    x, y = x.cuda(), y.cuda()
    tol = 1.0 / len(x) + 1e-9  # one sample, for a gradient sign that cuDNN's reduction order may flip
    for e in eps:
        k = f"{round(e * 255, 4):g}"

        def fgsm(e=e):
            return torchattacks.FGSM(net, eps=e)

        def pgd(e=e):
            return torchattacks.PGD(net, eps=e, alpha=2.5 * e / 5, steps=5, random_start=True)

        assert abs(m[f"adv_FGSM_eps{k}_acc"] - direct_accuracy(net, x, y, fgsm, 11)) <= tol
        assert abs(m[f"adv_PGD_eps{k}_acc"] - direct_accuracy(net, x, y, pgd, 11)) <= tol
    assert len(x) % BATCH == 0


@pytest.mark.slow
def test_chest_xray_bundle_cuda_amp_train_evaluate_inference(tmp_path):
    """train.json with --device cuda --amp True (ResNet18, 64 px, 2 epochs), evaluate.json with attacks, inference."""
    data, out = tiny_dataset(tmp_path, "chest_xray", n=8), tmp_path / "run"
    cuda = ["--device", "cuda", "--amp", "True"]
    log = run_ok(
        bundle_cmd(
            "bundles/chest_xray/train.json", "--dataset_dir", str(data), "--output_dir", str(out), *cuda,
            "--image_size", "64", "--epochs", "2", "--batch_size", "8", "--backbone", "resnet18", "--pretrained", "none",
        )
    )  # fmt: skip
    for name in ("loss", "loss_ce", "loss_glcm"):
        assert f"{name}: " in log
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["settings"]["image_size"] == 64
    ckpt = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["network"].values() if v.is_floating_point())

    run_ok(
        bundle_cmd(
            "bundles/chest_xray/evaluate.json", "--output_dir", str(out), *cuda, "--backbone", "resnet18",
            "--attacks", "['FGSM','PGD']", "--eps", "[0.01,0.03]",
        )
    )  # fmt: skip
    with open(out / "eval" / "robustness.csv") as f:
        rows = list(csv.DictReader(f))
    attacked = sorted((r["attack"], float(r["eps"])) for r in rows if r["role"] == "attack")
    assert attacked == [("FGSM", 0.01), ("FGSM", 0.03), ("PGD", 0.01), ("PGD", 0.03)]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert (out / "eval" / "robustness.png").is_file() and (out / "eval" / "metrics.csv").is_file()

    run_ok(
        bundle_cmd(
            "bundles/chest_xray/inference.json", "--output_dir", str(out), "--device", "cuda", "--backbone", "resnet18"
        )
    )
    with open(out / "inference" / "predictions.csv", newline="") as f:
        preds = list(csv.DictReader(f))
    probs = torch.tensor([[float(r["prob_normal"]), float(r["prob_pneumonia"])] for r in preds])
    assert len(preds) > 0 and torch.allclose(probs.sum(1), torch.ones(len(preds)), atol=1e-4)
