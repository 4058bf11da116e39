"""The trainer's entry point: `python -m workers.training SPEC --output DIR` (what a worker starts)
and `lmtune train` run this. It applies the failure contract: a run that fails for a reason the user
can act on writes `error.json` ({attempt, code, message, param}, fenced: lmtune.fence) for the
worker and exits 1; a paused run exits EXIT_PAUSED, a superseded one EXIT_SUPERSEDED having written
nothing more; a full disk removes the attempt's partial files and writes `disk_full` with the space
needed (EXIT_DISK_FULL when not even the report fits); a bug writes `internal_error` and its
traceback goes to the log.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback
from pathlib import Path

from lmtune.disk import DISK_FULL, disk_full_message, is_disk_full
from lmtune.fence import RunFence, Superseded, write_error_report
from lmtune.layout import RunLayout, latest_checkpoint
from lmtune.problems import replace_paths
from lmtune.spec import SpecError, load_spec
from workers.models.errors import ReportedError
from workers.training import checkpoints as ckpt
from workers.training.errors import EXIT_DISK_FULL, EXIT_PAUSED, EXIT_SUPERSEDED, TrainingPaused
from workers.training.launcher import launch, lost_peer, nodes, started_as_rank

OUT_OF_MEMORY = (
    "out of memory; lower hyperparameters.batch_size or training.max_seq_length, or set "
    "training.gradient_checkpointing: full, training.lora or more training.gradient_accumulation_steps"
)


def run_trainer(spec_path: str, output_dir: str, num_processes: int = 1, model_name: str | None = None) -> int:
    """Train the job in the spec file into `output_dir`; the exit status of the contract above."""
    try:
        spec = load_spec(spec_path)
    except SpecError as error:
        _say(f"Error: bad spec {spec_path}:\n{error}")
        return 1
    # an FSDP run is a process group even of one process (a GPU shards over a group of one)
    if (num_processes > 1 or nodes() > 1 or spec.training.parallelism == "fsdp") and not started_as_rank():
        return _launch_processes(spec_path, output_dir, num_processes, model_name)

    from workers.training.loop import train
    from workers.training.observer import Observers
    from workers.training.progress_bar import ProgressBar
    from workers.training.trackers import Trackers

    try:
        with (
            ProgressBar(enabled=is_main_process()) as bar,
            Trackers(spec, output_dir, model_name or spec.model, main_process=is_main_process()) as trackers,
        ):
            result = train(spec, output_dir, observer=Observers(bar, trackers), model_name=model_name)
    except TrainingPaused as paused:
        _say(f"paused at step {paused.step}; run the same command again to resume")
        return EXIT_PAUSED
    except Superseded as superseded:  # the folder is another attempt's now: write nothing, not even the error
        _say(str(superseded))
        return EXIT_SUPERSEDED
    except (ReportedError, SpecError) as error:
        record_failure(
            output_dir, getattr(error, "code", "invalid_hyperparameters"), str(error), getattr(error, "param", None)
        )
        _say(f"Error: {error}")
        return 1
    except Exception as error:
        if lost_peer(error):  # no error.json: the worker queues the job again, to resume from its checkpoint
            _say(f"a process of this run was lost or cut off: {error}")
            return 1
        if is_disk_full(error):
            message = _clean_after_full_disk(RunLayout(Path(output_dir)), spec, error)
            _say(f"Error: {message}")
            return 1 if record_failure(output_dir, DISK_FULL, message) else EXIT_DISK_FULL
        if type(error).__name__ != "OutOfMemoryError":
            paths = {
                spec.model: model_name or spec.model,
                spec.training_file: "training_file",
                spec.validation_file or "": "validation_file",
                str(Path(output_dir).resolve()): "the run folder",
            }
            message = f"{type(error).__name__}: {replace_paths(str(error), paths)[:500]}"
            record_failure(output_dir, "internal_error", message)
            raise  # a bug: the traceback goes to the log
        record_failure(output_dir, "out_of_memory", OUT_OF_MEMORY)
        _say(f"Error: {OUT_OF_MEMORY}")
        return 1
    if is_main_process():
        print(f"done: {result.steps} steps, {result.trained_tokens} tokens trained; model in {result.final_dir}")
    return 0


def record_failure(output_dir: str, code: str, message: str, param: str | None = None) -> bool:
    """For the worker, which reports the failure to the user with this code (and the field to change).
    False if the report could not be written (the disk is full)."""
    if not is_main_process():
        return True
    layout = RunLayout(Path(output_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    try:
        write_error_report(RunFence.from_env(layout), code, message, param)
    except Superseded:  # the folder is a newer attempt's (or its job ended): the report is not ours to write
        return True
    except OSError as error:
        if not is_disk_full(error):
            raise
        return False
    return True


def _clean_after_full_disk(layout: RunLayout, spec, error: BaseException) -> str:
    """Remove the half-written checkpoint or final model (never read, but it holds the space) and
    say how much a checkpoint needs: as much as the newest complete one, or for the first one at
    least what was written of it and the estimate of `_first_checkpoint_bytes`."""
    _release_files(error)
    partials = [*layout.checkpoints.glob(".partial-*"), *layout.root.glob(".partial-*")]
    newest = latest_checkpoint(layout.checkpoints)
    written = max((_bytes(partial) for partial in partials), default=0)
    needed = _bytes(newest[1]) if newest else max(written, _first_checkpoint_bytes(spec))
    if is_main_process():
        ckpt.remove_partials(layout.checkpoints)
        ckpt.remove_partials(layout.root)
    return disk_full_message("writing a checkpoint or the model", needed, layout.root)


def _release_files(error: BaseException | None) -> None:
    """Close the files the failed writer left open (its frames hold them): only then does removing
    them free their space."""
    while error is not None:
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__
    gc.collect()


def _first_checkpoint_bytes(spec) -> int:
    """A full fine-tune's checkpoint holds the weights twice (the model, and Accelerate's state) and
    Adam's two moments: about four times the weights. A LoRA checkpoint is small: no estimate."""
    folder = Path(spec.model)
    if spec.training.lora or not folder.is_dir():
        return 0
    return 4 * sum(_bytes(path) for pattern in ("*.safetensors", "*.bin") for path in folder.glob(pattern))


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(child.stat().st_size for child in path.rglob("*") if child.is_file())


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def trainer_command(spec_path, output, processes: int = 1, model_name: str | None = None) -> list[str]:
    """The command that runs this entry point in a process of its own. `model_name`: the job's model
    as the client named it, for the trainer's messages (never a path)."""
    command = [sys.executable, "-m", "workers.training", str(spec_path), "--output", str(output)]
    command += ["--num-processes", str(max(1, processes))]
    return command + (["--model-name", model_name] if model_name else [])


def _launch_processes(spec_path: str, output_dir: str, num_processes: int, model_name: str | None) -> int:
    """N copies of this entry point, one per rank; Accelerate reads the process group from the env."""
    import torch

    command = trainer_command(spec_path, output_dir, 1, model_name)
    return launch(command, num_processes, paused_status=EXIT_PAUSED, use_cpu=not torch.cuda.is_available())


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.training", description="Train the job in SPEC.")
    parser.add_argument("spec", metavar="SPEC", help="the job spec (YAML or JSON)")
    parser.add_argument("--output", required=True, help="run folder; an existing one is resumed")
    parser.add_argument("--num-processes", type=int, default=1, help="data-parallel processes (one per GPU)")
    parser.add_argument("--model-name", default=None, help="what to call the model in messages and saved files")
    args = parser.parse_args(argv)
    return run_trainer(args.spec, args.output, max(1, args.num_processes), args.model_name)
