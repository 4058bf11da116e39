"""lmtune's reinforcement fine-tuning (GRPO) and TRL's GRPOTrainer on the same work, side by side.

The same model, prompts, grader (a python grader run through lmtune's sandbox by both: TRL's reward
function calls the same grading), answers per prompt, answer length, learning rate and loss
(dapo, no KL). Each runner trains in a process of its own, so that its peak memory is its own.
Reports seconds per step (the first step, which warms up, left out), peak memory (resident set,
and CUDA's peak allocation on a GPU), and where a step's time goes: generating the answers,
grading them, and the rest (the log-probabilities, backward and the optimizer step).

    python -m benchmarks.rft_vs_trl [--model PATH] [--steps 6] [--prompts 4] [--group 8] [--max-tokens 32]

Without --model it builds a small random Llama-style model (`lmtune make-tiny-model`'s, wider).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

GRADER = {
    "type": "python",
    "name": "digits",
    "source": "def grade(sample, item):\n    t = sample['output_text']\n    return sum(c.isdigit() for c in t) / max(len(t), 1)\n",
}
LEARNING_RATE = 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a Hugging Face folder (default: a random Llama-style model)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="answers per prompt")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--runner", choices=["lmtune", "trl"], help=argparse.SUPPRESS)  # one child's work
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runner:
        result = run_lmtune(args) if args.runner == "lmtune" else run_trl(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        print("RESULT " + json.dumps(result), flush=True)
        return

    work = Path(tempfile.mkdtemp(prefix="lmtune-rft-bench-"))
    try:
        args.label = args.model or "random Llama-style, hidden 256, 4 layers, byte tokenizer"
        if args.model is None:
            from workers.models.tiny_model import make_tiny_model

            args.model = str(make_tiny_model(work / "model", hidden_size=256, num_layers=4, num_heads=4))
        rows = [{"messages": [{"role": "user", "content": f"Say a number, any number ({i})"}]} for i in range(64)]
        (work / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        (work / "valid.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:4]))
        results = {runner: child(runner, args, work) for runner in ("trl", "lmtune")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, results)


def child(runner: str, args, work: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.rft_vs_trl", "--runner", runner, "--work", str(work)]
    command += ["--model", args.model, "--steps", str(args.steps), "--prompts", str(args.prompts)]
    command += ["--group", str(args.group), "--max-tokens", str(args.max_tokens)]
    print(f"running {runner}...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    if done.returncode or line is None:
        sys.exit(f"{runner} failed:\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def run_lmtune(args) -> dict:
    from lmtune.metrics_log import MetricsLog
    from lmtune.spec import parse_spec
    from workers.training.loop import train

    spec = parse_spec(
        {
            "model": args.model,
            "training_file": str(args.work / "train.jsonl"),
            "validation_file": str(args.work / "valid.jsonl"),
            "method": {
                "type": "reinforcement",
                "reinforcement": {
                    "grader": GRADER,
                    "hyperparameters": {"n_epochs": 50, "batch_size": args.prompts, "eval_interval": 1_000_000},
                },
            },
            "training": {
                "learning_rate": LEARNING_RATE,
                "lr_scheduler": "constant",
                "max_steps": args.steps,
                "max_grad_norm": None,
                "checkpoint_every_steps": 1_000_000,
                "sample_prompts": [],
                "grpo": {"group_size": args.group, "max_completion_tokens": args.max_tokens},
            },
        }
    )
    output = args.work / "lmtune-run"
    train(spec, output)
    rows = MetricsLog(output / "metrics.jsonl").read()[1:]  # the first step warms up
    elapsed = [row["elapsed_seconds"] for row in MetricsLog(output / "metrics.jsonl").read()]
    steps = [b - a for a, b in zip(elapsed, elapsed[1:])]
    return {
        "seconds_per_step": sum(steps) / len(steps),
        "generation": sum(row["train_generation_seconds"] for row in rows) / len(rows),
        "grading": sum(row["train_grading_seconds"] for row in rows) / len(rows),
        "reward_mean": [round(row["train_reward_mean"], 3) for row in rows],
    }


def run_trl(args) -> dict:
    from datasets import Dataset
    from pydantic import TypeAdapter
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lmtune.graders import Tools, grade_batch, sample_namespace
    from lmtune.graders.schema import Grader

    grader, tools = TypeAdapter(Grader).validate_python(GRADER), Tools()
    timing = {"generation": [], "grading": [], "step": []}

    def reward(completions, **kwargs):
        started = time.monotonic()
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        grades = grade_batch(grader, [(sample_namespace(text), {}) for text in texts], tools)
        timing["grading"].append(time.monotonic() - started)
        return [grade.score for grade in grades]

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.started = time.monotonic()

        def on_step_end(self, *a, **k):
            timing["step"].append(time.monotonic() - self.started)

    rows = [json.loads(line) for line in (args.work / "train.jsonl").read_text().splitlines()]
    model = AutoModelForCausalLM.from_pretrained(args.model)
    generate = model.generate

    def timed_generate(*a, **k):
        started = time.monotonic()
        try:
            return generate(*a, **k)
        finally:
            timing["generation"].append(time.monotonic() - started)

    model.generate = timed_generate
    gpu = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=str(args.work / "trl-run"),
        per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group,
        max_completion_length=args.max_tokens,
        max_steps=args.steps,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        max_grad_norm=0,  # no clipping, as lmtune's null
        beta=0.0,
        loss_type="dapo",
        temperature=1.0,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=not gpu,
        bf16=gpu,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=Dataset.from_list([{"prompt": row["messages"]} for row in rows]),
        processing_class=AutoTokenizer.from_pretrained(args.model),
        callbacks=[StepClock()],
    )
    trainer.train()
    rewards = [log["reward"] for log in trainer.state.log_history if "reward" in log]
    steps = timing["step"][1:]
    return {
        "seconds_per_step": sum(steps) / len(steps),
        "generation": sum(timing["generation"][1:]) / len(steps),
        "grading": sum(timing["grading"][1:]) / len(steps),
        "reward_mean": [round(value, 3) for value in rewards[1:]],
    }


def report(args, results: dict) -> None:
    device = f"cuda {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"
    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {device}"
    )
    print(
        f"model: {args.label}; {args.prompts} prompts x {args.group} answers per step, answers up to "
        f"{args.max_tokens} tokens; {args.steps} steps, the first left out"
    )
    print(f"{'runner':<22}{'s/step':>9}{'generate':>10}{'grade':>8}{'rest':>8}{'peak RSS MB':>13}{'CUDA peak MB':>14}")
    for name, label in (("trl", "TRL GRPOTrainer"), ("lmtune", "lmtune")):
        r = results[name]
        rest = r["seconds_per_step"] - r["generation"] - r["grading"]
        cuda = f"{r['cuda_peak_mb']:,.0f}" if r["cuda_peak_mb"] is not None else "-"
        print(
            f"{label:<22}{r['seconds_per_step']:>9.2f}{r['generation']:>10.2f}{r['grading']:>8.2f}{rest:>8.2f}"
            f"{r['peak_rss_mb']:>13,.0f}{cuda:>14}"
        )
    print(f"speed, lmtune vs TRL: {results['trl']['seconds_per_step'] / results['lmtune']['seconds_per_step']:.2f}x")
    for name in ("trl", "lmtune"):
        print(f"{name} mean reward per step: {results[name]['reward_mean']}")


if __name__ == "__main__":
    main()
