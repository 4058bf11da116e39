"""POST /v1/chat/completions and /v1/completions in OpenAI's shapes, for the key's fine-tuned models,
their checkpoints and the catalogue models.

The API resolves the model id (checking that the key owns it) to folders in the data folder and
hands them to the model server, which loads and answers; the answer streams through as OpenAI's
server-sent chunks, or is gathered into one object. Loading and queueing time are reported in the
`X-Lmtune-Load-Seconds` and `X-Lmtune-Queue-Seconds` headers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lmtune.ids import new_id
from lmtune.layout import DataLayout
from lmtune.model_refs import ModelNotFound, ModelRef, resolve_model
from lmtune.problems import quote, quote_names
from lmtune.services import RequestError, available
from lmtune.tool_calls import (
    MAX_CALLS,
    MAX_TOOLS,
    Conversation,
    ToolProblem,
    check_conversation,
    function_names,
)
from service.deps import DbDep, InferenceDep, OwnerDep, SettingsDep
from service.errors import documented, error_response, error_type
from service.inference_client import InferenceClient, ServerBusy, Upstream, upstream_error

router = APIRouter(prefix="/v1", tags=["inference"])
MAX_N = 4
MAX_STOP = 4
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS = 4096
CLIENT_GONE = 499  # what the log shows for a request whose client disconnected (nginx's code; nobody reads it)
# a seed every JSON client keeps exact (JavaScript's safe integers; the OpenAPI document holds its bounds as
# floats); the sampler itself takes any integer
SEED_MIN, SEED_MAX = -(2**53 - 1), 2**53 - 1


StopText = Annotated[str, Field(min_length=1, max_length=256)]


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=512)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(1.0, ge=0, le=2, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(
        None, ge=SEED_MIN, le=SEED_MAX, description="The same seed and request give the same answers"
    )
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: dict[str, bool] | None = Field(
        None, description="{include_usage: true} adds a last chunk with usage"
    )
    user: str | None = Field(None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        return [value] if isinstance(value, str) else value or []

    def generation(self, max_tokens: int | None) -> dict:
        return {
            "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop or [],
            "seed": self.seed,
            "n": self.n,
        }


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON object, encoded as a string")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(
        None, description="May be null on an assistant message with tool_calls"
    )
    name: str | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_CALLS)] | None = None
    tool_call_id: str | None = Field(None, description="On a tool message: the id of the call it answers")

    def plain(self) -> dict:
        """The message as lmtune/tool_calls.py checks it: a developer message is a system one, text parts joined."""
        message = self.model_dump(exclude_none=True, exclude={"content"})
        if self.role == "developer":
            message["role"] = "system"
        if self.content is not None:
            message["content"] = (
                self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
            )
        return message


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="1 to 64 letters, digits, underscores or dashes")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description='A JSON Schema of "type": "object"')
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class ChatCompletionRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="Default: auto with tools, none without"
    )
    parallel_tool_calls: bool | None = Field(None, description="false: at most one call in an answer")

    def conversation(self) -> Conversation:
        """The messages and tools, checked as training rows are (each problem a 400 naming its field)."""
        tools = [tool.model_dump(exclude_none=True) for tool in self.tools] if self.tools is not None else None
        try:
            conversation = check_conversation(
                [message.plain() for message in self.messages], tools, None, self.parallel_tool_calls, training=False
            )
        except ToolProblem as problem:
            raise RequestError(400, str(problem), param=problem.field, code="invalid_value") from None
        if isinstance(self.tool_choice, NamedToolChoice) or self.tool_choice == "required":
            if not tools:
                raise RequestError(
                    400, "tool_choice: a call is required, but the request has no tools", param="tool_choice"
                )
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in function_names(
            tools
        ):
            raise RequestError(
                400,
                f"tool_choice: names function {quote(self.tool_choice.function.name)}, which tools does not list "
                f"(it lists {quote_names(function_names(tools))})",
                param="tool_choice.function.name",
            )
        return conversation

    def tool_settings(self, conversation: Conversation) -> dict:
        choice = self.tool_choice or ("auto" if conversation.tools else "none")
        return {
            "tools": conversation.tools,
            "tool_choice": choice if isinstance(choice, str) else choice.model_dump(),
            "parallel_tool_calls": conversation.parallel_tool_calls,
        }


class CompletionRequest(_Common):
    # OpenAI also takes a batch of prompts; lmtune answers one (a list of one is accepted as OpenAI's SDK may send it)
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        return value if isinstance(value, str) else value[0]


@router.post(
    "/chat/completions", responses={**documented(400, 404, 429, 503), 200: {"content": {"text/event-stream": {}}}}
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    owner: OwnerDep,
    db: DbDep,
    settings: SettingsDep,
    inference: InferenceDep,
):
    """OpenAI's chat completion (`stream: true` for server-sent chunks); the chat template is the model's,
    and tool calls are in the format it was trained in."""
    conversation = body.conversation()
    payload = {
        "messages": conversation.messages,
        **body.tool_settings(conversation),
        **body.generation(body.max_completion_tokens or body.max_tokens),
    }
    return await _complete(request, inference, body, payload, "chat.completion", db, settings, owner)


@router.post("/completions", responses={**documented(400, 404, 429, 503), 200: {"content": {"text/event-stream": {}}}})
async def completions(
    body: CompletionRequest,
    request: Request,
    owner: OwnerDep,
    db: DbDep,
    settings: SettingsDep,
    inference: InferenceDep,
):
    """OpenAI's (legacy) text completion: the prompt is continued as is."""
    payload = {"prompt": body.prompt, **body.generation(body.max_tokens)}
    return await _complete(request, inference, body, payload, "text_completion", db, settings, owner)


