"""/v1/chat/completions and /v1/completions through the unmodified openai SDK, against the API with
the model server's app wired in process (its HTTP hop is tested in tests/test_serving_processes.py)."""

import json

import httpx
import openai
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtune.store.fine_tuned import add_fine_tuned_model
from lmtune.store.keys import authenticate
from service.deps import get_inference
from service.inference_client import SECRET_HEADER, InferenceClient
from tests.service.conftest import GOOD_FILE
from workers.models.generation import prompt_ids
from workers.serving.engine import ModelCache
from workers.serving.server import create_serving_app

MESSAGES = [{"role": "system", "content": "Answer in capitals."}, {"role": "user", "content": "alpha bravo"}]


@pytest.fixture
def served(api):
    cache = ModelCache(device="cpu", max_models=2, max_bytes=1 << 30)
    inference = InferenceClient("http://models", transport=httpx.ASGITransport(create_serving_app(cache)))
    api.client.app.dependency_overrides[get_inference] = lambda: inference
    return api


def sdk(api, headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=headers["Authorization"][7:], http_client=api.client, max_retries=0
    )


def tiny_folder(api):
    return api.settings.data_dir / "models" / "lmtune-tiny"


def test_a_greedy_chat_completion_is_what_transformers_generates(served):
    client = sdk(served, served.alice)
    reply = client.chat.completions.with_raw_response.create(
        model="lmtune-tiny", messages=MESSAGES, temperature=0, max_tokens=12
    )
    completion = reply.parse()
    assert float(reply.headers["x-lmtune-load-seconds"]) > 0  # the first request loaded the model, and says so
    assert completion.object == "chat.completion" and completion.model == "lmtune-tiny"
    [choice] = completion.choices
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")

    tokenizer, model = (
        AutoTokenizer.from_pretrained(tiny_folder(served)),
        AutoModelForCausalLM.from_pretrained(tiny_folder(served)),
    )
    ids = prompt_ids(tokenizer, MESSAGES)
    expected = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=12)[0, len(ids) :]
    assert choice.message.content == tokenizer.decode(expected, skip_special_tokens=True)
    assert completion.usage.prompt_tokens == len(ids) and completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == len(ids) + 12

    again = client.chat.completions.with_raw_response.create(
        model="lmtune-tiny", messages=MESSAGES, temperature=0, max_tokens=12
    )
    assert float(again.headers["x-lmtune-load-seconds"]) < 0.1  # kept loaded
    assert again.parse().choices[0].message.content == choice.message.content


def test_streamed_chunks_add_up_to_the_whole_answer(served):
    client = sdk(served, served.alice)
    whole = client.chat.completions.create(model="lmtune-tiny", messages=MESSAGES, temperature=0, max_tokens=10)
    chunks = list(
        client.chat.completions.create(
            model="lmtune-tiny",
            messages=MESSAGES,
            temperature=0,
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        whole.choices[0].finish_reason
    ]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 10

    raw = served.client.post(
        "/v1/chat/completions",
        headers=served.alice,
        json={"model": "lmtune-tiny", "messages": MESSAGES, "max_tokens": 3, "stream": True},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_text_completions_sampling_n_seed_and_stop(served):
    client = sdk(served, served.alice)
    args = dict(model="lmtune-tiny", prompt="alpha bravo", max_tokens=8, temperature=1.0, top_p=0.9, n=3, seed=7)
    first, second = client.completions.create(**args), client.completions.create(**args)
    assert first.object == "text_completion" and len(first.choices) == 3
    assert [c.text for c in first.choices] == [c.text for c in second.choices]  # the same seed, the same answers
    assert (
        first.usage.completion_tokens == sum(8 if c.finish_reason == "length" else 0 for c in first.choices)
        or first.usage.completion_tokens <= 24
    )

    greedy = (
        client.completions.create(model="lmtune-tiny", prompt="alpha bravo", max_tokens=12, temperature=0)
        .choices[0]
        .text
    )
    stop = greedy[3:5]
    cut = client.completions.create(
        model="lmtune-tiny", prompt="alpha bravo", max_tokens=12, temperature=0, stop=[stop]
    ).choices[0]
    assert cut.text == greedy[: greedy.index(stop)] and cut.finish_reason == "stop"


def test_models_of_another_key_and_unknown_models_are_404(served, tmp_path):
    bob = authenticate(served.client.app.state.db, served.bob["Authorization"][7:])
    add_fine_tuned_model(
        served.client.app.state.db,
        model_id="ft:lmtune-tiny:bob:ftjob-1",
        owner=bob,
        base_model="lmtune-tiny",
        job_id="ftjob-1",
        path="jobs/ftjob-1/final",
    )
    for model in ("ft:lmtune-tiny:bob:ftjob-1", "gpt-9", "ft:lmtune-tiny:ftjob-2:ckpt-step-5"):
        with pytest.raises(openai.NotFoundError) as error:
            sdk(served, served.alice).chat.completions.create(model=model, messages=MESSAGES)
        assert error.value.body["code"] == "model_not_found" and model[:30] in error.value.body["message"]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": MESSAGES, "n": 99}, "n"),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": MESSAGES, "logit_bias": {"1": 2}}, "logit_bias"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ],
)
def test_bad_requests_name_the_field(served, body, param):
    response = served.client.post("/v1/chat/completions", headers=served.alice, json={"model": "lmtune-tiny", **body})
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_a_prompt_beyond_the_context_is_refused(served):
    response = served.client.post(
        "/v1/completions", headers=served.alice, json={"model": "lmtune-tiny", "prompt": "x" * 2100, "max_tokens": 4}
    )
    assert response.status_code == 400 and "context of 2048 tokens" in response.json()["error"]["message"]


