from lmtune.layout import RunLayout
from lmtune.metrics_log import MetricsLog
from workers.run_follower import RunFollower


def row(step):
    return {"step": step, "train_loss": 1.0 / step}


def test_the_follower_reads_each_new_row_once_and_waits_for_unfinished_lines(tmp_path):
    log, follower = MetricsLog(tmp_path / "metrics.jsonl"), RunFollower(RunLayout(tmp_path))
    assert follower.new_metrics() == []
    log.append(row(1))
    log.append(row(2))
    with log.path.open("a") as handle:
        handle.write('{"step": 3, "train_lo')  # a line being written
    assert [r["step"] for r in follower.new_metrics()] == [1, 2]
    with log.path.open("a") as handle:
        handle.write('ss": 0.3}\n')
    assert [r["step"] for r in follower.new_metrics()] == [3]


def test_a_resumed_run_rewriting_the_file_longer_than_before_is_read_from_the_start(tmp_path):
    log, follower = MetricsLog(tmp_path / "metrics.jsonl"), RunFollower(RunLayout(tmp_path))
    for step in range(1, 6):
        log.append(row(step))
    assert len(follower.new_metrics()) == 5
    log.truncate_after(3)  # the resumed trainer drops steps 4-5 ...
    for step in range(4, 12):  # ... and writes past where the reader had got to
        log.append({**row(step), "note": "resumed run with longer lines than before"})
    assert [r["step"] for r in follower.new_metrics()] == list(range(1, 12))


def test_sample_sets_and_notices_become_events_once_each(tmp_path):
    layout = RunLayout(tmp_path)
    follower = RunFollower(layout)
    samples, notices = MetricsLog(layout.samples), MetricsLog(layout.notices)
    samples.append({"step": 5, "generation_seconds": 0.25, "samples": [{"completion": "HELLO"}]})
    notices.append({"step": 6, "message": "Early stopping at step 6: ...", "data": {"early_stopped_at": 6}})
    messages = follower.new_messages()
    assert {"message": "Early stopping at step 6: ...", "data": {"early_stopped_at": 6}, "level": "info"} in messages
    [sampled] = [m for m in messages if m.get("step") == 5]
    assert sampled["message"] == "Samples at step 5: 1 answers in 0.2 s; the first: 'HELLO'"
    assert follower.new_messages() == []
