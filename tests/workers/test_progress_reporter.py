"""The reporter records a trainer's progress; a database that does not answer only delays it."""

from lmtune.layout import DataLayout
from lmtune.metrics_log import MetricsLog
from lmtune.store import history
from lmtune.store.database import Database
from lmtune.store.jobs import claim_next_job, create_job, get_job
from workers.ports import free_port
from workers.progress_reporter import ProgressReporter


def row(step: int) -> dict:
    return {
        "step": step,
        "total_steps": 10,
        "train_loss": 1.0 / step,
        "train_mean_token_accuracy": 0.5,
        "tokens": 100 * step,
        "elapsed_seconds": 0.1 * step,
    }


def running_job(db, tmp_path):
    """A job claimed by a worker, with its run folder: (job, attempt, data layout)."""
    create_job(db, owner="key-a", spec={}, queue="cpu")
    job, attempt = claim_next_job(db, "cpu", "worker-1", 60, 3)
    data = DataLayout(tmp_path)
    data.job(job.id).root.mkdir(parents=True)
    return job, attempt, data


def test_rows_written_while_the_database_is_unreachable_are_recorded_once_it_answers(tmp_path, db):
    job, attempt, data = running_job(db, tmp_path)
    log = MetricsLog(data.job(job.id).metrics)
    reporter = ProgressReporter(db, data, job.id, attempt)
    for step in (1, 2):
        log.append(row(step))
    reporter.poll()
    assert get_job(db, job.id).step == 2

    reporter.db = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/gone")  # nothing listens there
    for step in (3, 4):
        log.append(row(step))
    assert reporter.poll().cancel is False  # no exception: the trainer goes on
    assert get_job(db, job.id).step == 2

    reporter.db = db
    reporter.flush(between=lambda: None)
    assert get_job(db, job.id).step == 4
    events = history.events_after_seq(db, job.id, 0)
    assert sorted(e.step for e in events if e.type == "metrics") == [1, 2, 3, 4]


def test_a_sample_set_read_again_by_a_resumed_run_is_recorded_once(tmp_path, db):
    job, attempt, data = running_job(db, tmp_path)
    samples = MetricsLog(data.job(job.id).samples)

    def sample_set(step: int) -> dict:
        return {"step": step, "generation_seconds": 0.5, "samples": [{"completion": f"answer at {step}"}]}

    samples.append(sample_set(5))
    ProgressReporter(db, data, job.id, attempt).poll()
    samples.append(sample_set(10))
    ProgressReporter(db, data, job.id, attempt).poll()  # a resumed run's reporter reads the file from its start

    events = history.events_after_seq(db, job.id, 0)
    sample_events = sorted((e.step, e.message) for e in events if e.message.startswith("Samples at step"))
    assert [step for step, _ in sample_events] == [5, 10]
    assert "answer at 10" in sample_events[1][1]
