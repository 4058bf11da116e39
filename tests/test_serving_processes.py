"""Trying a fine-tuned model through real processes: `lmtune serve`, `lmtune serve-models` and a
worker on Redis and PostgreSQL, driven by the unmodified openai SDK."""

import asyncio
import socket
import time
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from cli.sample_data import chat_examples
from service.inference_client import SECRET_HEADER
from tests.deployment import job_progress
from tests.service.conftest import jsonl
from tests.waiting import wait_while_progressing, working

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]
PROMPT = [{"role": "system", "content": "Answer in capitals."}, {"role": "user", "content": "alpha bravo"}]
TRAINING = {
    "learning_rate": 1e-2,
    "checkpoint_every_steps": 5,
    "eval_every_steps": 5,
    "lr_scheduler": "constant",
    "lora": {"r": 8},
    "sample_prompts": [PROMPT],
    "sample_max_tokens": 16,
}


def finished(deployment, client, job_id):
    pids = [process.pid for process in deployment.processes]
    return wait_while_progressing(
        lambda: client.fine_tuning.jobs.retrieve(job_id),
        lambda job: job.status in ("succeeded", "failed"),
        progress=lambda job: (job_progress(job), working(*pids)),
        what=f"the end of {job_id}",
        diagnose=deployment.logs,
    )


def model_server(deployment, url: str) -> httpx.Client:
    """A client of the model server itself, with the secret the API shows it."""
    return httpx.Client(base_url=url, headers={SECRET_HEADER: deployment.env["LMTUNE_INFERENCE_SECRET"]}, timeout=60)


@pytest.fixture
def live(deployment):
    models_url = deployment.start_model_server(
        CUDA_VISIBLE_DEVICES="", LMTUNE_SERVE_CONCURRENCY="1", LMTUNE_SERVE_QUEUE="0", LMTUNE_SERVE_MAX_MODELS="3"
    )
    base_url = deployment.start_server()
    deployment.start_worker()
    key, other = deployment.create_key("sdk"), deployment.create_key("other")
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    yield client, http, openai.OpenAI(base_url=f"{base_url}/v1", api_key=other, max_retries=0), models_url, deployment
    http.close()


def test_a_lora_fine_tune_its_samples_and_its_checkpoints_answer_through_the_sdk(live):
    client, http, other, models_url, deployment = live
    training = client.files.create(
        file=("train.jsonl", jsonl(chat_examples(40, seed=5, spread=0.5))), purpose="fine-tune"
    )
    validation = client.files.create(file=("valid.jsonl", jsonl(chat_examples(12, seed=6))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="lmtune-tiny",
        training_file=training.id,
        validation_file=validation.id,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        extra_body={"training": TRAINING},
    )
    done = finished(deployment, client, job.id)
    assert done.status == "succeeded", done.error

    # samples at every checkpoint, each announced by an event
    sets = http.get(f"/v1/fine_tuning/jobs/{job.id}/samples").json()
    assert sets["object"] == "list" and [s["step"] for s in sets["data"]] == [5, 10]
    assert sets["data"][0]["samples"][0]["prompt"] == PROMPT
    page = http.get(
        f"/v1/fine_tuning/jobs/{job.id}/samples", params={"limit": 1, "after": sets["data"][0]["id"]}
    ).json()
    assert [s["step"] for s in page["data"]] == [10] and not page["has_more"]
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert sum(m.startswith("Samples at step") for m in messages) == 2
    assert http.get("/v1/fine_tuning/jobs/ftjob-nope/samples").status_code == 404

    # the fine-tuned model and its last checkpoint answer greedily what the trainer sampled
    [last] = [c for c in client.fine_tuning.jobs.checkpoints.list(job.id).data if c.step_number == 10]
    sampled = sets["data"][-1]["samples"][0]["completion"]
    for model in (done.fine_tuned_model, last.fine_tuned_model_checkpoint):
        reply = client.chat.completions.create(model=model, messages=PROMPT, temperature=0, max_tokens=16)
        assert reply.choices[0].message.content == sampled, model
    # a LoRA model is its adapter over the base, which is loaded once
    loaded = model_server(deployment, models_url).get("/health").json()["loaded"]
    assert len([name for name in loaded if "+" not in name]) == 1 and len(loaded) == 3, loaded

    # streaming through both hops; a loaded model's first token comes quickly
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=done.fine_tuned_model, messages=PROMPT, temperature=0, max_tokens=16, stream=True
    )
    chunks = iter(stream)
    first = next(c for c in chunks if c.choices and c.choices[0].delta.content)
    print(f"\nfirst token of a loaded tiny model through the API: {time.monotonic() - started:.3f} s")
    assert (
        first.choices[0].delta.content + "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == sampled
    )

    # another key sees none of it
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=done.fine_tuned_model, messages=PROMPT)
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=last.fine_tuned_model_checkpoint, messages=PROMPT)

    # a new job starts from the LoRA checkpoint (merged into its base first)
    follow_up = client.fine_tuning.jobs.create(
        model=last.fine_tuned_model_checkpoint,
        training_file=training.id,
        hyperparameters={"n_epochs": 1, "batch_size": 8},
        extra_body={"training": {"learning_rate": 1e-3, "sample_prompts": []}},
    )
    assert finished(deployment, client, follow_up.id).status == "succeeded"


