"""
benchmarks/gpu_check.py in its smoke mode (the mode a CPU-only machine gets: tiny benchmarks on the
CPU, no test suite), so that the GPU command cannot rot where no GPU is; and the ``--require-cuda``
switch of tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RATIOS = ("glcm_loss_over_resnet18_step", "assimilated_over_vanilla_step", "attack_sweep_over_floor")
BENCHMARKS = ("glcm_speed", "assimilation_overhead", "attack_sweep")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_smoke_mode_writes_the_folder_and_the_ratio_lines(tmp_path):
    out = tmp_path / "gpu_check_out"
    cmd = [sys.executable, "benchmarks/gpu_check.py", str(out)]
    if torch.cuda.is_available():  # on a GPU machine, force the smoke mode (the full check would run this suite)
        cmd.append("--smoke")
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    if not torch.cuda.is_available():
        assert proc.stdout.startswith("gpu_check: no CUDA device") and "smoke mode" in proc.stdout.splitlines()[0]

    files = sorted(p.name for p in out.iterdir())
    expected = ["environment.txt", "summary.json", "summary.md"] + [f"{b}.log" for b in BENCHMARKS]
    assert files == sorted(expected) and len(files) <= 8  # the device tool brings back at most 8 files
    summary = (out / "summary.md").read_text()
    assert "mode: smoke" in summary and "tests: not run" in summary
    for key in RATIOS:
        line = next((ln for ln in summary.splitlines() if ln.startswith(f"RATIO {key} = ")), None)
        assert line is not None, f"no ratio line for {key}:\n{summary}"
        value = float(line.split("=")[1].split()[0])
        assert value > 0 and "not comparable with the target" in line
    assert summary in proc.stdout  # printed too

    data = json.loads((out / "summary.json").read_text())
    assert data["tests"] is None and len(data["runs"]) == 3
    assert all(r["error"] is None and r["figures"] for r in data["runs"])
    assert all(data["ratios"][k]["value"] > 0 for k in RATIOS)
    for b in BENCHMARKS:
        text = (out / f"{b}.log").read_text()
        assert f"benchmarks/{b}.py" in text and "[ok;" in text
    assert "ratio (target <= 1.15)" in (out / "attack_sweep.log").read_text()
    assert "ratio assimilated / vanilla" in (out / "assimilation_overhead.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour of --require-cuda")
def test_require_cuda_is_an_error_without_a_device():
    cmd = [sys.executable, "-m", "pytest", "-q", "--collect-only", "--require-cuda", "-p", "no:cacheprovider",
           "tests/test_gpu_check.py"]  # fmt: skip
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no CUDA device" in proc.stdout + proc.stderr
