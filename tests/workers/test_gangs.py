"""A job with `nodes: 2` runs on two workers of its queue: the one that claims it hosts the gang and
rings for the other, which joins; a gang that does not fill in time hands the job back. The trainers
are stand-in processes keeping the trainer's contract (stand_in_trainer.py)."""

from lmtune.layout import DataLayout
from tests.waiting import wait_while_progressing
from tests.workers.worker_turns import SUCCEED, ended, job, make_worker, messages, submit


def test_a_two_node_job_runs_on_two_workers_that_meet_at_the_host_s_address(worker_api):
    api = worker_api
    job_id = submit(api, nodes=2)
    turn = make_worker(api, SUCCEED, name="worker-a").turn_in_background()
    wait_while_progressing(lambda: list(api.queue.sent), lambda sent: len(sent) == 2, what="the host to ring")
    assert api.queue.sent == [job_id, job_id]  # created, then one doorbell for the missing node
    make_worker(api, SUCCEED, name="worker-b").turn()  # joins as node 1 and runs its part to the end
    ended(turn)

    done = job(api, job_id)
    assert (done["status"], done["attempt"]) == ("succeeded", 1)
    logs = DataLayout(api.settings.data_dir).trainer_log(job_id).parent
    host = (logs / "trainer.log").read_text().splitlines()[1]
    member = (logs / "trainer-node1.log").read_text().splitlines()[1]
    assert host.startswith("node 0 of 2 meets at 127.0.0.1:") and member == host.replace("node 0", "node 1")


def test_a_gang_that_does_not_fill_in_time_hands_its_job_back_without_a_failure(make_worker_api):
    api = make_worker_api(gang_wait_seconds=0.5, max_attempts=1)
    job_id = submit(api, nodes=2)
    make_worker(api, SUCCEED).turn()
    handed_back = job(api, job_id)
    assert (handed_back["status"], handed_back["attempt"], handed_back["error"]) == ("queued", 1, None)
    assert messages(api, job_id)[-1].startswith("Only 1 of the 2 workers this job needs joined within")
    assert api.queue.sent == [job_id] * 3  # created, the doorbell for node 1, handed back
