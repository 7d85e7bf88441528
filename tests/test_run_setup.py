"""
RunSetup before training: the checks of a run's inputs in the order that names the real problem, resume
against the recorded settings (conflicts, defaults, history), nothing written until the inputs are known
good, failure marking, the end of a run with its next steps; and the readable end of a bundle command that
fails on a user error.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.run_setup import BUNDLE, DEFAULTS, REPO, TINY_SETTINGS, setup

from monai_assim.bundle import RunSetup
from monai_assim.errors import MissingInputError, UserInputError


@pytest.fixture
def run(tmp_path, tiny_chest_xray) -> Path:
    """A run folder as a first session leaves it: started with mean/std 0.5 and image_size 32, last.pt of epoch 1."""
    out = tmp_path / "run"
    first = setup(out, tiny_chest_xray, mean=0.5, std=0.5)
    first.start()
    first.release_folder()  # the first session's process has ended
    (out / "checkpoints").mkdir()
    torch.save({"epoch": 1}, out / "checkpoints" / "last.pt")
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


# ----------------------------------------------------------------------------------------------- resume
def test_resume_takes_recorded_settings_and_names_conflicts(run, tiny_chest_xray):
    before = _digest(run)
    with pytest.raises(UserInputError) as err:
        setup(run, tiny_chest_xray, resume=True, image_size=64, epochs=3)
    message = str(err.value)
    assert "image_size: the run recorded 32, this command gives 64" in message and "--resume_force" in message
    assert "epochs" not in message.split("\n")[0]  # epochs may change on resume
    with pytest.raises(UserInputError, match=r"mean: the run recorded 0.5, this command gives 0.2"):
        setup(run, tiny_chest_xray, resume=True, mean=0.2)
    with pytest.raises(UserInputError, match=r"seed: the run recorded 0, this command gives 1"):
        RunSetup(BUNDLE, "chest_xray", run, tiny_chest_xray, TINY_SETTINGS, DEFAULTS, seed=1, resume=True)
    assert _digest(run) == before  # a refused resume leaves the run's files as they were

    # unset ("auto", mean/std None) settings are the recorded ones, not the bundle's defaults
    resumed = setup(run, tiny_chest_xray, resume=True, image_size="auto", epochs=3, pretrained="auto")
    assert resumed.settings["image_size"] == 32 and resumed.settings["pretrained"] == "none"
    assert (resumed.settings["mean"], resumed.settings["std"]) == (0.5, 0.5)
    assert resumed.changed_on_resume == {"epochs": {"recorded": 1, "new": 3}}
    resumed.start()
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["settings"]["epochs"] == 3 and summary["resumed_from_epoch"] == 1
    assert [h["settings"]["epochs"] for h in summary["history"]] == [1]
    assert summary["history"][0]["checkpoint_epoch"] == 1 and summary["history"][0]["status"] == "running"


def test_resume_force_records_the_change(run, tiny_chest_xray):
    forced = setup(run, tiny_chest_xray, resume=True, resume_force=True, image_size=64)
    assert forced.settings["image_size"] == 64
    forced.start()
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["changed_on_resume"]["image_size"] == {"recorded": 32, "new": 64} and summary["resume_forced"]
    assert summary["history"][0]["settings"]["image_size"] == 32


def test_resume_refuses_changed_data_set(run, tiny_chest_xray):
    extra = tiny_chest_xray / "train" / "NORMAL" / "extra.jpeg"
    extra.write_bytes((tiny_chest_xray / "train" / "NORMAL" / "NORMAL (1).jpeg").read_bytes())
    resumed = setup(run, tiny_chest_xray, resume=True)
    with pytest.raises(UserInputError, match=r"split lists .* differ"):
        _ = resumed.datalists


# ------------------------------------------------------------------------------------ nothing half-made
def test_nothing_written_until_start(tmp_path, tiny_chest_xray, monkeypatch):
    out = tmp_path / "fresh"
    # ImageNet weights neither cached nor downloadable: refused while setting up, not when the network is built
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(MissingInputError, match=r"ImageNet weights for mobilenet_v2 .* not cached"):
        setup(out, tiny_chest_xray, pretrained="imagenet")
    for bad, match in (
        ({"backbone": "resnet99"}, "unknown backbone 'resnet99'"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ({"pretrained": str(tmp_path / "none.pt")}, "does not exist"),
    ):
        with pytest.raises(UserInputError, match=match):
            setup(out, tiny_chest_xray, **bad)
    with pytest.raises(MissingInputError, match="does not exist"):
        _ = setup(out, tmp_path / "no_data").datalists
    good = setup(out, tiny_chest_xray)
    assert len(good.datalists["train"]) > 0
    assert not out.exists()  # validated and split, still nothing on disk
    good.start()
    assert (out / "datalists" / "splits.json").is_file()
    assert json.loads((out / "run_summary.json").read_text())["status"] == "running"


def test_run_marks_failure(tmp_path, tiny_chest_xray):
    class Failing:
        def run(self):
            raise RuntimeError("out of memory in epoch 1")

    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        setup(out, tiny_chest_xray).run(Failing())
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "failed" and "out of memory in epoch 1" in summary["error"]


def test_resume_without_checkpoint(tmp_path, tiny_chest_xray):
    with pytest.raises(MissingInputError, match="no last checkpoint") as err:
        setup(tmp_path / "run", tiny_chest_xray, resume=True)
    assert isinstance(err.value, FileNotFoundError)
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------------------------------------- readable errors
def _bundle(args: list[str], env_extra: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MONAI_ASSIM_DEBUG"}
    env.update(OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/chest_xray/train.json", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _last_lines(text: str, n: int = 5) -> str:
    return "\n".join([line for line in text.splitlines() if line.strip()][-n:])


def _bad_case(kind: str, tmp_path: Path, data: Path) -> tuple[list[str], list[str], dict]:
    """Arguments, the texts the end of stderr must show, extra environment."""
    tiny = ["--image_size", "32", "--epochs", "1", "--backbone", "mobilenet_v2", "--pretrained", "none"]
    if kind == "missing data set":
        return ["--dataset_dir", str(tmp_path / "nowhere"), *tiny], [f"{tmp_path / 'nowhere'} does not exist"], {}
    if kind == "corrupt images":
        bad = sorted((data / "train" / "NORMAL").glob("*.jpeg"))[:2]
        for p in bad:
            p.write_bytes(p.read_bytes()[:40])
        return ["--dataset_dir", str(data), *tiny], [f"corrupt or unreadable image: {p}" for p in bad], {}
    if kind == "unknown backbone":
        return ["--dataset_dir", str(data), *tiny, "--backbone", "resnet99"], ["unknown backbone 'resnet99'"], {}
    if kind == "alpha out of range":
        return ["--dataset_dir", str(data), *tiny, "--alpha", "1.5"], [r"alpha must be in [0, 1], got 1.5"], {}
    # offline: an empty torch.hub cache and an unreachable proxy
    proxy = "http://127.0.0.1:9"
    env = {"TORCH_HOME": str(tmp_path / "hub"), "https_proxy": proxy, "HTTPS_PROXY": proxy}
    args = ["--dataset_dir", str(data), *tiny, "--pretrained", "imagenet"]
    return args, ["ImageNet weights for mobilenet_v2", "--pretrained none"], env


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["missing data set", "corrupt images", "unknown backbone", "alpha out of range", "offline imagenet"]
)
def test_user_error_ends_stderr_with_message(tmp_path, tiny_chest_xray, kind):
    """The last lines of stderr are the project's message and hint; the traceback is in the log file named."""
    args, expected, env = _bad_case(kind, tmp_path, tiny_chest_xray)
    out = tmp_path / "run"
    env["MONAI_ASSIM_LOG_DIR"] = str(tmp_path / "logs")
    proc = _bundle([*args, "--output_dir", str(out)], env)
    tail = _last_lines(proc.stderr, 5 + (len(expected) if kind == "corrupt images" else 0))
    assert proc.returncode != 0
    for text in expected:
        assert text in tail, f"{kind}: {text!r} not in the last lines of stderr:\n{proc.stderr[-3000:]}"
    # MONAI wraps the error in "Failed to evaluate ConfigExpression" / "Failed to instantiate component"
    assert "Hint: " in tail and "Traceback" not in proc.stderr and "Failed to " not in proc.stderr
    logs = list((tmp_path / "logs").glob("error_*.log"))
    assert len(logs) == 1 and str(logs[0]) in proc.stderr
    log = logs[0].read_text()
    assert "Traceback" in log and "Failed to " in log and expected[0] in log
    assert not out.exists(), f"{kind}: a failed fresh run left {sorted(out.rglob('*'))}"


