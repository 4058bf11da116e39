"""bf16 training throughput and model FLOPs utilisation of a ~0.5B-parameter model with packing.

Builds a randomly initialised Llama-style model (hidden 1024, 24 layers, vocabulary 32k: about
0.44B parameters), trains it for a few dozen steps on generated text with `training.packing`, and
prints tokens per second (after warm-up) and MFU against the GPU's dense bf16 peak.

    python benchmarks/gpu_check.py            # defaults sized for one H100/H200-class GPU
    python benchmarks/gpu_check.py --hidden-size 64 --layers 2 --steps 4 --vocab-size 512   # smoke test
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from cli.sample_data import WORDS  # noqa: E402
from lmtune.metrics_log import MetricsLog  # noqa: E402
from lmtune.spec import parse_spec  # noqa: E402
from workers.models.tiny_model import make_tiny_model  # noqa: E402
from workers.training.loop import train  # noqa: E402

# dense bf16 peak, FLOP/s, from the vendors' datasheets
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}


def text_rows(n: int, median_words: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        count = max(8, round(median_words * math.exp(rng.gauss(0, 0.7))))
        rows.append({"text": " ".join(rng.choice(WORDS) for _ in range(count))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=4096)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lmtune-gpu-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # its models and runs: gigabytes
    model = make_tiny_model(
        work / "model",
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_heads=max(1, args.hidden_size // 64),
        intermediate_size=args.hidden_size * 4,
        max_positions=args.max_seq_length,
        vocab_size=args.vocab_size,
    )
    rows = text_rows(args.batch_size * args.steps, median_words=80, seed=0)
    (work / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    precision = "bf16" if torch.cuda.is_available() else "no"
    spec = parse_spec(
        {
            "model": str(model),
            "training_file": str(work / "train.jsonl"),
            "hyperparameters": {"n_epochs": 1, "batch_size": args.batch_size},
            "training": {
                "learning_rate": 1e-4,
                "packing": True,
                "mixed_precision": precision,
                "max_seq_length": args.max_seq_length,
                "checkpoint_every_steps": 1_000_000,
                "shuffle": False,
            },
        }
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train(spec, work / "run")
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None

    steps = MetricsLog(work / "run" / "metrics.jsonl").read()
    warm = steps[min(len(steps) - 2, max(1, len(steps) // 5))]  # skip compilation and allocator warm-up
    tokens_per_second = (steps[-1]["tokens"] - warm["tokens"]) / (
        steps[-1]["elapsed_seconds"] - warm["elapsed_seconds"]
    )

    config = json.loads((model / "config.json").read_text())
    parameters = _parameters(config)
    mean_length = sum(len(r["text"]) for r in rows) / len(rows)  # byte-level tokenizer: a token per byte
    # PaLM's convention: 6 FLOPs per weight (the input embedding is a lookup, not a matmul) plus
    # 12 x layers x hidden x attention span, the span being an example since packing masks the rest
    attention = 12 * config["num_hidden_layers"] * config["hidden_size"] * mean_length
    flops_per_token = 6 * (parameters - config["vocab_size"] * config["hidden_size"]) + attention
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak_flops = next((value for name, value in PEAK_BF16.items() if name in device), None)

    print(f"device: {device}; precision: {precision}; attention: sdpa with packed block-diagonal masks")
    print(f"model: {parameters / 1e9:.2f}B parameters (random), {args.layers} layers, hidden {args.hidden_size}")
    print(
        f"steps: {result.steps}, batch {args.batch_size} examples packed into rows of {args.max_seq_length}, "
        f"mean example {mean_length:.0f} tokens"
    )
    print(f"tokens per second ({precision}, packing): {tokens_per_second:,.0f}")
    achieved = tokens_per_second * flops_per_token
    print(
        f"model FLOP/s: {achieved / 1e12:.1f} TFLOP/s"
        + (f"; MFU: {achieved / peak_flops:.1%} of {peak_flops / 1e12:.0f}" if peak_flops else "")
    )
    if peak is not None:
        print(f"peak GPU memory allocated: {peak:.1f} GiB")


def _parameters(config: dict) -> int:
    hidden, layers, ffn, vocab = (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["intermediate_size"],
        config["vocab_size"],
    )
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = hidden // heads
    attention = hidden * hidden * 2 + 2 * hidden * kv_heads * head_dim
    return layers * (attention + 3 * hidden * ffn + 2 * hidden) + 2 * vocab * hidden + hidden


if __name__ == "__main__":
    main()
