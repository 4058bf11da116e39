#!/usr/bin/env bash
# One prepared GPU check, under 5 minutes on one H100/H200-class GPU: bf16 tokens per second and
# MFU of a ~0.5B-parameter random Llama-style model trained with packing. Run from the repo root
# on a machine with torch, transformers, accelerate, datasets and peft installed:
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
timeout 290 python3 benchmarks/gpu_check.py "$@"
