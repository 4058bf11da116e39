"""On every path OpenAI's API also has, lmtune's answers validate against OpenAI's published schemas
(pinned in openai_schemas.yaml); lmtune's extra fields are allowed, as OpenAI's schemas allow them."""

from pathlib import Path

import pytest
import yaml
from jsonschema import Draft4Validator

from lmtune.store.fine_tuned import add_fine_tuned_model
from lmtune.store.jobs import claim_job, finish_attempt
from lmtune.store.keys import authenticate
from tests.helpers import add_event, record_step
from tests.service.test_api_errors import create_job

PINNED = yaml.safe_load((Path(__file__).parent / "openai_schemas.yaml").read_text())


def as_json_schema(node):
    """OpenAPI 3.0's `nullable: true` as JSON Schema: null becomes one more accepted value. The rest
    is draft 4 (which the document follows, e.g. a boolean `exclusiveMinimum`)."""
    if isinstance(node, list):
        return [as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: as_json_schema(value) for key, value in node.items()}
    if not node.pop("nullable", False):
        return node
    if "type" in node and not ({"$ref", "oneOf", "anyOf", "allOf"} & set(node)):
        node["type"] = [node["type"], "null"]
        if "enum" in node:
            node["enum"] = [*node["enum"], None]
        return node
    return {"anyOf": [node, {"type": "null"}]}


COMPONENTS = as_json_schema(PINNED["components"])


def assert_matches(name: str, answer) -> None:
    validator = Draft4Validator({"$ref": f"#/components/schemas/{name}", "components": COMPONENTS})
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(answer.json())]
    assert answer.status_code == 200 and not problems, (answer.status_code, problems, answer.text[:500])


def test_the_normalisation_keeps_what_openai_refuses():
    validator = Draft4Validator({"$ref": "#/components/schemas/FineTuningJobCheckpoint", "components": COMPONENTS})
    assert not validator.is_valid({"id": "x"})  # required fields still required
    job_error = COMPONENTS["schemas"]["FineTuningJob"]["properties"]["error"]
    assert Draft4Validator(job_error).is_valid(None) and not Draft4Validator(job_error).is_valid({"code": "x"})
    draft4 = Draft4Validator({"type": "number", "minimum": 0, "exclusiveMinimum": True})
    assert not draft4.is_valid(0) and draft4.is_valid(0.1)


@pytest.fixture
def answers(api):
    """Every object in each state a client sees: a queued, a failed and a succeeded job with metrics
    events, message events, checkpoints and a fine-tuned model."""
    db, alice = api.client.app.state.db, api.alice
    queued = create_job(api, alice, metadata={"team": "a"}).json()
    failed, succeeded = create_job(api, alice).json(), create_job(api, alice, suffix="s").json()
    attempt = claim_job(db, failed["id"], "worker", 60, 3)
    finish_attempt(
        db,
        failed["id"],
        attempt,
        "failed",
        error_code="invalid_training_file",
        error_message="line 3: ...",
        error_param="training_file",
    )
    attempt = claim_job(db, succeeded["id"], "worker", 60, 3)
    add_event(db, succeeded["id"], "Fine-tuning job started")
    metrics = {"step": 5, "total_steps": 10, "train_loss": 1.5, "train_mean_token_accuracy": 0.4}
    for step in (5, 10):
        record_step(
            db,
            succeeded["id"],
            attempt,
            {**metrics, "step": step},
            (step, f"jobs/{succeeded['id']}/checkpoints/step-{step:06d}", {**metrics, "step": step}),
        )
    model = f"ft:lmtune-tiny:s:{succeeded['id']}"
    owner = authenticate(db, alice["Authorization"].split()[1])
    add_fine_tuned_model(
        db,
        model_id=model,
        owner=owner,
        base_model="lmtune-tiny",
        job_id=succeeded["id"],
        path=f"jobs/{succeeded['id']}/final",
    )
    finish_attempt(db, succeeded["id"], attempt, "succeeded", fine_tuned_model=model, trained_tokens=1234)
    return {"jobs": [queued, failed, succeeded], "model": model, "file": succeeded["training_file"]}


def test_every_answer_on_an_openai_path_validates_against_openai_schemas(api, answers):
    get, alice = api.client.get, {"headers": api.alice}
    assert_matches("ListFilesResponse", get("/v1/files", **alice))
    assert_matches("OpenAIFile", get(f"/v1/files/{answers['file']}", **alice))
    assert_matches("ListPaginatedFineTuningJobsResponse", get("/v1/fine_tuning/jobs", **alice))
    for job in answers["jobs"]:
        assert_matches("FineTuningJob", get(f"/v1/fine_tuning/jobs/{job['id']}", **alice))
        assert_matches("ListFineTuningJobEventsResponse", get(f"/v1/fine_tuning/jobs/{job['id']}/events", **alice))
        assert_matches(
            "ListFineTuningJobCheckpointsResponse", get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints", **alice)
        )
    assert_matches("FineTuningJob", api.client.post(f"/v1/fine_tuning/jobs/{answers['jobs'][0]['id']}/cancel", **alice))
    assert_matches("ListModelsResponse", get("/v1/models", **alice))
    assert_matches("Model", get("/v1/models/lmtune-tiny", **alice))
    assert_matches("Model", get(f"/v1/models/{answers['model']}", **alice))
    assert_matches("DeleteModelResponse", api.client.delete(f"/v1/models/{answers['model']}", **alice))
    assert_matches("DeleteFileResponse", api.client.delete(f"/v1/files/{answers['file']}", **alice))
    missing = get("/v1/files/file-missing", **alice)
    assert missing.status_code == 404 and Draft4Validator(
        {"$ref": "#/components/schemas/ErrorResponse", "components": COMPONENTS}
    ).is_valid(missing.json())


def test_fields_of_openais_current_schemas_beyond_the_pinned_copy(api, answers):
    # the files list names its first and last ids, and every event's `data` is an object
    files = api.client.get("/v1/files", headers=api.alice).json()
    assert (files["first_id"], files["last_id"], files["has_more"]) == (
        files["data"][0]["id"],
        files["data"][-1]["id"],
        False,
    )
    events = api.client.get(f"/v1/fine_tuning/jobs/{answers['jobs'][2]['id']}/events", headers=api.alice).json()["data"]
    assert {event["type"] for event in events} == {"message", "metrics"}
    assert all(isinstance(event["data"], dict) for event in events)
    assert next(e for e in events if e["type"] == "metrics")["data"]["train_loss"] == 1.5
