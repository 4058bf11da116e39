"""Tool calls through /v1/chat/completions and the unmodified openai SDK: `tools`, `tool_choice` and
`parallel_tool_calls` in, `message.tool_calls` (whole or as OpenAI's streamed deltas) out.

Two model servers sit behind the API's InferenceClient (its protocol is lmtune's own seam,
workers/serving/server.py): the real one with the random tiny model, whose answers never parse as
calls, and one whose model writes a given answer, read back by the real tool-call reader
(workers/serving/tool_answers.py)."""

import json

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from transformers import AutoTokenizer

from cli.sample_data import TOOLS
from lmtune.tool_calls import check_conversation
from service.deps import get_inference
from service.inference_client import InferenceClient
from workers.models.chat_format import conversation_prompt_ids
from workers.models.generation import Choice, GenerationParams
from workers.models.tiny_model import build_byte_tokenizer
from workers.models.tool_format import FALLBACK
from workers.serving.engine import ModelCache
from workers.serving.server import create_serving_app
from workers.serving.tool_answers import Reading, ToolRequest

WEATHER = TOOLS[0]  # get_weather(city)
TIME = TOOLS[1]  # get_local_time(city)
ASK = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
TWO_CALLS = (
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
)


def sdk(api) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=api.alice["Authorization"][7:], http_client=api.client, max_retries=0
    )


def writing(answer: str) -> FastAPI:
    """A model server whose model writes `answer` for every choice, a few characters at a time."""
    app = FastAPI()

    @app.post("/generate")
    async def generate(body: dict):
        events = [{"event": "start", "load_seconds": 0.0, "queue_seconds": 0.0, "prompt_tokens": 5}]
        request = ToolRequest(body.get("tools"), body.get("tool_choice", "auto"), body.get("parallel_tool_calls", True))
        reading = Reading(
            build_byte_tokenizer(),
            body["messages"],
            GenerationParams(n=body["n"], stop=tuple(body["stop"])),
            request,
            lambda: None,
            lambda index, text: events.append({"event": "text", "index": index, "text": text}),
            lambda index, call: events.append({"event": "tool_call", "index": index, "call": call}),
        )
        text = answer
        for stop in reading.params.stop:  # as generation cuts at a stop sequence
            text = text.split(stop)[0]
        for index in range(body["n"]):
            for start in range(0, len(text), 5):
                reading.on_text(index, text[start : start + 5])
        choices = [Choice(index, finish_reason="stop") for index in range(body["n"])]
        reading.finish(choices)
        events += [
            {"event": "finish", "index": c.index, "finish_reason": c.finish_reason, "completion_tokens": 9}
            for c in choices
        ]
        return StreamingResponse((json.dumps(event) + "\n" for event in events), media_type="application/x-ndjson")

    return app


def serve(api, app: FastAPI):
    inference = InferenceClient("http://models", transport=httpx.ASGITransport(app))
    api.client.app.dependency_overrides[get_inference] = lambda: inference
    return api


@pytest.fixture
def real(api):
    return serve(api, create_serving_app(ModelCache(device="cpu", max_models=2, max_bytes=1 << 30)))


def test_calls_come_back_as_tool_calls_whole(api):
    client = sdk(serve(api, writing(TWO_CALLS)))
    completion = client.chat.completions.create(model="lmtune-tiny", messages=ASK, tools=[WEATHER, TIME], n=2)
    for choice in completion.choices:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Let me check."
        calls = choice.message.tool_calls
        assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
            ("function", "get_weather", {"city": "Paris"}),
            ("function", "get_weather", {"city": "Oslo"}),
        ]
        assert all(c.id.startswith("call_") for c in calls) and len({c.id for c in calls}) == 2


