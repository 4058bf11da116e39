"""`allowed_actions` on the job object is what the routes accept: a client (the dashboard's buttons)
can follow it without copying the state rules."""

import pytest

from lmtune.store.models import Job, JobAction, JobStatus
from tests.service.test_api_errors import create_job, error_of

ROUTES = {
    JobAction.CANCEL: ("POST", "/cancel"),
    JobAction.PAUSE: ("POST", "/pause"),
    JobAction.RESUME: ("POST", "/resume"),
    JobAction.DELETE: ("DELETE", ""),
}

# as docs/api.md tells clients
DOCUMENTED = {
    "queued": ["pause", "cancel"],
    "running": ["pause", "cancel"],
    "paused": ["resume", "cancel", "delete"],
    "succeeded": ["delete"],
    "failed": ["delete"],
    "cancelled": ["delete"],
}


@pytest.mark.parametrize("status", list(JobStatus))
def test_each_action_succeeds_exactly_when_the_job_lists_it(make_api, status):
    api = make_api(quota_active_jobs=10)  # room for every job made here (a resume takes a slot)
    file_id = create_job(api, api.alice).json()["training_file"]
    for action, (method, suffix) in ROUTES.items():
        job_id = api.client.post(
            "/v1/fine_tuning/jobs", headers=api.alice, json={"model": "lmtune-tiny", "training_file": file_id}
        ).json()["id"]
        with api.client.app.state.db.session() as session:  # where a worker would have taken it
            session.get(Job, job_id).status = status
        shown = api.client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=api.alice).json()
        listed = next(
            job
            for job in api.client.get("/v1/fine_tuning/jobs?limit=100", headers=api.alice).json()["data"]
            if job["id"] == job_id
        )
        assert shown["status"] == status and shown["allowed_actions"] == DOCUMENTED[status]
        assert listed["allowed_actions"] == DOCUMENTED[status]

        answer = api.client.request(method, f"/v1/fine_tuning/jobs/{job_id}{suffix}", headers=api.alice)
        if action in shown["allowed_actions"]:
            assert answer.status_code == 200, f"{action} of a {status} job: {answer.text}"
        else:
            refused = error_of(answer, 409)
            assert refused["code"] == "invalid_state" and f"cannot {action}" in refused["message"]


def test_an_action_answers_the_job_with_what_its_new_status_allows(api):
    job = create_job(api, api.alice).json()
    assert job["allowed_actions"] == ["pause", "cancel"]
    paused = api.client.post(f"/v1/fine_tuning/jobs/{job['id']}/pause", headers=api.alice).json()
    assert paused["status"] == "paused" and paused["allowed_actions"] == ["resume", "cancel", "delete"]
    cancelled = api.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=api.alice).json()
    assert cancelled["status"] == "cancelled" and cancelled["allowed_actions"] == ["delete"]
