"""The `lmtune` command. Heavy imports (torch, transformers) happen inside the commands that need them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from lmtune.spec import SpecError, load_spec

# Exit status of a run stopped by SIGTERM after writing its checkpoint (sysexits' EX_TEMPFAIL):
# run the same command again to resume.
EXIT_PAUSED = 75


@click.group()
def main() -> None:
    """lmtune: fine-tune language models on your own hardware."""


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False), help="Run folder; an existing one is resumed.")
@click.option("--num-processes", default=1, show_default=True, type=click.IntRange(1), help="Data-parallel processes (one per GPU).")
def train(spec_path: str, output_dir: str, num_processes: int) -> None:
    """Train the job in SPEC (YAML or JSON) and write the run to --output."""
    try:
        spec = load_spec(spec_path)
    except SpecError as error:
        raise click.ClickException(f"bad spec {spec_path}:\n{error}") from None
    if num_processes > 1:
        sys.exit(_launch_processes(spec_path, output_dir, num_processes))

    from workers.training.errors import TrainingError, TrainingPaused
    from workers.training.loop import train as run_training
    from workers.training.progress_bar import ProgressBar

    try:
        with ProgressBar(enabled=_is_main_process()) as bar:
            result = run_training(spec, output_dir, observer=bar)
    except TrainingPaused as paused:
        click.echo(f"paused at step {paused.step}; run the same command again to resume", err=True)
        sys.exit(EXIT_PAUSED)
    except (TrainingError, SpecError) as error:
        raise click.ClickException(str(error)) from None
    if _is_main_process():
        click.echo(
            f"done: {result.steps} steps, {result.trained_tokens} target tokens; model in {result.final_dir}"
        )


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _launch_processes(spec_path: str, output_dir: str, num_processes: int) -> int:
    """N copies of this command, one per rank; Accelerate reads the process group from the env."""
    import torch

    from lmtune.launcher import launch

    command = [sys.executable, "-m", "lmtune.cli", "train", spec_path, "--output", output_dir]
    return launch(command, num_processes, paused_status=EXIT_PAUSED, use_cpu=not torch.cuda.is_available())


@main.command("make-tiny-model")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
def make_tiny_model_command(folder: str, seed: int) -> None:
    """Write a small randomly initialised Llama-style model with a byte-level tokenizer to FOLDER."""
    from workers.training.tiny_model import make_tiny_model

    path = make_tiny_model(Path(folder), seed=seed)
    click.echo(f"tiny model (random weights) written to {path}")


@main.command("make-sample-data")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--examples", default=100, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True)
@click.option("--spread", default=0.6, show_default=True, help="Sigma of the log-normal length spread.")
def make_sample_data_command(path: str, examples: int, seed: int, spread: float) -> None:
    """Write a generated chat dataset (answer in capitals) to PATH as JSONL."""
    from lmtune.sample_data import chat_examples, write_jsonl

    write_jsonl(chat_examples(examples, seed=seed, spread=spread), path)
    click.echo(f"{examples} chat examples written to {path}")


if __name__ == "__main__":
    main()
