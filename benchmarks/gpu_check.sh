#!/usr/bin/env bash
# One prepared GPU check, about 8 minutes at most on one H100/H200-class GPU, no internet needed
# (every model is built here, at random). Run from the repo root on a machine with torch,
# transformers, accelerate, datasets and peft installed (and bitsandbytes for the QLoRA check: a
# wheel in .whl/ is installed first if there is one):
#   bash benchmarks/gpu_check.sh
# Prints, each part within its own time limit:
#   1. bf16 tokens per second, peak memory and MFU of a ~0.44B model trained with packing
#   2. lmtune against transformers.Trainer on the same work (tokens per second, per-step losses)
#   3. DDP parity (a process group of one, NCCL), FSDP2 parity, QLoRA train + merge, a DPO step
# and exits non-zero if any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if compgen -G ".whl/bitsandbytes-*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/lmtune-site .whl/bitsandbytes-*.whl &&
    export PYTHONPATH="$PYTHONPATH:/tmp/lmtune-site"
fi
failed=0
part() {  # part SECONDS COMMAND...: one check, stopped at its limit
  local limit="$1"
  shift
  echo "== $* (at most ${limit}s)"
  timeout "$limit" "$@" || { echo "== FAILED (status $?): $*"; failed=1; }
}
part 200 python3 benchmarks/gpu_check.py --steps 24
part 120 python3 -m benchmarks.trainer_vs_hf --rounds 1 --hidden-size 1024 --layers 8 --examples 256
part 160 python3 -m benchmarks.gpu_parallel_check --hidden-size 512 --layers 8 --steps 8
exit "$failed"
