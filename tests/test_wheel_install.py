"""
A wheel built from the repository, installed in a fresh virtual environment, works without the checkout:
it finds its bundle templates (package data), runs a one-arm study (which trains and evaluates the installed
bundle) and exports the study's run.

The fresh environment gets the dependencies (torch, MONAI, ...) from the test's own environment through a
``.pth`` line, so nothing is downloaded; the repository itself is not importable there (no PYTHONPATH, a
temporary working directory), which the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from monai_assim.bundle.templates import PACKAGED_BUNDLES

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-6000:]}"
    return out


@pytest.mark.slow
def test_wheel_exports_a_run_and_runs_a_study(tmp_path):
    pytest.importorskip("setuptools")
    outer = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # build from a copy of what a wheel is made of, so that the build leaves nothing in the checkout
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    shutil.copytree(REPO / "monai_assim", source / "monai_assim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bundles", source / "bundles", ignore=shutil.ignore_patterns("runs", "data"))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        cwd=tmp_path,
        env=outer,
    )
    (wheel,) = (tmp_path / "dist").glob("monai_assim-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, outer).strip()
    )
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        tmp_path,
        outer,
    )
    # the dependencies, from this environment (its editable monai_assim, if any, is not seen: a .pth path line
    # adds a folder to sys.path without running the .pth files inside it)
    (purelib / "deps.pth").write_text(str(Path(sysconfig.get_paths()["purelib"]).resolve()) + "\n")

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in outer.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    # where the fresh environment imports monai_assim from (found without importing it: the import takes torch's
    # start-up); that its bundles_dir() gives the installed templates, the study's run below shows
    where = _run([str(python), "-c", "import importlib.util; print(importlib.util.find_spec('monai_assim').origin)"],
                 work, env)  # fmt: skip
    package = Path(where.strip()).resolve()
    assert package.is_relative_to(env_dir.resolve()) and not package.is_relative_to(REPO), package
    bundles = package.parent / PACKAGED_BUNDLES
    assert (bundles / "chest_xray" / "train.json").is_file(), bundles

    study = [
        *("-m", "monai_assim.study", "--bundle", "chest_xray", "--output_dir", str(work / "study")),
        *("--backbone", "mobilenet_v2", "--pretrained", "none", "--image_size", "32", "--epochs", "1"),
        *("--batch_size", "4", "--train_per_class", "4", "--val_per_class", "2", "--test_per_class", "2"),
        *("--attacks", json.dumps({"FGSM": {}}), "--eps_255", "8", "--check_eps_255", "0"),
        *("--attack_budget", "none", "--n_examples", "0", "--arms", "vanilla"),
    ]
    _run([str(python), *study], work, env)
    doc = json.loads((work / "study" / "study.json").read_text())
    assert set(doc["runs"]) == {"vanilla"} or set(doc["runs"]) == {"seed0/vanilla"}, doc["runs"].keys()

    # the study's run (trained and evaluated with the installed bundle's train.json and evaluate.json), exported
    (run,) = {p.parents[1] for p in (work / "study" / "runs").rglob("checkpoints/best.pt")}
    summary = json.loads((run / "run_summary.json").read_text())  # the bundle the study ran: bundles_dir()'s
    assert Path(summary["bundle_root"]).resolve() == (bundles / "chest_xray").resolve(), summary["bundle_root"]
    out = _run([str(python), "-m", "monai_assim.bundle", "export", str(run), str(work / "exported")], work, env)
    assert "exported" in out and (work / "exported" / "configs" / "inference.json").is_file()
    assert (work / "exported" / "models" / "model.pt").is_file() and (work / "exported" / "LICENSE").is_file()
