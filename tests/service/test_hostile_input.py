"""Hostile requests get a 4xx naming the problem in a few short lines, never a 500; nothing over a
limit is stored anywhere; no error names a server path."""

import json
import tempfile

import anyio
import httpx
import pytest

from lmtune.store import files as file_store
from lmtune.store.keys import authenticate
from lmtune.uploads import safe_filename
from tests.service.conftest import GOOD_FILE, jsonl, running_api

BOUNDARY = "hostile-boundary"
MAX_MESSAGE = 2000


def error_of(response, status, param=None):
    assert response.status_code == status, response.text[:500]
    body = response.json()["error"]
    assert len(body["message"]) < MAX_MESSAGE
    if param is not None:
        assert body["param"] == param
    return body


def with_line(line: bytes, at: int = 3) -> bytes:
    lines = GOOD_FILE.splitlines(keepends=True)
    lines[at - 1] = line + b"\n"
    return b"".join(lines)


@pytest.fixture
def roomy_api(tmp_path):
    """Room for a line of 100,000 characters under the upload limit."""
    with running_api(tmp_path, max_upload_bytes=1024 * 1024) as running:
        yield running


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """The process's temp folder, watched: an upload must not spool there."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def files_on_disk(api, temp_dir):
    """Files in the uploads folder and the temp folder (the database lives beside them)."""
    return [p for folder in (api.settings.data_dir / "files", temp_dir) for p in folder.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "line, problem",
    [
        (b"[" * 100_000, "line 3: invalid JSON: nested too deeply"),
        (b'{"text": ' + b"9" * 5000 + b"}", "line 3: invalid JSON: a number has too many digits"),
        (b'{"text": "caf\xe9"}', "line 3: not UTF-8 text (bad byte at position 14 of the line)"),
        (b'{"text": "a\x00b"}', "line 3: contains a NUL character"),
        (b'{"text": "a\\u0000b"}', "line 3: text contains a NUL character"),
        (b'{"prompt": "p", "completion": 1e999999}', 'line 3: "completion" must be a non-empty string'),
        (
            b'{"' + b"k" * 50_000 + b'": 1}',
            "line 3: unknown row shape with keys ['kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…]",
        ),
        (
            b'{"messages": [{"role": "' + b"r" * 50_000 + b'", "content": "x"}]}',
            "line 3: messages[0]: unknown role 'rrrrr",
        ),
    ],
)
def test_a_line_no_parser_can_take_is_a_400_naming_it(roomy_api, temp_dir, line, problem):
    body = error_of(roomy_api.upload(roomy_api.alice, with_line(line)), 400, "file")
    assert problem in body["message"]
    assert body["code"] == "invalid_file"
    assert files_on_disk(roomy_api, temp_dir) == []


def test_an_error_lists_a_few_problems_and_counts_the_rest(api):
    content = b"".join(b'{"x": %d}\n' % i for i in range(1234))
    message = error_of(api.upload(api.alice, content), 400, "file")["message"]
    assert message.count("unknown row shape") == 5
    assert message.endswith("… and 1,229 more problems")


async def oversize_form(limit: int, chunks: list[int]):
    """A multipart upload of about 4x `limit` bytes, sent in chunks with no Content-Length; `chunks`
    counts how many the server asked for."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    ).encode()
    line = b'{"text": "' + b"x" * 990 + b'"}\n'
    for _ in range(4 * limit // len(line)):
        chunks.append(1)
        yield line
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def post_streamed(api, path: str, headers: dict, content) -> httpx.Response:
    """A request whose body the app pulls chunk by chunk (TestClient would read it all first)."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=api.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lmtune") as client:
            return await client.post(path, headers=headers, content=content)

    return anyio.run(send)


def test_an_oversize_upload_without_a_length_is_cut_off_at_the_limit(api, temp_dir):
    chunks: list[int] = []
    response = post_streamed(
        api,
        "/v1/files",
        {**api.alice, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        oversize_form(api.settings.max_upload_bytes, chunks),
    )
    body = error_of(response, 413, "file")
    assert "larger than the limit of 65,536 bytes" in body["message"] and body["code"] == "file_too_large"
    assert "content-length" not in response.request.headers
    # read as it came and refused at the limit: the rest of the body was never asked for
    assert len(chunks) * 1001 < api.settings.max_upload_bytes + 2 * 1001
    assert files_on_disk(api, temp_dir) == []


def test_an_upload_declaring_a_length_over_the_limit_is_refused_before_it_is_read(api, temp_dir):
    big = jsonl([{"text": "x" * 1000}] * 200)
    response = api.client.post(
        "/v1/files",
        headers={**api.alice, "Content-Length": str(len(big) + 1000)},
        files={"file": ("big.jsonl", big)},
        data={"purpose": "fine-tune"},
    )
    assert error_of(response, 413, "file")["code"] == "file_too_large"
    assert files_on_disk(api, temp_dir) == []


@pytest.mark.parametrize("declared", [True, False])
def test_a_json_body_over_a_mebibyte_is_413(api, declared):
    body = json.dumps(
        {
            "model": "lmtune-tiny",
            "training_file": "file-x",
            "training": {"lora": {"target_modules": ["q_proj"] * 200_000}},
        }
    ).encode()
    headers = {**api.alice, "Content-Type": "application/json"}
    if declared:
        response = api.client.post("/v1/fine_tuning/jobs", headers=headers, content=body)
    else:
        response = post_streamed(api, "/v1/fine_tuning/jobs", headers, chunked(body))
        assert "content-length" not in response.request.headers
    error = error_of(response, 413)
    assert error["message"] == "the request body is larger than the limit of 1,048,576 bytes"


async def chunked(body: bytes):
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]


@pytest.mark.parametrize("content", [b"[" * 500_000, b'{"model": ' + b"9" * 100_000 + b"}", b'{"model": "\xff"}'])
def test_a_job_body_no_parser_can_take_is_a_400(api, content):
    response = api.client.post(
        "/v1/fine_tuning/jobs", headers={**api.alice, "Content-Type": "application/json"}, content=content
    )
    error_of(response, 400)


@pytest.mark.parametrize(
    "training, param, words",
    [
        ({"keep_checkpoints": 10**9}, "training.keep_checkpoints", "less than or equal to 100"),
        ({"checkpoint_every_steps": 10**12}, "training.checkpoint_every_steps", "less than or equal to 1000000"),
        ({"max_steps": 10**12}, "training.max_steps", "less than or equal to 10000000"),
        ({"eval_every_steps": 10**12}, "training.eval_every_steps", "less than or equal to 1000000"),
        ({"eval_sample_size": 10**9}, "training.eval_sample_size", "less than or equal to 100000"),
        ({"max_seq_length": 1_048_576}, "training.max_seq_length", "less than or equal to 131072"),
        ({"learning_rate": 1e9}, "training.learning_rate", "less than or equal to 100000"),
        ({"max_grad_norm": 1e300}, "training.max_grad_norm", "less than or equal to 10000"),
        ({"lora": {"alpha": 1e12}}, "training.lora.alpha", "less than or equal to 4096"),
        ({"lora": {"r": 10**6}}, "training.lora.r", "less than or equal to 1024"),
        (
            {"lora": {"target_modules": ["q_proj"] * 1000}},
            "training.lora.target_modules",
            "at most 64 items are allowed, got 1,000",
        ),
        ({"lora": {"target_modules": ["q" * 1000]}}, "training.lora.target_modules", "at most 128 characters"),
        ({"x" * 10_000: 1}, "training." + "x" * 64, "unknown field"),
    ],
)
def test_absurd_settings_are_refused_naming_the_field(api, training, param, words):
    response = api.client.post(
        "/v1/fine_tuning/jobs",
        headers=api.alice,
        json={"model": "lmtune-tiny", "training_file": "file-x", "training": training},
    )
    assert words in error_of(response, 400, param)["message"]


def test_a_body_with_thousands_of_bad_fields_reports_a_few(api):
    training = {f"field{i}": i for i in range(5000)}
    response = api.client.post(
        "/v1/fine_tuning/jobs",
        headers=api.alice,
        json={"model": "lmtune-tiny", "training_file": "f", "training": training},
    )
    message = error_of(response, 400)["message"]
    assert message.count("unknown field") == 5 and message.endswith("… and 4,995 more problems")


def test_every_training_setting_has_an_upper_bound_in_the_openapi_schema(api):
    schemas = api.client.get("/openapi.json").json()["components"]["schemas"]
    bounded = 0
    for model in ("TrainingOptions", "LoraOptions", "Hyperparameters"):
        for name, schema in schemas[model]["properties"].items():
            text = json.dumps(schema)
            if any(f'"type": "{kind}"' in text for kind in ("integer", "number", "array")):
                assert any(word in text for word in ('"maximum"', '"exclusiveMaximum"', '"maxItems"')), (
                    f"{model}.{name}"
                )
                bounded += 1
    assert bounded >= 18
    job = schemas["JobCreate"]["properties"]
    for name in ("model", "training_file", "validation_file", "suffix"):
        assert '"maxLength"' in json.dumps(job[name]), name
    assert job["suffix"]["pattern"] == "^[A-Za-z0-9._-]*$"


@pytest.mark.parametrize("suffix", ["../../etc/passwd", "a\nb", "nul\x00", "rtl\u202eevil", "x" * 65, "a b"])
def test_a_suffix_is_letters_digits_dot_underscore_dash(api, suffix):
    response = api.client.post(
        "/v1/fine_tuning/jobs", headers=api.alice, json={"model": "lmtune-tiny", "training_file": "f", "suffix": suffix}
    )
    error_of(response, 400, "suffix")


@pytest.mark.parametrize(
    "given, stored",
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\data\\train.jsonl", "train.jsonl"),
        ("a\x1bb\x00c\x7f.jsonl", "abc.jsonl"),
        ("evil\u202elmsj.jsonl", "evillmsj.jsonl"),
        ("zero\u200bwidth.jsonl", "zerowidth.jsonl"),
        ("..", "upload.jsonl"),
        ("n" * 400 + ".jsonl", "n" * 122 + ".jsonl"),
    ],
)
def test_a_stored_filename_is_a_safe_base_name(api, given, stored):
    form = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{given}"\r\n\r\n'
        ).encode()
        + GOOD_FILE
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    response = api.client.post(
        "/v1/files", headers={**api.alice, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, content=form
    )
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == stored
    # the bytes are stored under a server-made name whatever the client called them
    assert [p.name for p in (api.settings.data_dir / "files").iterdir()] == [f"{response.json()['id']}.jsonl"]


def test_a_filename_loses_line_breaks_and_path_parts():
    assert safe_filename("../dir/a\nb\r\u2028c.jsonl") == "abc.jsonl"
    assert safe_filename(None) == "upload.jsonl"


def test_a_results_csv_is_not_a_training_file(api):
    db = api.client.app.state.db
    owner = authenticate(db, api.alice["Authorization"].split()[1])
    file_store.add_file(
        db,
        file_id="file-results",
        owner=owner,
        filename="ftjob-1-results.csv",
        purpose="fine-tune-results",
        size=10,
        sha256="0" * 64,
        examples=0,
        path="files/file-results.csv",
    )
    good = api.upload(api.alice, GOOD_FILE).json()["id"]
    for field, body in [
        ("training_file", {"training_file": "file-results"}),
        ("validation_file", {"training_file": good, "validation_file": "file-results"}),
    ]:
        response = api.client.post("/v1/fine_tuning/jobs", headers=api.alice, json={"model": "lmtune-tiny", **body})
        message = error_of(response, 400, field)["message"]
        assert (
            message
            == f"{field}: file-results has purpose 'fine-tune-results'; give a file uploaded with purpose 'fine-tune'"
        )


def test_no_upload_error_names_a_server_path(api, temp_dir):
    messages = [
        api.upload(api.alice, with_line(b"{oops")).json()["error"]["message"],
        api.upload(api.alice, jsonl([{"text": "x" * 1000}] * 100)).json()["error"]["message"],
        api.client.post("/v1/files", headers=api.alice, content=b"not a form").json()["error"]["message"],
    ]
    for message in messages:
        assert str(api.settings.data_dir) not in message and str(temp_dir) not in message and "/tmp" not in message
