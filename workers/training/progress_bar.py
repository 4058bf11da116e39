"""A terminal progress bar for `lmtune train`: step, loss and ETA."""

from __future__ import annotations

from tqdm import tqdm

from workers.training.observer import Observer


class ProgressBar(Observer):
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: tqdm | None = None

    def on_start(self, total_steps: int, start_step: int) -> None:
        if self.enabled:
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def on_step(self, metrics: dict) -> None:
        if self.bar is not None:
            shown = {"loss": f"{metrics['train_loss']:.4f}"}
            if "valid_loss" in metrics:
                shown["valid"] = f"{metrics['valid_loss']:.4f}"
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(metrics["step"] - self.bar.n)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()
