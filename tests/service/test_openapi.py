"""/openapi.json says what the API does: the statuses it sends, the bounds it checks, its auth."""

import pytest


@pytest.fixture
def spec(api):
    return api.client.get("/openapi.json").json()


def operations(spec):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_invalid_values_are_documented_as_the_400_that_is_sent(api, spec):
    for name, operation in operations(spec):
        responses = operation["responses"]
        assert "422" not in responses, name
        if operation.get("parameters") or operation.get("requestBody"):
            assert responses["400"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorResponse"
            }, name
    assert not {"HTTPValidationError", "ValidationError"} & set(spec["components"]["schemas"])
    sent = api.client.get("/v1/fine_tuning/jobs", params={"limit": 0}, headers=api.alice)
    assert sent.status_code == 400 and sent.json()["error"]["param"] == "limit"


def test_every_route_declares_the_bearer_scheme(spec):
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `lmtune keys create NAME`",
    }
    for name, operation in operations(spec):
        assert operation["security"] == [{"HTTPBearer": []}], name


def test_the_bounds_that_are_checked_are_in_the_schema(spec):
    schemas = spec["components"]["schemas"]
    create = schemas["JobCreate"]["properties"]
    assert create["suffix"]["anyOf"][0]["maxLength"] == 64
    assert create["seed"]["anyOf"][0]["maximum"] == 2**31 - 1 and create["gpus"]["maximum"] == 8
    assert create["metadata"]["anyOf"][0]["maxProperties"] == 16
    hyperparameters = schemas["Hyperparameters"]["properties"]
    assert {"type": "integer", "minimum": 1, "maximum": 50} == hyperparameters["n_epochs"]["anyOf"][0]
    assert {"type": "number", "exclusiveMinimum": 0, "maximum": 10} == hyperparameters["learning_rate_multiplier"][
        "anyOf"
    ][0]
    limit = next(p for p in spec["paths"]["/v1/fine_tuning/jobs"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)


def test_quota_and_stream_limits_are_documented(spec):
    assert "429" in spec["paths"]["/v1/fine_tuning/jobs"]["post"]["responses"]
    assert "429" in spec["paths"]["/v1/files"]["post"]["responses"]
    events = spec["paths"]["/v1/fine_tuning/jobs/{job_id}/events"]["get"]
    assert "429" in events["responses"] and "text/event-stream" in events["responses"]["200"]["content"]
    assert any(p["in"] == "header" and p["name"].lower() == "last-event-id" for p in events["parameters"])


def test_the_evals_and_graders_routes_are_documented_with_their_errors(spec):
    paths = spec["paths"]
    assert {"400", "404", "503"} <= set(paths["/v1/fine_tuning/alpha/graders/run"]["post"]["responses"])
    assert "429" in paths["/v1/evals/{eval_id}/runs"]["post"]["responses"]
    assert "409" in paths["/v1/evals/{eval_id}/runs/{run_id}/cancel"]["post"]["responses"]
    assert {"get", "post", "delete"} <= set(paths["/v1/evals/{eval_id}"])
    assert "/v1/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}" in paths
    assert {"get", "post"} <= set(paths["/v1/fine_tuning/jobs/{job_id}/evals"])
    grader = spec["components"]["schemas"]["GraderRunRequest"]["properties"]["grader"]
    assert {"string_check", "text_similarity", "python", "score_model", "label_model", "multi"} <= set(
        grader["discriminator"]["mapping"]
    )
