"""
End-to-end tests of the MONAI bundles in ``bundles/`` (train -> evaluate -> inference, resume after a
kill, torchrun with gloo, TorchScript export, bad data), on tiny synthetic data sets written in each
modality's real folder layout and on a small subset of the real chest X-rays.

Runs go through ``python -m monai.bundle run`` in a subprocess (the command users type); a few go
through ``monai.bundle.run`` in one subprocess per bundle (the function that command calls), which
saves the ~10 s interpreter start-up per command on a 2-core CPU.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers.bundle_runs import (
    BUNDLES,
    PYTHON,
    REPO,
    TINY,
    TINY_EVAL,
    TINY_EVAL_KW,
    TINY_KW,
    bundle_cmd,
    bundle_env,
    copy_run,
    run_ok,
    tiny_dataset,
)

from monai_assim.data import MODALITIES
from monai_assim.handlers import AtomicCheckpointSaver, atomic_torch_save


def test_fire_is_installed():
    """``python -m monai.bundle`` needs the ``fire`` package (``pip install fire``; MONAI's [fire] extra)."""
    import importlib.util

    assert importlib.util.find_spec("fire") is not None, "install `fire`: python -m monai.bundle cannot run without it"


def test_generated_configs_match_templates():
    """The four bundles' configs are exactly the shared templates of bundles/common (no drift)."""
    from monai_assim.bundle.generate import generate

    assert generate(BUNDLES, check=True) == []
    for modality in MODALITIES:
        config = json.loads((BUNDLES / modality / "train.json").read_text())
        assert config["modality"] == modality and config["bundle_root"] == f"bundles/{modality}"


@pytest.mark.parametrize("modality", MODALITIES)
def test_metadata_required_fields(modality):
    """Every mandatory key of MONAI's bundle specification, and the (1, 224, 224) -> 2 classes format."""
    meta = json.loads((BUNDLES / modality / "metadata.json").read_text())
    required = (
        "version",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    )
    missing = [k for k in required if k not in meta]
    assert not missing, f"{modality}/metadata.json lacks {missing}"
    tensor_keys = (
        "type",
        "format",
        "modality",
        "num_channels",
        "spatial_shape",
        "dtype",
        "value_range",
        "is_patch_data",
        "channel_def",
    )
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    for spec in (image, pred):
        assert not [k for k in tensor_keys if k not in spec]
    assert (image["num_channels"], image["spatial_shape"], image["value_range"]) == (1, [224, 224], [0, 1])
    assert pred["num_channels"] == 2 and len(pred["channel_def"]) == 2
    assert pred["type"] == "logits", "the network returns logits"
    assert (BUNDLES / modality / "LICENSE").is_file() and (BUNDLES / modality / "README.md").is_file()
    assert "Apache License" in (BUNDLES / modality / "LICENSE").read_text()


def test_atomic_save_never_half_written(tmp_path):
    """A failing torch.save leaves the previous checkpoint intact and no temporary file behind."""
    path = tmp_path / "last.pt"
    atomic_torch_save({"a": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom in the middle of a write")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"a": torch.zeros(1000), "b": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # readable by the group like any torch.save


def test_best_saver_keeps_the_best(tmp_path):
    """The 'best' saver writes only on improvement and its state survives a state_dict round trip."""
    from types import SimpleNamespace

    net = torch.nn.Linear(2, 2)
    saver = AtomicCheckpointSaver(tmp_path, {"network": net}, filename="best.pt", key_metric_name="val_acc")
    for epoch, acc in ((1, 0.5), (2, 0.75), (3, 0.6)):
        with torch.no_grad():
            net.weight.fill_(epoch)
        saver(SimpleNamespace(state=SimpleNamespace(epoch=epoch, metrics={"val_acc": acc})))
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["val_acc"]) == (2, 0.75) and torch.all(ckpt["network"]["weight"] == 2)
    other = AtomicCheckpointSaver(tmp_path, {"network": net}, filename="best.pt", key_metric_name="val_acc")
    other.load_state_dict(saver.state_dict())
    assert (other.best_metric, other.best_epoch) == (0.75, 2)


@pytest.mark.slow
def test_chest_xray_train_evaluate_inference_cli(chest_xray_cli_run, tmp_path):
    """chest_xray through the literal CLI: train -> evaluate -> inference -> ckpt_export, outputs present.
    The training is the session's ``chest_xray_cli_run`` (the same command, trained once for the tests that need
    such a run)."""
    trained, log = chest_xray_cli_run
    out = copy_run(trained, tmp_path / "run")
    assert "DEMO DATA" not in log and not (out / "DEMO_DATA.txt").exists()
    for name in ("loss", "loss_ce", "loss_glcm"):
        assert f"{name}: " in log
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["demo_data"] is False and summary["epochs_completed"] == 1
    assert summary["settings"]["image_size"] == 32 and summary["settings"]["pretrained"] == "none"
    for f in ("checkpoints/best.pt", "checkpoints/last.pt", "datalists/splits.json", "datalists/test.csv"):
        assert (out / f).is_file(), f
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    run_ok(bundle_cmd("bundles/chest_xray/evaluate.json", "--output_dir", str(out), *TINY_EVAL))
    rows = list(csv.DictReader(open(out / "eval" / "robustness.csv")))
    assert [(r["attack"], float(r["eps"])) for r in rows if r["role"] == "attack"] == [("FGSM", 0.03)]
    assert (out / "eval" / "metrics.csv").is_file()

    run_ok(bundle_cmd("bundles/chest_xray/inference.json", "--output_dir", str(out), "--backbone", "mobilenet_v2"))
    test_images = [d["image"] for d in json.loads((out / "datalists" / "splits.json").read_text())["test"]]
    with open(out / "inference" / "predictions.csv", newline="") as f:
        preds = list(csv.DictReader(f))
    assert list(preds[0]) == ["file", "predicted_class", "predicted_index", "prob_normal", "prob_pneumonia"]
    assert sorted(r["file"] for r in preds) == sorted(test_images)
    probs = torch.tensor([[float(r["prob_normal"]), float(r["prob_pneumonia"])] for r in preds])
    assert torch.allclose(probs.sum(1), torch.ones(len(preds)), atol=1e-5)
    assert [int(r["predicted_index"]) for r in preds] == probs.argmax(1).tolist()

    # TorchScript export of the best checkpoint gives the same logits as the network it was saved from
    ts = tmp_path / "model.ts"
    run_ok(
        [
            PYTHON, "-m", "monai.bundle", "ckpt_export", "network_def",
            "--config_file", "bundles/chest_xray/inference.json", "--bundle_root", "bundles/chest_xray",
            "--meta_file", "bundles/chest_xray/metadata.json", "--ckpt_file", str(out / "checkpoints" / "best.pt"),
            "--key_in_ckpt", "network", "--filepath", str(ts), "--use_trace", "True",
            "--input_shape", "[1, 1, 32, 32]", "--output_dir", str(out), "--backbone", "mobilenet_v2",
        ]
    )  # fmt: skip
    from monai_assim.networks import AssimilationNet

    net = AssimilationNet("mobilenet_v2", num_classes=2, pretrained="none").eval()
    net.load_state_dict(torch.load(out / "checkpoints" / "best.pt", weights_only=True)["network"])
    scripted = torch.jit.load(str(ts)).eval()
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("modality", [m for m in MODALITIES if m != "chest_xray"])
def test_bundle_train_evaluate_inference(tmp_path, modality):
    """brain_mri, chest_ct, breast_ultrasound: train -> evaluate -> inference via monai.bundle.run."""
    data, out = tiny_dataset(tmp_path, modality), tmp_path / "run"
    b = f"bundles/{modality}"
    script = "\n".join(
        [
            "from monai.bundle import run",
            f"run(config_file='{b}/train.json', dataset_dir={str(data)!r}, output_dir={str(out)!r}, **{TINY_KW!r})",
            f"run(config_file='{b}/evaluate.json', output_dir={str(out)!r}, **{TINY_EVAL_KW!r})",
            f"run(config_file='{b}/inference.json', output_dir={str(out)!r}, backbone='mobilenet_v2', input={str(data)!r})",
        ]
    )
    run_ok([PYTHON, "-c", script])
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["modality"] == modality and summary["epochs_completed"] == 1 and not summary["demo_data"]
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "eval" / "robustness.json").is_file()
    with open(out / "inference" / "predictions.csv", newline="") as f:
        preds = list(csv.DictReader(f))
    # a folder input: every image, no BUSI mask, the run's class names
    n_images = len([p for p in data.rglob("*.*") if "_mask" not in p.name])
    assert len(preds) == n_images and not [r for r in preds if "_mask" in r["file"]]
    assert {r["predicted_class"] for r in preds} <= set(summary["class_names"])
    assert [k for k in preds[0] if k.startswith("prob_")] == [f"prob_{c}" for c in summary["class_names"]]


@pytest.mark.slow
def test_chest_xray_real_subset(tmp_path, chest_xray_dir):
    """A short run on a small subset of the real Kermany chest X-rays (8 images per class and split)."""
    out = tmp_path / "run"
    run_ok(
        bundle_cmd(
            "bundles/chest_xray/train.json", "--dataset_dir", str(chest_xray_dir), "--output_dir", str(out),
            "--max_per_class", "8", *TINY,
        )
    )  # fmt: skip
    splits = json.loads((out / "datalists" / "splits.json").read_text())
    assert splits["own_test_split"] is True
    assert all(str(chest_xray_dir) in d["image"] for s in ("train", "validation", "test") for d in splits[s])
    assert all("/test/" in d["image"] for d in splits["test"])
    assert {s: splits["counts"][s] for s in ("train", "test")} == {s: {"0": 8, "1": 8} for s in ("train", "test")}
    assert json.loads((out / "run_summary.json").read_text())["demo_data"] is False


@pytest.mark.slow
def test_demo_fallback_and_bundle_root_from_anywhere(tmp_path):
    """No data set: the synthetic demo set is generated and announced; --bundle_root works from another folder."""
    out = tmp_path / "run"
    log = run_ok(
        bundle_cmd(
            str(BUNDLES / "breast_ultrasound" / "train.json"), "--bundle_root", str(BUNDLES / "breast_ultrasound"),
            "--output_dir", str(out), "--demo_defaults#n_per_class", "6", "--demo_defaults#file_size", "32", *TINY,
        ),
        cwd=tmp_path,
    )  # fmt: skip
    assert "DEMO DATA" in log and "SYNTHETIC" in log
    assert "SYNTHETIC demo set" in (out / "DEMO_DATA.txt").read_text()
    assert json.loads((out / "run_summary.json").read_text())["demo_data"] is True
    assert (out / "demo_data" / "malignant").is_dir() and (out / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_resume_after_kill(tmp_path):
    """Kill a training run after its first epoch's checkpoint; --resume true finishes the remaining epochs."""
    data, out = tiny_dataset(tmp_path, "chest_xray", n=12), tmp_path / "run"
    args = ["--dataset_dir", str(data), "--output_dir", str(out), *TINY[:2], "--batch_size", "4",
            "--backbone", "mobilenet_v2", "--pretrained", "none"]  # fmt: skip
    last, epochs = out / "checkpoints" / "last.pt", 4
    proc = subprocess.Popen(
        bundle_cmd("bundles/chest_xray/train.json", *args, "--epochs", str(epochs)),
        cwd=REPO, env=bundle_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    loads, deadline = 0, time.time() + 180
    try:
        while proc.poll() is None and time.time() < deadline:
            if last.is_file():  # every read of the checkpoint while training writes it must see a whole file
                epoch = torch.load(last, weights_only=True)["epoch"]
                loads += 1
                if epoch >= 1:
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert loads >= 1, "no checkpoint appeared before the run ended"
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert 1 <= killed_at < epochs, "the run finished before it could be killed; make the epochs longer"

    log = run_ok(bundle_cmd("bundles/chest_xray/train.json", *args, "--epochs", str(epochs), "--resume", "True"))
    assert "Restored all variables" in log
    # the resumed process trains only the epochs after the checkpoint, not epoch 1 again
    assert f"Epoch: {killed_at + 1}/{epochs}, Iter: 1/" in log and f"Epoch: 1/{epochs}, Iter: 1/" not in log
    ckpt = torch.load(last, weights_only=True)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["resumed_from_epoch"] == killed_at and summary["epochs_completed"] == epochs
    # the trainer state (ignite keeps the iteration count) went on from the killed run's, not from 0
    iterations_per_epoch = summary["iterations_completed"] // epochs
    assert ckpt["epoch"] == epochs and ckpt["trainer"]["iteration"] == epochs * iterations_per_epoch
    assert not list((out / "checkpoints").glob(".*.tmp"))
    assert not (out / "run.lock").exists()  # the killed run's lock was taken over, and released at the end


@pytest.mark.slow
def test_torchrun_gloo_two_processes(tmp_path):
    """multi_gpu_train.json merged with train.json under torchrun, 2 CPU processes with gloo, one epoch."""
    data, out = tiny_dataset(tmp_path, "chest_ct"), tmp_path / "run"
    cmd = [
        PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", "29533", "-m", "monai.bundle",
        "run", "--config_file", "['bundles/chest_ct/train.json','bundles/chest_ct/multi_gpu_train.json']",
        "--dataset_dir", str(data), "--output_dir", str(out), *TINY,
    ]  # fmt: skip
    env = bundle_env()
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on the CPU also on a GPU machine (two ranks cannot share one GPU with NCCL)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["epochs_completed"] == 1
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert not [k for k in ckpt["network"] if k.startswith("module.")]  # saved unwrapped from DDP
    assert (
        len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    )  # train + validation writers, rank 0 only


def _make_bad(kind: str, root: Path) -> tuple[Path, str]:
    """A broken copy of a tiny data set and the path the error must name."""
    if kind == "missing folder":
        return root / "does_not_exist", str(root / "does_not_exist")
    data = tiny_dataset(root, "breast_ultrasound" if kind == "mask-only folder" else "chest_xray", n=4)
    if kind == "missing class folder":
        target = data / "train" / "PNEUMONIA"
        for p in target.iterdir():
            p.unlink()
        target.rmdir()
    elif kind == "empty class":
        target = data / "test" / "NORMAL"
        for p in target.iterdir():
            p.unlink()
    elif kind == "corrupt image":
        target = data / "train" / "NORMAL" / "NORMAL (2).jpeg"
        target.write_bytes(target.read_bytes()[:40])
    else:  # mask-only folder
        target = data / "malignant"
        for p in target.iterdir():
            if "_mask" not in p.name:
                p.unlink()
    return data, str(target)


@pytest.mark.parametrize(
    "kind", ["missing folder", "missing class folder", "empty class", "corrupt image", "mask-only folder"]
)
def test_bad_data_fails_before_training(tmp_path, kind):
    """Bad data -> a ValueError naming the path, raised while the run is set up, before any epoch."""
    from monai.bundle import ConfigWorkflow

    data, named = _make_bad(kind, tmp_path)
    modality = "breast_ultrasound" if kind == "mask-only folder" else "chest_xray"
    workflow = ConfigWorkflow(
        config_file=str(BUNDLES / modality / "train.json"),
        logging_file=False,
        workflow_type=None,
        bundle_root=str(BUNDLES / modality),
        dataset_dir=str(data),
        output_dir=str(tmp_path / "run"),
        image_size=32,
        backbone="mobilenet_v2",
        pretrained="none",
    )
    workflow.initialize()
    with pytest.raises(Exception) as info:
        workflow.run()
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    value_errors = [e for e in chain if isinstance(e, ValueError)]
    assert value_errors and named in str(value_errors[-1]), f"{kind}: {chain[-1]!r}"
    assert not (tmp_path / "run" / "checkpoints").exists()