async def _complete(
    request: Request, inference: InferenceClient, body: _Common, payload: dict, kind: str, db, settings, owner: str
):
    try:
        ref = await asyncio.to_thread(resolve_model, db, DataLayout(settings.data_dir), body.model, owner)
    except ModelNotFound as error:
        raise RequestError(404, str(error), param="model", code="model_not_found") from None
    await asyncio.to_thread(available, ref, body.model)
    # a client that goes away stops its request at once, while it waits for a place or its whole answer
    opening = asyncio.ensure_future(inference.open(body.model, {"model": _served(ref), "key": owner, **payload}))
    if not await _while_connected(request, opening):
        return Response(status_code=CLIENT_GONE)
    try:
        upstream = opening.result()
    except ServerBusy as busy:
        request.app.state.metrics.server_busy.inc()
        response = error_response(429, busy.message, code=busy.code)
        response.headers["Retry-After"] = busy.retry_after
        return response
    request.app.state.metrics.observe_model_server(upstream.start)
    headers = {
        "X-Lmtune-Load-Seconds": str(upstream.start["load_seconds"]),
        "X-Lmtune-Queue-Seconds": str(upstream.start["queue_seconds"]),
    }
    shape = _Shape(kind, body.model, body.n, upstream.start["prompt_tokens"])
    if body.stream:  # a streamed response stops by itself when its client goes away
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(
            _stream(upstream, shape, include_usage),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    gathered = asyncio.ensure_future(_gather(upstream, shape))
    if not await _while_connected(request, gathered):
        await upstream.close()
        return Response(status_code=CLIENT_GONE)
    gathered.result()
    return JSONResponse(shape.whole(), headers=headers)


async def _while_connected(request: Request, task: asyncio.Future) -> bool:
    """Waits for `task`; if the client disconnects first, cancels it and answers False."""
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task.done():
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False


async def _gather(upstream: Upstream, shape: _Shape) -> None:
    async for event in upstream.events():
        if event["event"] == "error":
            raise upstream_error(shape.model, event)
        shape.add(event)


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (its body is read: the server has nothing else to tell)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _served(ref: ModelRef) -> dict:
    """What the model server is given: folders found through the store, never a client's path."""
    served = asdict(ref)
    served.pop("id")
    return served


class _Shape:
    """OpenAI's objects for one answer: built whole, or chunk by chunk as the events come."""

    def __init__(self, kind: str, model: str, n: int, prompt_tokens: int):
        self.kind, self.model = kind, model
        self.id = new_id("chatcmpl" if kind == "chat.completion" else "cmpl")
        self.created = int(time.time())
        self.texts, self.finish = [""] * n, [None] * n
        self.calls: list[list[dict]] = [[] for _ in range(n)]
        self.prompt_tokens, self.completion_tokens = prompt_tokens, 0

    def add(self, event: dict) -> None:
        if event["event"] == "text":
            self.texts[event["index"]] += event["text"]
        elif event["event"] == "tool_call":
            self.calls[event["index"]].append(_tool_call(event["call"]))
        elif event["event"] == "finish":
            self.finish[event["index"]] = event["finish_reason"]
            self.completion_tokens += event["completion_tokens"]

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def whole(self) -> dict:
        if self.kind == "chat.completion":
            choices = [
                {"index": i, "message": _message(text, calls), "finish_reason": reason, "logprobs": None}
                for i, (text, calls, reason) in enumerate(zip(self.texts, self.calls, self.finish))
            ]
        else:
            choices = [
                {"index": i, "text": text, "finish_reason": reason, "logprobs": None}
                for i, (text, reason) in enumerate(zip(self.texts, self.finish))
            ]
        return self._object(self.kind, choices, usage=self.usage())

    def chunk(self, index: int, text: str | None = None, finish_reason: str | None = None, first: bool = False) -> dict:
        if self.kind == "chat.completion":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return self._object("chat.completion.chunk", [choice])
        return self._object(
            "text_completion", [{"index": index, "text": text or "", "finish_reason": finish_reason, "logprobs": None}]
        )

    def call_chunks(self, index: int, call: dict) -> list[dict]:
        """A call as OpenAI streams one: its id, type and name (arguments empty), then its arguments."""
        header = {"index": call["index"], **_tool_call({**call, "arguments": ""})}
        arguments = {"index": call["index"], "function": {"arguments": call["arguments"]}}
        return [
            self._object(
                "chat.completion.chunk",
                [{"index": index, "delta": {"tool_calls": [delta]}, "finish_reason": None, "logprobs": None}],
            )
            for delta in (header, arguments)
        ]

    def usage_chunk(self) -> dict:
        return self._object(
            "chat.completion.chunk" if self.kind == "chat.completion" else "text_completion", [], usage=self.usage()
        )

    def _object(self, kind: str, choices: list, **extra) -> dict:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "system_fingerprint": None,
            **extra,
        }


