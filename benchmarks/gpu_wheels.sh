#!/usr/bin/env bash
# Download, into .whl/, the wheels that a GPU machine without internet needs on top of an image that
# already has torch, torchvision, numpy, scipy, scikit-image, pytest, tensorboard, matplotlib, pillow,
# tqdm and requests (the device machines of docs/gpu.md): MONAI, Ignite, torchattacks, nibabel, fire.
# benchmarks/gpu_check.sh installs them from there. Versions: those the project is tested with here.
#
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION (default 3.12)]
set -euo pipefail
cd "$(dirname "$0")/.."
pyver="${1:-3.12}"
packages=(monai==1.6.1 pytorch-ignite==0.5.5 torchattacks==3.5.1 nibabel==5.4.2 fire==0.7.1 termcolor==3.3.0)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "${packages[@]}"
ls -l .whl
du -sh .whl
