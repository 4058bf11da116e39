"""Early stopping and the best checkpoint, each judged on the validation metric it follows: the
periodic validation loss by default, or another `valid_` column such as an eval's score
(`{"metric": "valid_eval_exact", "mode": "max"}`, with training.eval_id).

`training.early_stopping: {patience, min_delta}` stops the run once its metric has not improved on
the best so far by more than `min_delta` for `patience` evaluations in a row. `training.keep_best`
writes a checkpoint at each new best, keeps it from pruning, and makes it the final model. The
state is rebuilt from metrics.jsonl, so a resumed run counts as if it had never stopped.
"""

from __future__ import annotations

import math
from pathlib import Path

from accelerate import Accelerator

from lmtune.layout import ADAPTER_WEIGHTS, RunLayout, checkpoint_name
from lmtune.metrics_log import MetricsLog
from lmtune.spec import FollowedMetric, TrainingOptions
from workers.models.errors import InvalidHyperparametersError
from workers.models.loading import is_lora


class _Best:
    """The best value of one followed metric so far, and the evaluations since it improved."""

    def __init__(self, followed: FollowedMetric, min_delta: float = 0.0):
        self.metric, self.min_delta = followed.metric, min_delta
        self.sign = -1.0 if followed.higher_is_better else 1.0  # compared as "lower is better"
        self.value, self.step, self.since = math.inf, None, 0

    @property
    def shown(self) -> float:
        return self.sign * self.value

    def observe(self, row: dict) -> bool:
        """Whether `row` (one with the metric) is a new best."""
        value = self.sign * row[self.metric]
        self.since = 0 if value < self.value - self.min_delta else self.since + 1
        if value < self.value:
            self.value, self.step = value, row["step"]
            return True
        return False

    def describe(self) -> str:
        return "the validation loss" if self.metric == "valid_loss" else self.metric


class ValidationWatch:
    def __init__(self, training: TrainingOptions, history: list[dict]):
        stopping, best_by = training.early_stopping, training.best_by
        self.early_stopping = _Best(stopping, stopping.min_delta) if stopping else None
        self.keep_best = _Best(best_by) if best_by else None
        self.patience = stopping.patience if stopping else 0
        self.new_best = self.stop = False
        for row in history:
            self.observe(row)

    def observe(self, row: dict) -> None:
        """After a step's metrics: is it a new best (`new_best`), and is it time to stop (`stop`)?"""
        self.new_best = False
        measured = sorted(key for key in row if key.startswith("valid_"))
        for field, watched in (("early_stopping", self.early_stopping), ("keep_best", self.keep_best)):
            if measured and watched and watched.metric not in row:  # an evaluation without it: never will
                raise InvalidHyperparametersError(
                    f"training.{field}.metric: this job's evaluations measure no {watched.metric}; "
                    f"they measure {', '.join(measured)}",
                    param=f"training.{field}.metric",
                )
        if self.keep_best and self.keep_best.metric in row:
            self.new_best = self.keep_best.observe(row)
        if self.early_stopping and self.early_stopping.metric in row:
            self.early_stopping.observe(row)
            self.stop = self.early_stopping.since >= self.patience

    @property
    def wants_checkpoint(self) -> bool:
        return self.new_best or self.stop

    @property
    def best_step(self) -> int | None:
        return self.keep_best.step if self.keep_best else None

    @property
    def protected_steps(self) -> set[int]:
        return {self.best_step} if self.best_step is not None else set()

    def announce_stop(self, layout: RunLayout, step: int) -> None:
        watched = self.early_stopping
        message = (
            f"Early stopping at step {step}: {watched.describe()} has not improved by more than "
            f"{watched.min_delta:g} for {self.patience} evaluations "
            f"(best {watched.shown:.4f} at step {watched.step})"
        )
        data = {"early_stopped_at": step, "best_step": watched.step, "metric": watched.metric, "best": watched.shown}
        if watched.metric == "valid_loss":
            data["best_valid_loss"] = watched.shown
        MetricsLog(layout.notices).append({"step": step, "message": message, "data": data})

    def restore_best(self, accelerator: Accelerator, model, layout: RunLayout, step: int) -> None:
        """Every process loads the best checkpoint's weights before the final export."""
        if self.best_step in (None, step):
            return
        best = self.keep_best
        folder = layout.checkpoints / checkpoint_name(best.step)
        load_weights(accelerator.unwrap_model(model), folder)
        if accelerator.is_main_process:
            which = "the lowest validation loss" if best.metric == "valid_loss" else f"the best {best.metric}"
            data = {"best_step": best.step, "metric": best.metric, "best": best.shown}
            if best.metric == "valid_loss":
                data["best_valid_loss"] = best.shown
            MetricsLog(layout.notices).append(
                {
                    "step": step,
                    "message": f"The final model is the checkpoint of step {best.step}, with {which} ({best.shown:.4f})",
                    "data": data,
                }
            )


def load_weights(model, folder: Path) -> None:
    """A checkpoint's weights into a model of the same shape: the adapter for LoRA, else the model."""
    if is_lora(model):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(folder / ADAPTER_WEIGHTS))
    else:
        from accelerate import load_checkpoint_in_model

        load_checkpoint_in_model(model, str(folder))
