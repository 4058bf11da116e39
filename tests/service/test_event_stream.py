"""The job event stream: keep-alive while nothing happens, resume with Last-Event-ID, a cap per key."""

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import pytest

from lmtune.store import history
from lmtune.store.jobs import request_cancel
from lmtune.store.keys import authenticate
from tests.helpers import add_event
from tests.service.test_api_errors import create_job, error_of

# only a safety net, so a stream that never sends fails instead of hanging; a keep-alive every
# 0.1 s arrives long before it
NEVER = 60


class Stream:
    """An open event stream, read line by line (the line iterator lives as long as the stream: a
    dropped iterator would close the response)."""

    def __init__(self, response):
        self.response, self.lines = response, response.iter_lines()

    def next_line(self) -> str:
        with ThreadPoolExecutor(1) as reader:
            return reader.submit(lambda: next(line for line in self.lines if line)).result(timeout=NEVER)


@contextmanager
def stream(api, headers, job_id, **request_headers):
    with api.client.stream(
        "GET",
        f"/v1/fine_tuning/jobs/{job_id}/events",
        params={"stream": "true"},
        headers={**headers, **request_headers},
    ) as response:
        yield Stream(response)


def finished_job_with_events(api, count: int) -> tuple[str, list[str]]:
    job_id = create_job(api, api.alice).json()["id"]
    db = api.client.app.state.db
    ids = [add_event(db, job_id, f"message {n}").id for n in range(count)]
    request_cancel(db, job_id, authenticate(db, api.alice["Authorization"].split()[1]))
    return job_id, ids + [e.id for e in history.events_after_seq(db, job_id, 0)[count:]]


def events_of(opened: Stream) -> list[str]:
    """The `id:` of each event, then `[DONE]`."""
    seen = []
    for line in opened.lines:
        if line.startswith("id: "):
            seen.append(line[4:])
        elif line == "data: [DONE]":
            seen.append("[DONE]")
    return seen


def test_a_stream_on_a_queued_job_sends_keepalive_comments(make_api):
    api = make_api(stream_keepalive_seconds=0.1)
    job_id = create_job(api, api.alice).json()["id"]  # queued: no worker, no event
    with stream(api, api.alice, job_id) as opened:
        assert opened.response.status_code == 200
        assert opened.response.headers["content-type"].startswith("text/event-stream")
        assert opened.next_line().startswith(": ping")  # a comment: EventSource clients ignore it


def test_last_event_id_resumes_after_that_event(api):
    job_id, ids = finished_job_with_events(api, 3)
    with stream(api, api.alice, job_id) as opened:
        assert events_of(opened) == [*ids, "[DONE]"]
    with stream(api, api.alice, job_id, **{"Last-Event-ID": ids[1]}) as opened:
        assert events_of(opened) == [*ids[2:], "[DONE]"]
    with stream(api, api.alice, job_id, **{"Last-Event-ID": "ftevent-unknown"}) as opened:
        assert events_of(opened) == [
            *ids,
            "[DONE]",
        ]  # an id it does not know: from the start  # an id it does not know: from the start


def test_a_key_over_its_stream_cap_gets_429_with_retry_after_and_a_closed_stream_frees_its_slot(make_api):
    api = make_api(max_streams_per_key=2, stream_keepalive_seconds=0.1)
    alices, bobs = create_job(api, api.alice).json()["id"], create_job(api, api.bob).json()["id"]
    with ExitStack() as open_streams:
        alices_streams = [open_streams.enter_context(stream(api, api.alice, alices)) for _ in range(2)]
        assert all(opened.next_line().startswith(": ping") for opened in alices_streams)
        refused = api.client.get(f"/v1/fine_tuning/jobs/{alices}/events", params={"stream": "true"}, headers=api.alice)
        assert error_of(refused, 429)["code"] == "too_many_streams"
        assert int(refused.headers["Retry-After"]) > 0
        with stream(api, api.bob, bobs) as opened:  # another key is not held back
            assert opened.next_line().startswith(": ping")
    with stream(api, api.alice, alices) as opened:  # both closed: alice may open streams again
        assert opened.next_line().startswith(": ping")


@pytest.mark.parametrize("path, allowed", [("/v1/files", "GET, POST"), ("/v1/fine_tuning/jobs/ftjob-x/cancel", "POST")])
def test_a_wrong_method_is_405_with_allow_naming_the_right_ones(api, path, allowed):
    response = api.client.put(path, headers=api.alice)
    assert error_of(response, 405)["type"] == "invalid_request_error"
    assert response.headers["Allow"] == allowed