def test_calls_stream_as_openai_streams_them_and_the_sdk_gathers_them(api):
    client = sdk(serve(api, writing(TWO_CALLS)))
    chunks = list(client.chat.completions.create(model="lmtune-tiny", messages=ASK, tools=[WEATHER], stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    first, arguments = deltas[0].tool_calls[0], deltas[1].tool_calls[0]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (
        0,
        "function",
        "get_weather",
        "",
    )
    assert first.id.startswith("call_") and arguments.id is None and arguments.function.name is None
    assert json.loads(arguments.function.arguments) == {"city": "Paris"}
    assert [d.tool_calls[0].index for d in deltas] == [0, 0, 1, 1]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Let me check."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]

    with client.chat.completions.stream(model="lmtune-tiny", messages=ASK, tools=[WEATHER]) as stream:
        gathered = stream.get_final_completion().choices[0]
    assert gathered.finish_reason == "tool_calls" and gathered.message.content == "Let me check."
    assert [json.loads(c.function.arguments)["city"] for c in gathered.message.tool_calls] == ["Paris", "Oslo"]


def test_one_call_when_parallel_calls_are_off(api):
    client = sdk(serve(api, writing(TWO_CALLS)))
    completion = client.chat.completions.create(
        model="lmtune-tiny", messages=ASK, tools=[WEATHER], parallel_tool_calls=False
    )
    [call] = completion.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Paris"}


@pytest.mark.parametrize(
    "answer",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call>',  # not JSON
        '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>',  # not a listed function
    ],
)
def test_an_answer_that_does_not_parse_stays_content(api, answer):
    client = sdk(serve(api, writing(answer)))
    [choice] = client.chat.completions.create(model="lmtune-tiny", messages=ASK, tools=[WEATHER]).choices
    assert choice.message.content == answer and choice.message.tool_calls is None and choice.finish_reason == "stop"
    streamed = client.chat.completions.create(model="lmtune-tiny", messages=ASK, tools=[WEATHER], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == answer


def test_with_tool_choice_none_nothing_is_read_as_a_call(api):
    client = sdk(serve(api, writing(TWO_CALLS)))
    [choice] = client.chat.completions.create(
        model="lmtune-tiny", messages=ASK, tools=[WEATHER], tool_choice="none"
    ).choices
    assert choice.message.content == TWO_CALLS and choice.message.tool_calls is None


HISTORY = [
    {"role": "system", "content": "Be brief."},
    *ASK,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"},
]


def test_the_real_model_server_renders_tools_and_history_as_in_training(real):
    client = sdk(real)
    conversation = check_conversation(HISTORY, [WEATHER], training=False)
    for tool_choice, offered in (("auto", True), ("none", False)):
        completion = client.chat.completions.create(
            model="lmtune-tiny", messages=HISTORY, tools=[WEATHER], tool_choice=tool_choice, max_tokens=4, temperature=0
        )
        tokenizer = AutoTokenizer.from_pretrained(real.settings.data_dir / "models" / "lmtune-tiny")
        expected = conversation_prompt_ids(tokenizer, conversation, FALLBACK, offer_tools=offered)
        assert completion.usage.prompt_tokens == len(expected)
        # the random model writes no call: what it writes is content
        assert completion.choices[0].message.tool_calls is None and completion.choices[0].finish_reason != "tool_calls"


def test_a_named_function_is_begun_for_the_model(real):
    [choice] = (
        sdk(real)
        .chat.completions.create(
            model="lmtune-tiny",
            messages=ASK,
            tools=[WEATHER, TIME],
            tool_choice={"type": "function", "function": {"name": "get_local_time"}},
            max_tokens=3,
            temperature=0,
        )
        .choices
    )
    # the random model cannot finish the call, so the begun call and its words come back as content
    assert choice.message.content.startswith('<tool_call>\n{"name": "get_local_time", "arguments":')


@pytest.mark.parametrize(
    "extra, param, words",
    [
        ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools[0].function.name", "letters"),
        (
            {"tools": [{**WEATHER, "function": {**WEATHER["function"], "parameters": {"type": "array"}}}]},
            "tools[0].function.parameters.type",
            '"type": "object"',
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools[1]", "listed twice"),
        ({"tool_choice": "required"}, "tool_choice", "no tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_local_time"}}},
            "tool_choice.function.name",
            "does not list",
        ),
        (
            {"messages": [*ASK, {"role": "tool", "tool_call_id": "call_7", "content": "x"}]},
            "messages[1].tool_call_id",
            "answers no call",
        ),
        (
            {
                "messages": [
                    *ASK,
                    {
                        **HISTORY[2],
                        "tool_calls": [
                            {**HISTORY[2]["tool_calls"][0], "function": {"name": "f", "arguments": "{'a': 1}"}}
                        ],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
            "not valid JSON",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "strict": "maybe"}}]},
            "tools.0.function.strict",
            "",
        ),
    ],
)
def test_bad_tools_are_400s_naming_the_field(api, extra, param, words):
    body = {"model": "lmtune-tiny", "messages": ASK, **extra}
    response = serve(api, writing("")).client.post("/v1/chat/completions", headers=api.alice, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"]
