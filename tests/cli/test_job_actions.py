"""`lmtune jobs cancel|pause` show the job after the action, not before it: a running job is waited
for (up to --wait seconds) until its trainer has stopped; past that the command says what is pending."""

import json
import threading

from lmtune.spec import parse_spec
from lmtune.store.jobs import claim_job, create_job, finish_attempt, get_job
from tests.cli.test_client import server  # noqa: F401  (the fixture)
from tests.service.conftest import api, make_api  # noqa: F401
from tests.waiting import wait_while_progressing


def running_job(server) -> tuple[str, int]:  # noqa: F811
    spec = parse_spec({"model": "lmtune-tiny", "training_file": "file-x"})
    job_id = create_job(server.db, owner=server.owner, spec=spec.model_dump(mode="json"), queue="cpu").id
    return job_id, claim_job(server.db, job_id, "test-worker", lease_seconds=60, max_attempts=3)


def worker_honouring(server, job_id: str, attempt: int, flag: str, status: str) -> threading.Thread:  # noqa: F811
    """Stands for the worker: once the request is stored, the trainer stops and the attempt ends."""

    def honour():
        wait_while_progressing(lambda: getattr(get_job(server.db, job_id), flag), bool, what=f"{flag} stored")
        finish_attempt(server.db, job_id, attempt, status)

    thread = threading.Thread(target=honour, daemon=True)
    thread.start()
    return thread


def test_cancel_shows_the_job_once_its_trainer_has_stopped(server):  # noqa: F811
    job_id, attempt = running_job(server)
    worker = worker_honouring(server, job_id, attempt, "cancel_requested", "cancelled")
    done = server.lmtune("jobs", "cancel", job_id, "--wait", "600")  # it ends as soon as the job has
    worker.join()
    assert done.exit_code == 0, done.output
    assert "cancelled" in done.output and "running" not in done.output


def test_pause_shows_the_job_once_its_checkpoint_is_written(server):  # noqa: F811
    job_id, attempt = running_job(server)
    worker = worker_honouring(server, job_id, attempt, "pause_requested", "paused")
    done = server.lmtune("jobs", "pause", job_id, "--json", "--wait", "600")
    worker.join()
    assert done.exit_code == 0 and json.loads(done.output)["status"] == "paused"


def test_an_action_still_pending_after_the_wait_says_so(server):  # noqa: F811
    job_id, _ = running_job(server)
    done = server.lmtune("jobs", "pause", job_id, "--wait", "0")
    assert done.exit_code == 0
    assert "pause requested: it pauses once its trainer has written a checkpoint" in done.output
    assert f"lmtune jobs get {job_id}" in done.output


def test_downloading_a_model_not_written_yet_draws_no_progress_bar(server, tmp_path):  # noqa: F811
    job_id, _ = running_job(server)
    done = server.lmtune("jobs", "download", job_id, "--output", str(tmp_path / "model"))
    assert done.exit_code == 1
    assert done.output == f"Error: job {job_id} has no final model yet: it is written when the job succeeds\n"
    assert not (tmp_path / "model").exists()
