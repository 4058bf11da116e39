"""What a hostile or careless client gets back: errors that say what and where, ids shown whole and
other values short, OpenAI's error types, and headers that keep a browser from guessing or framing."""

import base64
import hashlib
import re

import pytest

from tests.service.conftest import GOOD_FILE, jsonl
from tests.service.test_api_errors import error_of


def test_a_body_that_is_not_json_is_told_what_and_where(api):
    response = api.client.post(
        "/v1/fine_tuning/jobs",
        headers={**api.alice, "Content-Type": "application/json"},
        content=b'{"model": "lmtune-tiny",\n "training_file": }',
    )
    error = error_of(response, 400)
    assert error["code"] == "invalid_json" and error["param"] is None
    assert "not valid JSON: Expecting value at line 2, column 19 (character 44)" in error["message"]


def test_a_model_id_in_a_404_is_shown_whole_and_a_longer_text_is_cut(api):
    model = f"ft:lmtune-tiny:{'s' * 64}:ftjob-0661f3c82f54f9d76aaaaaaaaaaa:ckpt-step-5"
    for route, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"prompt": "hi"}),
    ):
        error = error_of(api.client.post(route, headers=api.alice, json={"model": model, **body}), 404)
        assert repr(model) in error["message"], error["message"]
    error = error_of(api.client.get(f"/v1/fine_tuning/jobs/ftjob-{'9' * 300}", headers=api.alice), 404)
    assert f"ftjob-{'9' * 300}" in error["message"]
    huge = error_of(
        api.client.post("/v1/completions", headers=api.alice, json={"model": "x" * 512, "prompt": "hi"}), 404
    )
    assert len(huge["message"]) < 700


def test_error_types_are_openais(api, make_api):
    refused = error_of(api.client.delete("/v1/models/lmtune-tiny", headers=api.alice), 403)
    assert refused["type"] == "permission_error" and refused["code"] == "model_not_deletable"
    assert error_of(api.client.get("/v1/files/file-x", headers=api.alice), 404)["type"] == "invalid_request_error"
    small = make_api(quota_storage_bytes=100)
    over = error_of(small.upload(small.alice, GOOD_FILE), 429)
    assert over["code"] == "quota_exceeded" and over["type"] == "insufficient_quota"
    api.client.app.state.settings = api.settings.model_copy(update={"inference_url": "http://127.0.0.1:9"})
    down = api.client.post(
        "/v1/chat/completions",
        headers=api.alice,
        json={"model": "lmtune-tiny", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert error_of(down, 503)["type"] == "service_unavailable_error"


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_an_idempotency_key_out_of_bounds_is_refused_and_documented(api, key):
    error = error_of(api.upload({**api.alice, "Idempotency-Key": key}, GOOD_FILE), 400)
    assert error["param"] == "idempotency-key"
    spec = api.client.get("/openapi.json").json()
    for path in ("/v1/files", "/v1/fine_tuning/jobs"):
        [header] = [p for p in spec["paths"][path]["post"]["parameters"] if p["name"] == "idempotency-key"]
        assert (header["schema"]["anyOf"][0]["minLength"], header["schema"]["anyOf"][0]["maxLength"]) == (1, 255)


def test_a_training_line_cut_short_is_reported_where_it_ends(api):
    rows = jsonl([{"prompt": f"p{i}", "completion": "c"} for i in range(12)]).splitlines(keepends=True)
    rows[3] = b'{"prompt": "p3", "completion": "c"\n'  # the closing brace lost
    error = error_of(api.upload(api.alice, b"".join(rows)), 400)
    assert "line 4: invalid JSON (Expecting ',' delimiter at column 35, the end of the line" in error["message"]


def test_every_response_says_nosniff(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    answers = [
        api.client.get("/v1/files", headers=api.alice),
        api.client.get(f"/v1/files/{file_id}/content", headers=api.alice),
        api.client.get("/v1/files"),  # 401
        api.client.get("/nothing-here"),  # 404
        api.client.post("/v1/fine_tuning/jobs", headers={**api.alice, "Content-Length": str(2 << 20)}, content=b"x"),
        api.client.get("/docs"),
        api.client.get("/docs/assets/swagger-ui.css"),
        api.client.get("/openapi.json"),
        api.client.get("/", headers={"Accept": "text/html"}),
    ]
    for response in answers:
        assert response.headers.get("x-content-type-options") == "nosniff", (response.url, response.status_code)


def test_the_api_docs_cannot_be_framed_run_only_their_own_script_and_keep_no_key(api):
    response = api.client.get("/docs")
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    [inline] = re.findall(r"<script>(.*?)</script>", response.text, re.S)
    assert f"'sha256-{base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()}'" in policy
    assert '"persistAuthorization": true' not in response.text
