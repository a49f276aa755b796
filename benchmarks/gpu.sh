#!/usr/bin/env bash
# GPU throughput in one command, on a machine with NVIDIA GPUs:
#   bash benchmarks/gpu.sh [--spectra 20000] [--batch 256] [--actors-per-gpu 2]
# Makes .venv with a CUDA build of torch (the project's range) if it is missing, then
# prints spectra/s per GPU for training (SpecViT, TransformerPayne) and inference (SpecViT,
# the cINN with 256 draws). Exits with 2 and the reason where there is no NVIDIA GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "benchmarks/gpu.sh: no NVIDIA GPU here (nvidia-smi finds none); run it on a GPU node" >&2
    exit 2
fi
nvidia-smi -L

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    # no constraints file: it pins the CPU build; the range in pyproject takes a CUDA one
    .venv/bin/python -m pip install --quiet -e '.[dev]'
fi
exec .venv/bin/python -m benchmarks.gpu "$@"
