"""The run-folder fence: a trainer whose attempt was superseded writes nothing more."""

import pytest

from lmtune.fence import (
    ATTEMPT_ENV,
    RunFence,
    Superseded,
    claim_run_folder,
    close_run_folder,
    read_error_report,
    write_error_report,
)
from lmtune.layout import RunLayout
from lmtune.metrics_log import MetricsLog


def test_only_the_attempt_that_claimed_the_folder_last_may_write(tmp_path):
    layout = RunLayout(tmp_path / "run")
    claim_run_folder(layout, 1)
    first = RunFence(layout, 1)
    first.check()
    claim_run_folder(layout, 2)
    with pytest.raises(Superseded, match="attempt 2 owns"):
        first.check()
    RunFence(layout, 2).check()
    RunFence(layout, None).check()  # a run started by hand is not fenced


def test_a_superseded_trainer_stops_before_writing_anything(tmp_path, monkeypatch, make_spec, chat_file):
    from workers.training.loop import train

    layout = RunLayout(tmp_path / "run")
    claim_run_folder(layout, 2)
    monkeypatch.setenv(ATTEMPT_ENV, "1")
    with pytest.raises(Superseded):
        train(make_spec(chat_file, epochs=1), layout.root)
    assert sorted(p.name for p in layout.root.iterdir()) == ["attempt"]


def test_a_run_started_again_without_a_checkpoint_writes_each_step_once(tmp_path, make_spec, chat_file):
    from workers.training.loop import train

    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    log = MetricsLog(layout.metrics)
    for step in (1, 2):  # a trainer killed before its first checkpoint
        log.append({"step": step, "train_loss": 9.0})
    with layout.metrics.open("a") as handle:
        handle.write('{"step": 3, "tra')  # cut short by the kill
    train(make_spec(chat_file, epochs=1, checkpoint_every_steps=100), layout.root)
    rows = log.read()
    assert [row["step"] for row in rows] == [1, 2, 3, 4] and rows[0]["train_loss"] != 9.0


def test_a_closed_folder_stops_every_attempt_and_their_appends(tmp_path, monkeypatch):
    layout = RunLayout(tmp_path / "run")
    claim_run_folder(layout, 3)
    monkeypatch.setenv(ATTEMPT_ENV, "3")
    MetricsLog(layout.metrics).append({"step": 1})
    close_run_folder(layout)  # the sweep ended the job: its orphan trainer must write nothing more
    with pytest.raises(Superseded, match="no attempt owns"):
        MetricsLog(layout.metrics).append({"step": 2})
    with pytest.raises(Superseded):
        RunFence(layout, 3).write(layout.result, "{}")
    assert [row["step"] for row in MetricsLog(layout.metrics).read()] == [1]
    assert not layout.result.exists()


def test_the_worker_reads_only_the_error_report_of_its_own_attempt(tmp_path):
    layout = RunLayout(tmp_path / "run")
    claim_run_folder(layout, 1)
    write_error_report(RunFence(layout, 1), "internal_error", "FileNotFoundError: .partial-step-000010")
    claim_run_folder(layout, 2)
    assert read_error_report(layout, 2) is None  # attempt 1's late report is not attempt 2's failure
    assert read_error_report(layout, 1)["code"] == "internal_error"
    with pytest.raises(Superseded):  # and attempt 1 can no longer write one
        write_error_report(RunFence(layout, 1), "internal_error", "again")
    write_error_report(RunFence(layout, 2), "training_diverged", "the loss is NaN", "training.learning_rate")
    assert read_error_report(layout, 2) == {
        "attempt": 2,
        "code": "training_diverged",
        "message": "the loss is NaN",
        "param": "training.learning_rate",
    }
    layout.error.write_text("")  # cut short (a full disk): no report, never a crash
    assert read_error_report(layout, 2) is None
