#!/usr/bin/env bash
# Binary tensors over TCP against Triton's system shared memory, side by side in one run, with perf_analyzer
# (load-tests/shared_memory.py), on two models with ResNet-18's 600 KB image input: image_mean (only averages each
# channel) and ResNet-18 itself. The server is pinned to core 0, perf_analyzer to core 1. Needs .venv (the test
# suite's: perf_analyzer) and makes .venv-tools (numpy and onnx, for the models).
#   load-tests/shared_memory.sh [seconds per run]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/perf_analyzer ]; then echo "run scripts/test once first: it installs perf_analyzer into .venv" >&2; exit 1; fi
if [ ! -x .venv-tools/bin/python ]; then python3 -m venv .venv-tools; fi
.venv-tools/bin/pip install --quiet --disable-pip-version-check -r tools/requirements.txt
repo=$(mktemp -d)
trap 'rm -rf "$repo"' EXIT
mkdir -p "$repo/image_mean/1" "$repo/resnet18/1"
.venv-tools/bin/python tools/make_resnet.py "$repo/image_mean/1/model.onnx" --mean
.venv-tools/bin/python tools/make_resnet.py "$repo/resnet18/1/model.onnx"
cargo build --release --quiet --bin infergate
taskset -c 1 .venv/bin/python load-tests/shared_memory.py --repository "$repo" --seconds "${1:-5}"
