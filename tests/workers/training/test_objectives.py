"""The objective seam: a training method plugs into the loop through its registry entry alone."""

import csv
import io
import shutil

import pytest
import torch

from lmtune.layout import RunLayout
from tests.helpers import metric_rows
from workers.progress_reporter import _event_data
from workers.training import objectives
from workers.training.loop import train
from workers.training.objectives.base import Sums
from workers.training.objectives.supervised import Supervised


class _CountingRows(Supervised):
    """Supervised, plus a metric summed rather than averaged (`rows`) and state of its own (the
    steps it made batches for), to show both reach the records and the checkpoints."""

    metric_names = (*Supervised.metric_names, "rows")
    loaded: list[dict] = []

    def __init__(self, spec, tokenizer):
        super().__init__(spec, tokenizer)
        self.batched_steps = 0

    def step_batches(self, run, step, ids):
        self.batched_steps += 1
        return super().step_batches(run, step, ids)

    def loss(self, model, batch):
        sums = super().loss(model, batch)
        rows = float(len(batch.inputs["input_ids"])) if batch.units else 0.0
        return Sums(sums.loss, {**sums.metrics, "rows": sums.loss.new_tensor(rows)})

    def summarize(self, units, sums):
        return {**super().summarize(units, sums), "rows": sums["rows"]}

    def state_dict(self):
        return {"batched_steps": torch.tensor(self.batched_steps)}

    def load_state_dict(self, state):
        _CountingRows.loaded.append(state)
        self.batched_steps = int(state["batched_steps"])


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setitem(objectives.OBJECTIVES, Supervised.method, _CountingRows)
    monkeypatch.setattr(_CountingRows, "loaded", [])
    return _CountingRows


def test_an_objectives_metrics_become_columns_of_the_records(counting, make_spec, chat_file, valid_file, tmp_path):
    run = tmp_path / "run"
    train(make_spec(chat_file, valid_file, epochs=1, eval_every_steps=2), run)
    rows = metric_rows(run)
    # 32 padded examples, 8 a step: each step's rows counted over the whole step, not averaged
    assert [row["train_rows"] for row in rows] == [8, 8, 8, 8]
    # the 12 validation examples: a sample of them every 2 steps, all of them at the epoch's end
    assert [row.get("valid_rows") for row in rows] == [None, 12, None, 12]
    assert rows[-1]["full_valid_rows"] == 12
    assert all(0 <= row["train_mean_token_accuracy"] <= 1 for row in rows)
    assert {"train_rows", "valid_rows", "full_valid_rows", "train_loss"} <= set(_event_data(rows[-1]))
    assert "learning_rate" not in _event_data(rows[-1])


def test_an_objectives_state_is_kept_in_checkpoints_and_restored_on_resume(counting, make_spec, chat_file, tmp_path):
    run = tmp_path / "run"
    spec = make_spec(chat_file, epochs=2, checkpoint_every_steps=3, keep_checkpoints=10)
    train(spec, run)
    layout = RunLayout(run)
    # back to the checkpoint of step 3, as if the run had stopped there
    layout.result.unlink()
    shutil.rmtree(layout.final)
    assert sorted(folder.name for folder in layout.checkpoints.iterdir()) == [
        "step-000003",
        "step-000004",
        "step-000006",
        "step-000008",
    ]
    for later in ("step-000004", "step-000006", "step-000008"):
        shutil.rmtree(layout.checkpoints / later)
    train(spec, run)
    # restored as the checkpoint of step 3 had it, then counted on to the end
    assert [int(state["batched_steps"]) for state in counting.loaded] == [3]
    assert (layout.checkpoints / "step-000008" / "objective_state.pt").exists()
    assert int(torch.load(layout.checkpoints / "step-000008" / "objective_state.pt")["batched_steps"]) == 8
    assert [row["step"] for row in metric_rows(run)] == list(range(1, 9))


def test_the_results_file_has_openais_columns_then_the_objectives_own(tmp_path):
    from lmtune.metrics_log import MetricsLog
    from workers.outcome import results_csv

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 1, "train_loss": 2.0, "train_mean_token_accuracy": 0.5, "train_rows": 8, "grad_norm": 1.0})
    log.append({"step": 2, "train_loss": 1.5, "train_mean_token_accuracy": 0.6, "train_rows": 8, "valid_loss": 1.7})
    table = list(csv.reader(io.StringIO(results_csv(log.read()))))
    assert table == [
        ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy", "train_rows"],
        ["1", "2.0", "0.5", "", "", "8"],
        ["2", "1.5", "0.6", "1.7", "", "8"],
    ]