def test_requests_beyond_the_queue_get_429_and_the_others_are_answered(live):
    client, http, _, _, deployment = live
    client.completions.create(model="lmtune-tiny", prompt="warm", max_tokens=1)  # loaded once
    body = {"model": "lmtune-tiny", "prompt": "alpha", "max_tokens": 1500, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as long_answer:  # holds the only slot
        lines = long_answer.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        busy = http.post("/v1/completions", json={**body, "stream": False, "max_tokens": 2})
        assert (
            busy.status_code == 429
            and busy.headers["retry-after"]
            and busy.json()["error"]["code"] == "rate_limit_exceeded"
        )
    # the long answer was abandoned: the slot frees and the next request is answered
    answer = wait_while_progressing(
        lambda: http.post("/v1/completions", json={**body, "stream": False, "max_tokens": 2}),
        lambda response: response.status_code == 200,
        progress=lambda r: working(*(p.pid for p in deployment.processes)),
        what="a free slot",
    )
    assert answer.json()["usage"]["completion_tokens"] == 2


@pytest.fixture
def shared(deployment):
    """A model server with 2 answers at once and 2 waiting, an API, and two keys' clients."""
    models_url = deployment.start_model_server(
        CUDA_VISIBLE_DEVICES="", LMTUNE_SERVE_CONCURRENCY="2", LMTUNE_SERVE_QUEUE="2"
    )
    base_url = deployment.start_server()
    keys = [deployment.create_key(name) for name in ("flood", "other")]
    status = model_server(deployment, models_url)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {keys[1]}"}, timeout=600) as other:
        other.post("/v1/completions", json={"model": "lmtune-tiny", "prompt": "warm", "max_tokens": 1})  # loaded
        yield base_url, keys, other, status, deployment
    status.close()


def until(deployment, status: httpx.Client, done, what: str) -> dict:
    """The model server's /health once `done(health)`, waiting while its processes work."""
    pids = [process.pid for process in deployment.processes]
    return wait_while_progressing(
        lambda: status.get("/health").json(),
        done,
        progress=lambda health: (health, working(*pids)),
        what=what,
        diagnose=deployment.logs,
    )


# the tiny model (seed 0) continues "beta" to the last token asked for ("alpha" stops after 22)
LONG = {"model": "lmtune-tiny", "prompt": "beta", "max_tokens": 1500, "n": 4, "temperature": 0}


def test_one_keys_long_streams_leave_another_keys_completion_a_place_and_a_turn(shared):
    base_url, (flood_key, _), other, status, deployment = shared

    async def flood_and_ask() -> tuple[list[int], httpx.Response, dict]:
        async with httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {flood_key}"}, timeout=600
        ) as flood:
            refused: list[int] = []

            async def stream() -> None:
                async with flood.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as response:
                    if response.status_code == 429:
                        refused.append(429)
                        return
                    async for _ in response.aiter_lines():
                        pass

            streams = [asyncio.create_task(stream()) for _ in range(4)]  # as many as the server has places
            await asyncio.to_thread(
                until, deployment, status, lambda h: h["admitted"] + len(refused) == 4, "the flood placed or refused"
            )
            answer = await asyncio.to_thread(
                other.post,
                "/v1/completions",
                json={"model": "lmtune-tiny", "prompt": "alpha", "max_tokens": 2, "temperature": 0},
            )
            after = await asyncio.to_thread(lambda: status.get("/health").json())
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
            return refused, answer, after

    refused, answer, after = asyncio.run(flood_and_ask())
    # the flooding key holds its share (half of the 4 places) and no more; the other key is answered
    # at once, taking turns with the long answers while they run
    assert len(refused) == 2
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 2
    assert after["admitted"] == 2, after  # the flood's answers were still under way


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_goes_away_frees_its_place_at_once(shared, stream):
    base_url, (flood_key, _), _, status, deployment = shared
    before = status.get("/health").json()["cancelled"]
    address = urlsplit(base_url)
    body = httpx.Request(
        "POST", f"{base_url}/v1/completions", json={**LONG, "max_tokens": 2000, "stream": stream}
    ).content
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {address.netloc}\r\nAuthorization: Bearer {flood_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((address.hostname, address.port)) as client:
        client.sendall(request)
        until(deployment, status, lambda h: h["running"] == 1, "the answer under way")
    # the client is gone: its answer stops long before its 2000 tokens (x4) and its place is free
    health = until(deployment, status, lambda h: h["admitted"] == 0, "the abandoned answer's place freed")
    assert health["cancelled"] == before + 1, health
