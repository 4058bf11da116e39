"""A trainer stand-in for the worker's fast tests: a real subprocess that keeps the trainer's side of
the contract (the run folder of lmtune/layout.py, fenced writes, the exit statuses and error
report of workers/training/errors.py and entry.py) without a model, so the worker's supervision
and outcome run in a second, not a minute.

    python stand_in_trainer.py PLAN SPEC --output DIR

PLAN (JSON) says what this run does: `steps` (the last step it reaches), `checkpoints` (the steps
it saves), then `end`:
  "succeed"                        the final model and result.json, exit 0
  {"report": CODE, "message": M}   error.json for this attempt, exit 1 (or `exit`)
  {"exit": N}                      exit N, reporting nothing (a crash)
  "wait"                           wait for SIGTERM: save a checkpoint, exit EXIT_PAUSED
  "ignore_term"                    wait, deaf to SIGTERM (until killed)
A run resumes after its newest complete checkpoint. Whatever it does, it stops with
EXIT_SUPERSEDED once its attempt no longer owns the folder, as the real trainer does. A node other
than rank 0 of a gang writes nothing and waits for the run to end.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from lmtune.fence import RunFence, Superseded, write_error_report
from lmtune.layout import RunLayout, checkpoint_name, latest_checkpoint, write_manifest
from lmtune.metrics_log import MetricsLog
from workers.training.checkpoints import partial_folder, publish
from workers.training.errors import EXIT_PAUSED, EXIT_SUPERSEDED
from workers.training.launcher import NODE_RANK_ENV, NODES_ENV

TICK = 0.05  # how often a waiting run looks at its fence and its signals
TOKENS_PER_STEP = 100


def main(plan: dict, spec_path: str, output: str) -> int:
    print(f"stand-in trainer, pid {os.getpid()}", flush=True)  # for tests that wait for it to be gone
    layout = RunLayout(Path(output))
    fence = RunFence.from_env(layout)
    if NODES_ENV in os.environ:  # for the log: where this node meets the others
        rendezvous = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        print(f"node {os.environ[NODE_RANK_ENV]} of {os.environ[NODES_ENV]} meets at {rendezvous}", flush=True)
    if os.environ.get(NODE_RANK_ENV, "0") != "0":
        return _wait_for_the_end(layout, fence)
    stop = []
    if plan.get("end") != "ignore_term":
        signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    spec = json.loads(Path(spec_path).read_text())
    missing = _missing_inputs(spec, layout)
    if missing:
        write_error_report(fence, "internal_error", f"the worker handed over no {missing}")
        return 1
    resumed = latest_checkpoint(layout.checkpoints)
    step = resumed[0] if resumed else 0
    while step < plan["steps"]:
        step += 1
        _train_step(layout, step, plan)
    end = plan["end"]
    if end == "succeed":
        _save(fence, layout.final, {"model.txt": "weights"})
        fence.write(layout.result, json.dumps({"trained_tokens": TOKENS_PER_STEP * step}))
        return 0
    if end in ("wait", "ignore_term"):
        while not stop:
            fence.check()
            time.sleep(TICK)
        _save(fence, layout.checkpoints / checkpoint_name(step), {"state.txt": f"step {step}"})
        return EXIT_PAUSED
    if "report" in end:
        write_error_report(fence, end["report"], end["message"], end.get("param"))
    return end.get("exit", 1)


def _missing_inputs(spec: dict, layout: RunLayout) -> str | None:
    """What the trainer would fail to read: the model, the files, the eval it grades with."""
    for name in ("model", "training_file", "validation_file"):
        if spec.get(name) and not Path(spec[name]).exists():
            return f"{name} ({spec[name]} is not there)"
    if spec.get("training", {}).get("eval_id") and not layout.eval_definition.exists():
        return "eval definition"
    return None


def _train_step(layout: RunLayout, step: int, plan: dict) -> None:
    MetricsLog(layout.metrics).append(
        {
            "step": step,
            "total_steps": plan["steps"],
            "train_loss": 2.0 / step,
            "train_mean_token_accuracy": 0.1 * step,
            "tokens": TOKENS_PER_STEP * step,
            "elapsed_seconds": 0.5 * step,
        }
    )
    if step in plan.get("checkpoints", ()):
        fence = RunFence.from_env(layout)
        _save(fence, layout.checkpoints / checkpoint_name(step), {"state.txt": f"step {step}"})
        samples = {"step": step, "generation_seconds": 0.25, "samples": [{"completion": f"an answer at {step}"}]}
        MetricsLog(layout.samples).append(samples)
    if step in plan.get("notices", ()):
        MetricsLog(layout.notices).append({"message": f"a notice at step {step}", "level": "warn"})


def _save(fence: RunFence, folder: Path, files: dict[str, str]) -> None:
    """A complete folder (a checkpoint, the final model): written aside with its manifest, then renamed."""
    partial = partial_folder(folder.parent, folder.name)
    partial.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (partial / name).write_text(text)
    write_manifest(partial)
    fence.check()
    publish(partial, folder)


def _wait_for_the_end(layout: RunLayout, fence: RunFence) -> int:
    """A member node: its part of the work is rank 0's to record."""
    while not layout.result.exists():
        fence.check()
        time.sleep(TICK)
    return 0


if __name__ == "__main__":
    plan, spec_path, output = json.loads(sys.argv[1]), sys.argv[2], sys.argv[4]
    try:
        sys.exit(main(plan, spec_path, output))
    except Superseded as superseded:
        print(superseded, file=sys.stderr)
        sys.exit(EXIT_SUPERSEDED)
