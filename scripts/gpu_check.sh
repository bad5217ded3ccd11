#!/usr/bin/env bash
# Under ten minutes on an NVIDIA GPU machine: what it can measure of this project (see
# scripts/gpu_check.py and docs/PERFORMANCE.md "On a GPU"). Detects nvidia-smi, a Python with
# torch + CUDA (the PyTorch peer) and TensorFlow with a GPU (this project); measures what is
# there, says in one line why it skips the rest, and writes gpu_check.json.
#   scripts/gpu_check.sh [--dry_run] [--out=FILE] [--batch=128] [--steps=20]
#   TORCH_PYTHON=python3 TF_PYTHON=.venv/bin/python scripts/gpu_check.sh
# Needs nothing downloaded: without TensorFlow (e.g. Python 3.12, where TF 2.15 has no wheel)
# it measures the peer alone.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${TF_PYTHON:-}" && -x .venv/bin/python ]]; then
    export TF_PYTHON=.venv/bin/python
fi
# 570 s: the whole check stays under ten minutes even if a step hangs.
exec timeout 570 "${PYTHON:-python3}" scripts/gpu_check.py "$@"
