#!/usr/bin/env bash
# The GPU check on a machine with no internet: install dimefm's missing dependencies from the wheels
# in $1 (made beforehand on a machine that can reach PyPI, for that machine's Python, e.g. 3.12):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13 duckdb==1.4.1
#
# torch, torchvision, numpy, pyarrow, pillow, safetensors, typer, rich, timm, huggingface_hub and
# matplotlib are expected on the machine already. Then: bash benchmarks/gpu_check.sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="${1:-.whl}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dimefm-site "$WHEELS"/*.whl
export PYTHONPATH="$PWD:/tmp/dimefm-site" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
timeout 480 python3 benchmarks/gpu_check.py --out "${OUT:-/tmp}/gpu_check" "${@:2}"
