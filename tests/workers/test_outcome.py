"""How the worker ends an attempt from what its trainer left: only this attempt's error report
counts, and a full disk is retried after a back-off."""

from lmtune.fence import RunFence, claim_run_folder, write_error_report
from lmtune.layout import DataLayout
from lmtune.settings import Settings
from lmtune.store.history import events_after_seq
from lmtune.store.jobs import claim_next_job, create_job, get_job, request_cancel
from tests.helpers import MemoryQueue
from workers.outcome import Recorder
from workers.supervision import Ending
from workers.training.errors import EXIT_DISK_FULL


def attempt_of(db, tmp_path, attempt_wanted: int = 1, back_off=lambda seconds: True):
    """A job claimed `attempt_wanted` times (each earlier attempt crashed), its folder claimed: (job, recorder, run)."""
    settings = Settings(data_dir=tmp_path, database_url=db.url, max_attempts=5, disk_full_backoff_seconds=30)
    create_job(db, owner="key-a", spec={"model": "lmtune-tiny", "training_file": "file-a"}, queue="cpu")
    queue = MemoryQueue()
    for attempt in range(1, attempt_wanted + 1):
        job, claimed = claim_next_job(db, "cpu", "worker-1", 60, 5)
        recorder = Recorder(settings, db, queue, job, claimed, between=lambda: None, back_off=back_off)
        run = DataLayout(tmp_path).job(job.id)
        claim_run_folder(run, claimed)
        if attempt < attempt_wanted:
            recorder.retry_or_fail("killed")
    return job, recorder, run


def messages(db, job_id: str) -> list[str]:
    return [event.message for event in events_after_seq(db, job_id, 0)]


def test_a_superseded_trainer_s_late_report_does_not_fail_the_attempt_that_replaced_it(db, tmp_path):
    job, recorder, run = attempt_of(db, tmp_path, attempt_wanted=2)
    # attempt 1's trainer, woken after the takeover, wrote its report just before the fence stopped it
    run.error.write_text('{"attempt": 1, "code": "internal_error", "message": "FileNotFoundError", "param": null}')
    recorder.outcome(Ending(code=1, stop_reason=None))  # attempt 2's trainer crashed, reporting nothing
    after = get_job(db, job.id)
    assert (after.status, after.failures, after.error_code) == ("queued", 2, None)  # retried, not failed for good
    assert "FileNotFoundError" not in " ".join(messages(db, job.id))


def test_a_full_disk_retries_after_a_back_off_that_doubles_and_names_the_space(db, tmp_path):
    waits = []
    job, recorder, run = attempt_of(db, tmp_path, attempt_wanted=2, back_off=lambda s: waits.append(s) or True)
    message = "the disk is full: writing a checkpoint or the model needs at least 2.0 MiB and 1.0 KiB are free"
    write_error_report(RunFence(run, 2), "disk_full", message)
    recorder.outcome(Ending(code=1, stop_reason=None))
    assert waits == [60]  # 30 s, doubled once: attempt 1 had failed already
    after = get_job(db, job.id)
    assert (after.status, after.failures) == ("queued", 2)
    assert recorder.queue.sent == [job.id, job.id]  # sent again after each failed attempt
    assert f"Attempt 2 failed: {message}; the next attempt waited 60 s for space" in messages(db, job.id)[-1]


def test_a_cancel_during_the_back_off_ends_the_job(db, tmp_path):
    def cancelled_meanwhile(seconds):
        request_cancel(db, job.id, "key-a")
        return False

    job, recorder, run = attempt_of(db, tmp_path, back_off=cancelled_meanwhile)
    recorder.outcome(Ending(code=EXIT_DISK_FULL, stop_reason=None))  # not even the report fitted
    assert get_job(db, job.id).status == "cancelled"


def test_when_attempts_run_out_on_a_full_disk_the_job_fails_as_disk_full(db, tmp_path):
    job, recorder, run = attempt_of(db, tmp_path, attempt_wanted=5)
    recorder.outcome(Ending(code=EXIT_DISK_FULL, stop_reason=None))
    after = get_job(db, job.id)
    assert (after.status, after.error_code) == ("failed", "disk_full")
    assert after.error_message.startswith("the disk is full: writing the trainer's error report needs at least 1 B")
