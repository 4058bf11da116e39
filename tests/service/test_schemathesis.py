"""Generated requests against the live OpenAPI document (schemathesis), the model server wired in:
no server error, every answer has a documented status, content type and body schema, and a request
the document calls valid is accepted (or is a 404/409 of an object that does not exist or is in
another state). Bounded: a few examples an operation."""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from lmtune.settings import Settings
from lmtune.store.keys import create_key
from service.app import create_app
from service.deps import get_inference
from service.inference_client import InferenceClient
from workers.serving.engine import ModelCache
from workers.serving.server import create_serving_app

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 12
# requests whose fields are checked together, past what a schema can say, each refusal a 400 naming the
# field and tested elsewhere: a file's lines, a job's fields, a prompt and max_tokens against the model's
# context, a grader's formula against its graders' names, an eval's item_schema, a run's items against it,
# a conversation's messages (a tool message answers a call of the turn before), a webhook's URL (it must
# resolve to a public address)
CROSS_CHECKED = {
    "POST /v1/files",
    "POST /v1/fine_tuning/jobs",
    "POST /v1/fine_tuning/jobs/estimate",
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/fine_tuning/alpha/graders/run",
    "POST /v1/fine_tuning/alpha/graders/validate",
    "POST /v1/evals",
    "POST /v1/evals/{eval_id}/runs",
    "POST /v1/fine_tuning/jobs/{job_id}/evals",
    "POST /v1/webhook_endpoints",
    "POST /v1/webhook_endpoints/{endpoint_id}",
}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data = tmp_path_factory.mktemp("schemathesis")
    app = create_app(
        Settings(
            data_dir=data,
            database_url=f"sqlite:///{data / 'lmtune.db'}",
            redis_url=None,
            queue_prefix="st-",
            max_upload_bytes=64 * 1024,
            max_attempts=3,
            lease_seconds=60,
            sweep_seconds=30,
            cancel_grace_seconds=5,
            pause_grace_seconds=60,
            visibility_timeout=3600,
            stream_keepalive_seconds=0.5,
        )
    )
    inference = InferenceClient(
        "http://models",
        transport=httpx.ASGITransport(create_serving_app(ModelCache(max_models=1, max_bytes=1 << 30, device="cpu"))),
    )
    app.dependency_overrides[get_inference] = lambda: inference
    return app, create_key(app.state.db, "schemathesis")[1]


def test_generated_requests_get_documented_answers(live):
    app, key = live
    failures = []
    # operation by operation with hypothesis, rather than schemathesis' pytest plugin (which reads a
    # private attribute that pytest 9.2 removed)
    for operation in schemathesis.openapi.from_asgi("/openapi.json", app).get_all_operations():
        operation = operation.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case):
            excluded = [positive_data_acceptance] if case.operation.label in CROSS_CHECKED else []
            case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, excluded_checks=excluded)

        try:
            check()
        except Exception as failure:  # every operation is tried; all failures are reported together
            failures.append(f"{operation.label}: {failure}")
    assert not failures, "\n\n".join(failures)