def test_without_a_model_server_the_answer_is_503_not_500(api):
    api.client.app.state.settings = api.settings.model_copy(update={"inference_url": "http://127.0.0.1:9"})
    response = api.client.post(
        "/v1/chat/completions", headers=api.alice, json={"model": "lmtune-tiny", "messages": MESSAGES}
    )
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_server_unavailable"
    assert json.dumps(response.json()).count("Traceback") == 0


def test_a_model_neither_here_nor_fetchable_is_refused_at_once_for_completions_and_jobs(served, tmp_path, monkeypatch):
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(
        "models:\n  lmtune-tiny:\n    builtin: tiny\n  far-away:\n    source: lmtune-tests/not-in-any-cache\n"
    )
    monkeypatch.setenv("LMTUNE_MODELS_FILE", str(catalogue))  # the tests run with HF_HUB_OFFLINE=1
    listed = {m["id"]: m["ready"] for m in served.client.get("/v1/models", headers=served.alice).json()["data"]}
    assert listed == {"lmtune-tiny": True, "far-away": False}

    answer = served.client.post(
        "/v1/chat/completions", headers=served.alice, json={"model": "far-away", "messages": MESSAGES}
    )
    training = served.upload(served.alice, GOOD_FILE).json()["id"]
    job = served.client.post(
        "/v1/fine_tuning/jobs", headers=served.alice, json={"model": "far-away", "training_file": training}
    )
    for response in (answer, job):
        error = response.json()["error"]
        assert response.status_code == 503 and error["code"] == "model_not_available" and error["param"] == "model"
        assert "not in the Hugging Face cache" in error["message"] and "HF_HUB_OFFLINE" in error["message"]
        assert "hf download lmtune-tests/not-in-any-cache" in error["message"]
    assert served.queue.sent == []  # no job stored to fail later


def test_the_model_server_answers_only_requests_showing_its_secret(api, tiny_model):
    secret = "s" * 32
    models = TestClient(create_serving_app(ModelCache(device="cpu", max_models=1, max_bytes=1 << 30), secret=secret))
    body = {"model": {"source": str(tiny_model)}, "prompt": "alpha", "max_tokens": 2}
    for headers in ({}, {SECRET_HEADER: "s" * 31 + "t"}):
        assert models.post("/generate", json=body, headers=headers).status_code == 401
        assert models.get("/health", headers=headers).status_code == 401
    answered = models.post("/generate", json=body, headers={SECRET_HEADER: secret})
    assert answered.status_code == 200 and '"event": "finish"' in answered.text

    # an API given another secret says so, and not as a server error of its own
    other_secret = InferenceClient("http://models", "t" * 32, transport=httpx.ASGITransport(models.app))
    api.client.app.dependency_overrides[get_inference] = lambda: other_secret
    response = api.client.post("/v1/completions", headers=api.alice, json={"model": "lmtune-tiny", "prompt": "a"})
    assert response.status_code == 502 and "LMTUNE_INFERENCE_SECRET" in response.json()["error"]["message"]
