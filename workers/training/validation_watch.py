"""Early stopping and the best checkpoint, both judged on the periodic validation loss.

`training.early_stopping: {patience, min_delta}` stops the run once `valid_loss` has not improved on
the best so far by more than `min_delta` for `patience` evaluations in a row. `training.keep_best`
writes a checkpoint at each new best, keeps it from pruning, and makes it the final model. The
state is rebuilt from metrics.jsonl, so a resumed run counts as if it had never stopped.
"""

from __future__ import annotations

import math
from pathlib import Path

from accelerate import Accelerator

from lmtune.layout import RunLayout, checkpoint_name
from lmtune.metrics_log import MetricsLog
from lmtune.spec import TrainingSettings
from workers.models.loading import is_lora


class ValidationWatch:
    def __init__(self, settings: TrainingSettings, history: list[dict]):
        self.early_stopping, self.keep_best = settings.early_stopping, settings.keep_best
        self.best_loss, self.best_step, self.since_best = math.inf, None, 0
        self.new_best = self.stop = False
        for row in history:
            self.observe(row)

    def observe(self, row: dict) -> None:
        """After a step's metrics: is it a new best (`new_best`), and is it time to stop (`stop`)?"""
        self.new_best = False
        if "valid_loss" not in row:
            return
        loss, min_delta = row["valid_loss"], self.early_stopping.min_delta if self.early_stopping else 0.0
        if loss < self.best_loss - min_delta:
            self.since_best = 0
        else:
            self.since_best += 1
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.new_best = loss, row["step"], True
        self.stop = bool(self.early_stopping) and self.since_best >= self.early_stopping.patience

    @property
    def wants_checkpoint(self) -> bool:
        return (self.keep_best and self.new_best) or self.stop

    @property
    def protected_steps(self) -> set[int]:
        return {self.best_step} if self.keep_best and self.best_step is not None else set()

    def announce_stop(self, layout: RunLayout, step: int) -> None:
        message = (
            f"Early stopping at step {step}: the validation loss has not improved by more than "
            f"{self.early_stopping.min_delta:g} for {self.early_stopping.patience} evaluations "
            f"(best {self.best_loss:.4f} at step {self.best_step})"
        )
        MetricsLog(layout.notices).append(
            {
                "step": step,
                "message": message,
                "data": {"early_stopped_at": step, "best_step": self.best_step, "best_valid_loss": self.best_loss},
            }
        )

    def restore_best(self, accelerator: Accelerator, model, layout: RunLayout, step: int) -> None:
        """Every process loads the best checkpoint's weights before the final export."""
        if not self.keep_best or self.best_step in (None, step):
            return
        folder = layout.checkpoints / checkpoint_name(self.best_step)
        load_weights(accelerator.unwrap_model(model), folder)
        if accelerator.is_main_process:
            MetricsLog(layout.notices).append(
                {
                    "step": step,
                    "message": (
                        f"The final model is the checkpoint of step {self.best_step}, with the lowest validation loss "
                        f"({self.best_loss:.4f})"
                    ),
                    "data": {"best_step": self.best_step, "best_valid_loss": self.best_loss},
                }
            )


def load_weights(model, folder: Path) -> None:
    """A checkpoint's weights into a model of the same shape: the adapter for LoRA, else the model."""
    if is_lora(model):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
    else:
        from accelerate import load_checkpoint_in_model

        load_checkpoint_in_model(model, str(folder))