@pytest.mark.slow
def test_debug_prints_traceback(tmp_path):
    """MONAI_ASSIM_DEBUG=1 or --debug True: the full traceback, and still the message at the end."""
    missing = str(tmp_path / "nowhere")
    base = ["--dataset_dir", missing, "--output_dir", str(tmp_path / "run"), "--pretrained", "none"]
    for args, env in ((base, {"MONAI_ASSIM_DEBUG": "1"}), ([*base, "--debug", "True"], {})):
        proc = _bundle(args, {**env, "MONAI_ASSIM_LOG_DIR": str(tmp_path / "logs")})
        assert proc.returncode != 0 and "Traceback" in proc.stderr and "Failed to " in proc.stderr
        assert f"{missing} does not exist" in _last_lines(proc.stderr)


def test_excepthook_unit(tmp_path, monkeypatch, capsys):
    """The hook: a wrapped UserInputError -> log file + message and hint last; anything else -> previous hook."""
    from monai_assim import errors

    monkeypatch.setenv(errors.LOG_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    passed_on = []
    hook = errors._hook(lambda *exc: passed_on.append(exc))
    try:
        raise KeyError("a bug, not a user error")
    except KeyError as e:
        hook(type(e), e, e.__traceback__)
    assert len(passed_on) == 1 and capsys.readouterr().err == ""
    try:
        try:
            raise errors.UserInputError("alpha must be in [0, 1], got 2.0.", "pass --alpha 0.99.")
        except ValueError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression") from inner
    except RuntimeError as e:
        hook(type(e), e, e.__traceback__)
    err = capsys.readouterr().err
    assert len(passed_on) == 1 and err.rstrip().endswith("alpha must be in [0, 1], got 2.0.\nHint: pass --alpha 0.99.")
    (log,) = tmp_path.glob("error_*.log")
    assert str(log) in err and "Failed to evaluate ConfigExpression" in log.read_text()


def test_no_trained_run_is_a_user_error(tmp_path):
    """evaluate.json / inference.json on a folder without a run: a MissingInputError with the hint to train."""
    from monai_assim.bundle import checkpoint_path, load_run_summary

    for call in (lambda: load_run_summary(tmp_path), lambda: checkpoint_path(tmp_path, "best")):
        with pytest.raises(MissingInputError, match="holds no finished training run") as err:
            call()
        assert isinstance(err.value, FileNotFoundError) and "train first" in err.value.hint


# ------------------------------------------------------------------------------------------- checkpoint selection
@pytest.mark.parametrize(
    "given, expected",
    [
        ({}, ("clean", 2.0, False)),  # no adversarial training: clean selection, no robust validation
        ({"adversarial_training": "pgd", "at_eps": 4}, ("robust", 4.0, True)),
        ({"adversarial_training": "trades", "select_by": "clean"}, ("clean", 2.0, True)),
        ({"adversarial_training": "fgsm_rs", "at_eps": 8}, ("robust", 8.0, True)),
        ({"adversarial_training": "n_fgsm"}, ("robust", 2.0, True)),
        ({"select_by": "robust", "val_robust_eps": 1}, ("robust", 1.0, True)),
    ],
)
def test_selection_settings_follow_adversarial_training(tmp_path, tiny_chest_xray, given, expected):
    rs = setup(tmp_path / "run", tiny_chest_xray, **given)
    assert (rs.settings["select_by"], rs.settings["val_robust_eps"], rs.robust_validation) == expected
    assert rs.settings["val_robust_attack"] == "PGD" and rs.settings["val_robust_steps"] == 10
    assert rs.other_checkpoint[0] == ("best_clean.pt" if expected[0] == "robust" else "best_robust.pt")
    selection = rs.selection()
    assert selection["metric"] == ("val_robust_acc" if expected[0] == "robust" else "val_acc")
    assert ("robust_validation" in selection) == expected[2]


@pytest.mark.parametrize(
    "given, match",
    [
        ({"select_by": "adversarial"}, "select_by must be one of"),
        ({"val_robust_eps": 300}, "val_robust_eps"),
        ({"val_robust_attack": "FGSM"}, "val_robust_attack"),
        ({"val_robust_steps": 0}, "val_robust_steps"),
        ({"val_robust_per_class": -1}, "val_robust_per_class"),
    ],
)
def test_selection_settings_errors(tmp_path, tiny_chest_xray, given, match):
    with pytest.raises(UserInputError, match=match):
        setup(tmp_path / "run", tiny_chest_xray, **given)


def test_selection_settings_aliases(tmp_path, tiny_chest_xray):
    rs = setup(
        tmp_path / "run", tiny_chest_xray, val_robust_attack="apgd-ce", val_robust_per_class=25, select_by="Robust"
    )
    assert (rs.settings["val_robust_attack"], rs.settings["val_robust_per_class"], rs.settings["select_by"]) == (
        "APGD",
        25,
        "robust",
    )


def test_resume_keeps_the_epoch_records_up_to_the_checkpoint(tmp_path, tiny_chest_xray):
    out = tmp_path / "run"
    first = setup(out, tiny_chest_xray, adversarial_training="pgd")
    first.start()
    for epoch in (1, 2):  # epoch 2 validated, then the process was killed before last.pt of epoch 2
        first.record_epoch({"epoch": epoch, "val_acc": 0.5 + epoch / 10, "val_robust_acc": 0.1})
    assert [e["epoch"] for e in json.loads((out / "run_summary.json").read_text())["epochs"]] == [1, 2]
    first.release_folder()  # the killed process no longer holds the folder
    (out / "checkpoints").mkdir()
    torch.save({"epoch": 1}, out / "checkpoints" / "last.pt")
    resumed = setup(out, tiny_chest_xray, resume=True)
    assert resumed.settings["select_by"] == "robust" and [e["epoch"] for e in resumed.epochs] == [1]
    resumed.start()
    assert [e["epoch"] for e in json.loads((out / "run_summary.json").read_text())["epochs"]] == [1]
    resumed.record_epoch({"epoch": 2, "val_acc": 0.9, "val_robust_acc": 0.2})
    summary = json.loads((out / "run_summary.json").read_text())
    assert [(e["epoch"], e["val_acc"]) for e in summary["epochs"]] == [(1, 0.6), (2, 0.9)]


# ---------------------------------------------------------------------------- check order, end of a run
def test_data_path_error_comes_before_missing_weights(tmp_path, tiny_chest_xray, monkeypatch):
    """A typo in --dataset_dir with --pretrained imagenet offline: the data error, not 'download the weights'."""
    import monai_assim.networks

    def no_weights(name):
        raise MissingInputError(f"ImageNet weights for {name} are not cached and could not be downloaded.")

    monkeypatch.setattr(monai_assim.networks, "imagenet_weights_file", no_weights)
    typo = tmp_path / "dta"
    with pytest.raises(MissingInputError, match=rf"data set folder {typo} does not exist"):
        setup(tmp_path / "run", typo, pretrained="imagenet")
    # a layout problem is a data problem too
    (tiny_chest_xray / "test" / "NORMAL").rename(tiny_chest_xray / "test" / "NORMALS")
    with pytest.raises(UserInputError, match="missing class folder"):
        setup(tmp_path / "run", tiny_chest_xray, pretrained="imagenet")
    assert not (tmp_path / "run").exists()


def test_training_ends_with_next_steps(tmp_path, tiny_chest_xray, caplog):
    """The end of a run: its folder, its best metric, and the evaluate / inference / export commands for it."""
    from types import SimpleNamespace

    out = tmp_path / "run"
    rs = setup(out, tiny_chest_xray, epochs=3)
    rs.start()
    rs.record_epoch({"epoch": 2, "val_acc": 0.95, "val_select": 0.95})
    trainer = SimpleNamespace(state=SimpleNamespace(epoch=3, iteration=30, max_epochs=3))
    with caplog.at_level("INFO", logger="monai_assim.bundle"):
        rs.finish(trainer, SimpleNamespace(best_epoch=2, best_metric=0.95))
    text = caplog.text
    assert "training finished: 3 epochs" in text and f"run folder: {out}" in text
    assert "best val_acc: 0.9500 (epoch 2, checkpoints/best.pt" in text
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "chest_xray"
    for config in ("evaluate.json", "inference.json"):
        assert f"--config_file {bundle}/{config} --output_dir {out}" in text or (
            f"--config_file bundles/chest_xray/{config} --output_dir {out}" in text
        )
    assert f"python -m monai_assim.bundle export {out} exports/run" in text
    assert not rs.lock.held  # the folder is released at the end
