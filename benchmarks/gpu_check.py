"""
One command that tests and benchmarks the CUDA path, writing everything into one folder.

    python benchmarks/gpu_check.py [OUT_DIR] [--smoke] [--skip-tests] [--budget-s 450]
    bash benchmarks/gpu_check.sh [OUT_DIR] [...]          # the same, after installing carried wheels

With a CUDA device (the full check, about 5-8 minutes on one modern GPU):

1. the test suite with the CUDA tests enabled (``pytest --require-cuda``: the tests marked ``cuda``
   run, and fail rather than skip), among them a short chest X-ray bundle training with
   ``--device cuda --amp True`` and an evaluation with attacks (tests/test_cuda.py);
2. the three benchmarks on CUDA, each in its own process, timed with ``torch.cuda.synchronize``
   around every call (warm-up excluded), with the CUDA allocator's peaks: glcm_speed.py,
   assimilation_overhead.py (float32 and AMP), attack_sweep.py (its default 8 x 64 x 64 batch and a
   32 x 224 x 224 one);
3. ``summary.md`` (read by people) and ``summary.json`` (the same figures for programs): each ratio
   against its target, the peaks, the test outcome.

Without a CUDA device (or with ``--smoke``, or ``MONAI_ASSIM_GPU_CHECK=smoke``) it says so and runs a
quick smoke mode instead: the three benchmarks at tiny sizes on the CPU, in this process, one thread,
no test suite; the ratios then only show that the code runs (they are not comparable with the
targets). A test (tests/test_gpu_check.py) runs this mode so that the command cannot rot.

Files in OUT_DIR (default ``gpu_check_out/``; at most 8, as the device tool brings back): summary.md,
summary.json, environment.txt, pytest.log, glcm_speed.log, assimilation_overhead.log,
attack_sweep.log. How to read them: docs/gpu.md.

Exit status: 0 when every step ran (and, in the full check, every test passed); 1 otherwise. A missed
speed target is reported in the summary, not in the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

#: (key, label, target as (comparison, value)) of every figure the summary checks
TARGETS = {
    "glcm_loss_over_resnet18_step": ("GLCMLoss forward+backward (gray pred) / ResNet18 SGD step", "<=", 0.05),
    "glcm_loss_rgb_over_resnet18_step": ("GLCMLoss forward+backward (RGB pred) / ResNet18 SGD step", "<=", 0.05),
    "glcm_features_speedup_vs_skimage": ("hard GLCM features, speed-up over scikit-image", ">=", 50.0),
    "assimilated_over_vanilla_step": ("assimilated / vanilla ResNet18 training step, float32", "<=", 1.2),
    "assimilated_over_vanilla_step_amp": ("assimilated / vanilla ResNet18 training step, AMP", "<=", 1.2),
    "attack_sweep_over_floor": ("attack sweep / its floor (passes x one forward+backward)", "<=", 1.15),
    "attack_sweep_over_floor_32x224": ("attack sweep / its floor, batch 32 x 224 x 224", "<=", 1.15),
}


def _plan(smoke: bool, device: str) -> list[tuple[str, str, list[str], int]]:
    """The benchmark runs: (log name, script, arguments, time cap in seconds)."""
    if smoke:
        return [
            ("glcm_speed", "glcm_speed.py", ["--device", "cpu", "--batch", "2", "--size", "64", "--repeats", "1",
                                             "--skimage-windows", "4", "--threads", "1", "--skip-memory"], 120),
            ("assimilation_overhead", "assimilation_overhead.py", ["--device", "cpu", "--batch", "2", "--size", "64",
                                                                   "--repeats", "1"], 120),
            ("attack_sweep", "attack_sweep.py", ["--device", "cpu", "--batch", "2", "--size", "32", "--repeats", "1",
                                                 "--n-eps", "1", "--threads", "1"], 120),
        ]  # fmt: skip
    return [
        ("glcm_speed", "glcm_speed.py", ["--device", device, "--threads", "0", "--repeats", "20"], 120),
        ("assimilation_overhead", "assimilation_overhead.py", ["--device", device, "--repeats", "20"], 90),
        ("assimilation_overhead", "assimilation_overhead.py", ["--device", device, "--repeats", "20", "--amp"], 90),
        ("attack_sweep", "attack_sweep.py", ["--device", device, "--repeats", "3"], 120),
        (
            "attack_sweep",
            "attack_sweep.py",
            ["--device", device, "--repeats", "2", "--batch", "32", "--size", "224"],
            150,
        ),
    ]


def _cudnn_version():
    import torch

    return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None


def _environment(device: str | None) -> str:
    import torch

    lines = [
        f"python {platform.python_version()} ({sys.executable})",
        f"platform {platform.platform()}, {os.cpu_count()} CPUs",
        f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuDNN {_cudnn_version()}",
    ]
    if device is not None:
        p = torch.cuda.get_device_properties(device)
        lines.append(
            f"device {device}: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
            f"{p.multi_processor_count} multiprocessors"
        )
    else:
        lines.append("device: none (no CUDA device visible)")
    for name in ("monai", "ignite", "torchattacks", "torchvision", "numpy", "skimage", "nibabel", "itk"):
        try:
            module = __import__(name)
            lines.append(f"{name} {getattr(module, '__version__', '?')}")
        except Exception as e:  # noqa: BLE001 - a missing optional package is information, not an error
            lines.append(f"{name}: not importable ({type(e).__name__})")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], check=False, cwd=REPO, capture_output=True, text=True, timeout=10
        )
        lines.append(f"git commit {commit.stdout.strip() or '(unknown)'}")
    except Exception:  # noqa: BLE001
        lines.append("git commit (unknown)")
    return "\n".join(lines) + "\n"


def _run_tests(out: Path, timeout: float) -> dict:
    """The whole suite with the CUDA tests required, output in pytest.log; returns its outcome."""
    cmd = [sys.executable, "-m", "pytest", "-q", "tests", "--require-cuda", "-rfEs", "-p", "no:cacheprovider"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    with open(out / "pytest.log", "w") as log:
        log.write(f"$ {' '.join(cmd)}\n\n")
        log.flush()
        try:
            rc = subprocess.run(
                cmd, check=False, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = None
    seconds = time.perf_counter() - start
    text = (out / "pytest.log").read_text(errors="replace")
    pattern = r"(\d+ (passed|failed|errors?|skipped|xfailed|xpassed|deselected)|no tests ran)\b.* in [\d.]+s"
    last = [ln for ln in text.splitlines() if re.search(pattern, ln)]
    outcome = last[-1].strip("= ") if last else "(no summary line)"
    if rc is None:
        outcome = f"TIMED OUT after {timeout:.0f} s; last line: {outcome}"
    return {"returncode": rc, "outcome": outcome, "seconds": seconds, "ok": rc == 0}


def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"_gpu_check_{Path(script).stem}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_benchmark(
    log_path: Path, script: str, args: list[str], json_path: Path, isolate: bool, timeout: float
) -> dict:
    """One benchmark run, its output appended to ``log_path``; returns its figures (or an error)."""
    argv = [*args, "--json", str(json_path)]
    start = time.perf_counter()
    with open(log_path, "a") as log:
        log.write(f"$ python benchmarks/{script} {' '.join(args)}\n")
        log.flush()
        error = None
        if isolate:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
            try:
                proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *argv], check=False, cwd=REPO, env=env,
                                      stdout=log, stderr=subprocess.STDOUT, timeout=timeout)  # fmt: skip
                if proc.returncode != 0:
                    error = f"exit status {proc.returncode}"
            except subprocess.TimeoutExpired:
                error = f"timed out after {timeout:.0f} s"
        else:
            buffer = io.StringIO()
            try:
                with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                    _load(script).main(argv)
            except BaseException as e:  # noqa: BLE001 - SystemExit from argparse too
                buffer.write(traceback.format_exc())
                error = f"{type(e).__name__}: {e}"
            log.write(buffer.getvalue())
        seconds = time.perf_counter() - start
        log.write(f"[{'ERROR: ' + error if error else 'ok'}; {seconds:.1f} s]\n\n")
    figures = json.loads(json_path.read_text()) if json_path.is_file() and error is None else {}
    return {"script": script, "args": args, "seconds": seconds, "error": error, "figures": figures}


def _first_threads(figures: dict) -> dict:
    threads = figures.get("threads", {})
    return next(iter(threads.values()), {}) if threads else {}


def _collect(runs: list[dict]) -> tuple[dict, dict]:
    """The checked ratios and the CUDA peaks (MiB) from the benchmark runs."""
    ratios, peaks = {}, {}
    for run in runs:
        f, args = run["figures"], run["args"]
        if not f:
            continue
        if run["script"] == "glcm_speed.py":
            t = _first_threads(f)
            ratios["glcm_loss_over_resnet18_step"] = t.get("b_ratio_gray")
            ratios["glcm_loss_rgb_over_resnet18_step"] = t.get("b_ratio_rgb")
            ratios["glcm_features_speedup_vs_skimage"] = t.get("a_speedup")
            for k in ("a_cuda_peak_mib", "b_gray_cuda_peak_mib", "b_rgb_cuda_peak_mib", "b_resnet_cuda_peak_mib"):
                if k in t:
                    peaks[f"glcm_speed {k}"] = t[k]
        elif run["script"] == "assimilation_overhead.py":
            key = "assimilated_over_vanilla_step" + ("_amp" if f.get("amp") else "")
            ratios[key] = f.get("ratio")
            for k in ("assimilated_cuda_peak_mib", "vanilla_cuda_peak_mib"):
                if k in f:
                    peaks[f"assimilation_overhead{' --amp' if f.get('amp') else ''} {k}"] = f[k]
        elif run["script"] == "attack_sweep.py":
            key = "attack_sweep_over_floor" + ("_32x224" if "224" in args else "")
            ratios[key] = f.get("ratio")
            for k in ("sweep_cuda_peak_mib", "grouped_cuda_peak_mib"):
                if k in f:
                    peaks[f"attack_sweep {f['batch']}x{f['size']} {k}"] = f[k]
    return ratios, peaks


def _verdict(value, op: str, target: float, smoke: bool) -> str:
    if value is None:
        return "not measured"
    if smoke:
        return "smoke sizes on the CPU: not comparable with the target"
    ok = value <= target if op == "<=" else value >= target
    return "met" if ok else "MISSED"


def _summary(
    mode: str, device_line: str, tests: dict | None, runs: list[dict], smoke: bool, seconds: float
) -> tuple[str, dict]:
    ratios, peaks = _collect(runs)
    lines = [
        "# gpu_check summary",
        "",
        f"mode: {mode}",
        f"device: {device_line}",
        f"total time: {seconds:.0f} s",
        "",
        "## Tests",
        "",
    ]
    if tests is None:
        lines.append("tests: not run (smoke mode runs no test suite)")
    else:
        lines.append(
            f"tests: {'passed' if tests['ok'] else 'FAILED'}: {tests['outcome']} ({tests['seconds']:.0f} s; see pytest.log)"
        )
    lines += ["", "## Ratios against their targets", ""]
    rows = {}
    for key, (label, op, target) in TARGETS.items():
        if smoke and key.endswith("_amp") or smoke and key.endswith("_32x224"):
            continue
        value = ratios.get(key)
        verdict = _verdict(value, op, target, smoke)
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"RATIO {key} = {shown}  (target {op} {target:g})  {verdict}  -- {label}")
        rows[key] = {"value": value, "target": f"{op} {target:g}", "verdict": verdict, "label": label}
    lines += ["", "## Peak GPU memory (torch.cuda.max_memory_allocated, reset before each measurement)", ""]
    if peaks:
        lines += [f"PEAK {k} = {v:.0f} MiB" for k, v in peaks.items()]
    else:
        lines.append("PEAK n/a: no CUDA device, nothing measured")
    lines += ["", "## Benchmark runs", ""]
    for run in runs:
        state = f"ERROR: {run['error']}" if run["error"] else "ok"
        lines.append(f"- `python benchmarks/{run['script']} {' '.join(run['args'])}`: {state} ({run['seconds']:.0f} s)")
    data = {
        "mode": mode, "device": device_line, "seconds": seconds, "tests": tests, "ratios": rows, "peaks_mib": peaks,
        "runs": runs,
    }  # fmt: skip
    return "\n".join(lines) + "\n", data


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", default="gpu_check_out", help="output folder (default gpu_check_out/)")
    parser.add_argument("--smoke", action="store_true", help="the CPU smoke mode even where CUDA is available")
    parser.add_argument("--device", default="cuda", help="the CUDA device of the full check (default cuda)")
    parser.add_argument("--skip-tests", action="store_true", help="full check without the test suite")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting steps after this many seconds")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    import torch

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    smoke = args.smoke or os.environ.get("MONAI_ASSIM_GPU_CHECK", "").lower() == "smoke"
    if not smoke and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device (torch.cuda.is_available() is False): running the quick CPU smoke mode only "
            "(tiny benchmarks, no test suite); the figures say nothing about the GPU.",
            flush=True,
        )
        smoke = True
    if smoke:
        torch.set_num_threads(1)
        device, mode = None, "smoke (CPU, tiny sizes, one thread, no test suite)"
        device_line = "cpu"
    else:
        device = args.device
        mode = "full (CUDA)"
        device_line = f"{device}: {torch.cuda.get_device_name(device)}"
    print(f"gpu_check: {mode}; output in {out}/", flush=True)
    (out / "environment.txt").write_text(_environment(device))

    ok = True
    tests = None
    if not smoke and not args.skip_tests:
        print("gpu_check: test suite with the CUDA tests required ...", flush=True)
        tests = _run_tests(out, timeout=max(60.0, min(300.0, args.budget_s - 150.0)))
        ok &= tests["ok"]
        print(f"gpu_check: tests {tests['outcome']}", flush=True)

    runs = []
    for name in {n for n, *_ in _plan(smoke, args.device)}:
        (out / f"{name}.log").write_text("")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, script, bench_args, cap) in enumerate(_plan(smoke, args.device)):
            left = args.budget_s - (time.perf_counter() - start)
            if left < 20:
                runs.append(
                    {
                        "script": script,
                        "args": bench_args,
                        "seconds": 0.0,
                        "error": "skipped: out of time",
                        "figures": {},
                    }
                )
                continue
            print(f"gpu_check: benchmarks/{script} {' '.join(bench_args)}", flush=True)
            run = _run_benchmark(
                out / f"{name}.log", script, bench_args, Path(tmp) / f"{i}.json", not smoke, min(cap, left)
            )
            runs.append(run)
            if run["error"]:
                print(f"gpu_check:   ERROR {run['error']} (see {name}.log)", flush=True)
    ok &= all(r["error"] is None for r in runs)

    text, data = _summary(mode, device_line, tests, runs, smoke, time.perf_counter() - start)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(data, indent=1, default=str))
    print(text, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