async def _stream(upstream: Upstream, shape: _Shape, include_usage: bool) -> AsyncIterator[str]:
    def sse(data: dict) -> str:
        return f"data: {json.dumps(data)}\n\n"

    if shape.kind == "chat.completion":
        for index in range(len(shape.texts)):
            yield sse(shape.chunk(index, first=True))
    async for event in upstream.events():
        if event["event"] == "error":
            error = upstream_error(shape.model, event)
            yield sse(
                {
                    "error": {
                        "message": error.message,
                        "type": error_type(error.status, error.code),
                        "param": error.param,
                        "code": error.code,
                    }
                }
            )
            return
        shape.add(event)
        if event["event"] == "text":
            yield sse(shape.chunk(event["index"], text=event["text"]))
        elif event["event"] == "tool_call":
            for chunk in shape.call_chunks(event["index"], event["call"]):
                yield sse(chunk)
        elif event["event"] == "finish":
            yield sse(shape.chunk(event["index"], finish_reason=event["finish_reason"]))
    if include_usage:
        yield sse(shape.usage_chunk())
    yield "data: [DONE]\n\n"


def _tool_call(call: dict) -> dict:
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}


def _message(text: str, calls: list[dict]) -> dict:
    """An answer with calls has content null unless the model also wrote text."""
    if not calls:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": text or None, "tool_calls": calls}
