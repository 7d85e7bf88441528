#!/usr/bin/env bash
# The GPU check in one command: the test suite with the CUDA tests, then the three benchmarks on CUDA,
# everything written to one folder (default gpu_check_out/); without a CUDA device, a quick CPU smoke
# mode. See docs/gpu.md.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR] [--smoke] [--skip-tests] [--budget-s 450]
#
# Wheels in .whl/ (made by benchmarks/gpu_wheels.sh for a machine without internet) are installed
# first into a private folder put on PYTHONPATH; the Python is $PYTHON, else .venv/bin/python when
# it exists, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
    py="$PYTHON"
elif [ -x .venv/bin/python ]; then
    py=.venv/bin/python
else
    py=python3
fi
if compgen -G ".whl/*.whl" >/dev/null; then
    site="${MONAI_ASSIM_WHEEL_SITE:-/tmp/monai_assim_site}"
    echo "gpu_check.sh: installing $(ls .whl/*.whl | wc -l) wheel(s) from .whl/ into $site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$py" benchmarks/gpu_check.py "$@"
