"""lmtune (padding, and packing) and transformers.Trainer on the same work, side by side.

One run, alternating the runners in rounds so that machine noise hits them alike. Each trains the
same randomly initialised Llama-style model on the same generated chat dataset, whose lengths
follow a log-normal spread (many short examples, a few long ones). lmtune runs padded with its
default activation checkpointing ("selective") and with it off (what Trainer does), and packed.
Reports non-padding tokens per second of training-loop time (lmtune: `elapsed_seconds` at the
last step; Trainer: its `train_runtime`), the ratios to Trainer, and the largest per-step loss
difference between lmtune (padding) and Trainer.

    python -m benchmarks.trainer_vs_hf [--rounds 3] [--examples 256]
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from benchmarks.hf_reference import run_hf_trainer  # noqa: E402
from cli.sample_data import chat_examples, write_jsonl  # noqa: E402
from lmtune.metrics_log import MetricsLog  # noqa: E402
from lmtune.spec import parse_spec  # noqa: E402
from lmtune.training_data import validate_jsonl_file  # noqa: E402
from workers.models.tiny_model import make_tiny_model  # noqa: E402
from workers.training.data import tokenize_rows  # noqa: E402
from workers.training.loop import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lmtune-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # its models and runs: gigabytes
    model = make_tiny_model(
        work / "model",
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_heads=max(1, args.hidden_size // 64),
        intermediate_size=args.hidden_size * 8 // 3,
    )
    data = write_jsonl(chat_examples(args.examples, seed=0, median_words=16, spread=0.8), work / "train.jsonl")

    def spec(packing: bool, checkpointing: str = "selective"):
        return parse_spec(
            {
                "model": str(model),
                "training_file": str(data),
                "seed": 0,
                "hyperparameters": {"n_epochs": 1, "batch_size": args.batch_size},
                "training": {
                    "learning_rate": 1e-3,
                    "shuffle": False,
                    "packing": packing,
                    "gradient_checkpointing": checkpointing,
                    "max_seq_length": args.max_seq_length,
                    "checkpoint_every_steps": 1_000_000,
                },
            }
        )

    # lmtune's runs: (packing, activation checkpointing); "selective" is lmtune's default, Trainer keeps everything ("off")
    lmtune_runs = {"padding": (False, "selective"), "padding-off": (False, "off"), "packing": (True, "selective")}
    runners = ["trainer", *lmtune_runs]
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    largest_loss_gap = 0.0
    for round_number in range(args.rounds):
        reference = None
        # rotate who goes first, so that warm-up or drift does not favour one runner
        for name in runners[round_number % len(runners) :] + runners[: round_number % len(runners)]:
            output = work / f"{name}-{round_number}"
            if name == "trainer":
                reference = run_hf_trainer(spec(False, "off"), output)
                speeds[name].append(reference.non_padding_tokens / reference.train_seconds)
            else:
                train(spec(*lmtune_runs[name]), output)
                speeds[name].append(_non_padding_tokens(spec(False)) / _loop_seconds(output))
        for name in ("padding", "padding-off"):
            padded = [row["train_loss"] for row in MetricsLog(work / f"{name}-{round_number}" / "metrics.jsonl").read()]
            largest_loss_gap = max(
                largest_loss_gap, *(abs(a - b) for a, b in zip(padded, reference.losses, strict=True))
            )
        print(
            f"round {round_number + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} tok/s" for k, v in speeds.items()), flush=True
        )

    median = {name: statistics.median(values) for name, values in speeds.items()}
    lengths = _lengths(spec(False))
    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}"
    )
    print(
        f"model: Llama-style, hidden {args.hidden_size}, {args.layers} layers, random weights; "
        f"{args.examples} chat examples, about {min(lengths)}-{max(lengths)} tokens (median {statistics.median(lengths):.0f}); "
        f"batch {args.batch_size}, max_seq_length {args.max_seq_length}; median of {args.rounds} rounds"
    )
    # the ratio within each round pairs runs made minutes apart, which cancels slow drift
    paired = {
        name: statistics.median(v / t for v, t in zip(values, speeds["trainer"])) for name, values in speeds.items()
    }
    labels = {
        "trainer": "transformers.Trainer",
        "padding": "lmtune (padding)",
        "padding-off": "lmtune (padding, checkpointing off)",
        "packing": "lmtune (packing)",
    }
    print(f"{'runner':<37}{'non-padding tok/s':>18}{'vs Trainer':>12}{'paired ratio':>14}")
    for name in runners:
        print(
            f"{labels[name]:<37}{median[name]:>18,.0f}{median[name] / median['trainer']:>11.2f}x{paired[name]:>13.2f}x"
        )
    print(
        f"largest per-step loss difference, lmtune (padding, either checkpointing) vs Trainer: {largest_loss_gap:.2e}"
    )


def _lengths(spec) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(spec.model)
    examples = tokenize_rows(validate_jsonl_file(spec.training_file), tokenizer, spec.training.max_seq_length).examples
    return [len(ids) for ids in examples["input_ids"]]


def _non_padding_tokens(spec) -> int:
    return sum(_lengths(spec))  # one epoch: every example once


def _loop_seconds(output: Path) -> float:
    return MetricsLog(output / "metrics.jsonl").read()[-1]["elapsed_seconds"]


if __name__ == "__main__":
    main()
