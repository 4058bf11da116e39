"""`lmtune serve-models`: the process that holds models in memory and answers with them.

Only the API talks to it, on localhost (LMTUNE_INFERENCE_URL): the API checks the key, resolves
the model id to folders in the data folder, and sends them here; this process loads only what it
is sent. It may import torch; the API never does.

POST /generate  {model: {source, builtin?, adapter?, base?}, prompt | messages, max_tokens,
                 temperature, top_p, stop, seed, n, tools?, tool_choice?, parallel_tool_calls?}
(`messages` as lmtune/tool_calls.py's Conversation holds them: a call's arguments are an object)
answers with newline-delimited JSON, each line an event:
    {"event": "start", "load_seconds", "queue_seconds", "prompt_tokens"}   once loaded
    {"event": "text", "index", "text"}                                      as each answer grows
    {"event": "tool_call", "index", "call": {index, id, name, arguments}}   each complete call
    {"event": "finish", "index", "finish_reason", "completion_tokens"}
    {"event": "error", "status", "message"}                                 instead of the rest
At most `concurrency` answers run at once; up to `queue_size` more wait; beyond that: 429.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from workers.models.errors import ModelLoadError
from workers.models.generation import GenerationParams
from workers.serving.engine import ModelCache, PromptTooLong
from workers.serving.tool_answers import ToolRequest

log = logging.getLogger(__name__)


class ModelSpec(BaseModel):
    source: str
    builtin: str | None = None
    adapter: str | None = None
    base: ModelSpec | None = None


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelSpec
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = []
    seed: int | None = None
    n: int = Field(1, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True


def create_serving_app(cache: ModelCache, concurrency: int = 1, queue_size: int = 8) -> FastAPI:
    app = FastAPI(title="lmtune model server")
    slots = asyncio.Semaphore(concurrency)
    admitted = {"count": 0}  # running + waiting
    capacity = concurrency + queue_size

    @app.get("/health")
    def health() -> dict:
        return {"loaded": cache.loaded, "admitted": admitted["count"], "capacity": capacity}

    @app.post("/generate")
    async def generate(body: GenerateRequest):
        if admitted["count"] >= capacity:
            return JSONResponse(
                {
                    "message": f"the model server is busy: {concurrency} answering and {queue_size} waiting; "
                    "try again shortly"
                },
                status_code=429,
                headers={"Retry-After": "1"},
            )
        admitted["count"] += 1
        return StreamingResponse(_answer(body, cache, slots, admitted), media_type="application/x-ndjson")

    return app


async def _answer(
    body: GenerateRequest, cache: ModelCache, slots: asyncio.Semaphore, admitted: dict
) -> AsyncIterator[str]:
    arrived = time.monotonic()
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()
    emit = lambda event: loop.call_soon_threadsafe(events.put_nowait, event)  # noqa: E731
    params = GenerationParams(
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=tuple(body.stop),
        seed=body.seed,
        n=body.n,
    )
    prompt = body.messages if body.messages is not None else body.prompt or ""

    def work() -> None:
        def on_start(load_seconds: float, prompt_tokens: int) -> None:
            emit(
                {
                    "event": "start",
                    "load_seconds": round(load_seconds, 3),
                    "queue_seconds": round(queued, 3),
                    "prompt_tokens": prompt_tokens,
                }
            )

        try:
            answer = cache.answer(
                body.model.model_dump(),
                prompt,
                params,
                on_start,
                lambda index, text: emit({"event": "text", "index": index, "text": text}),
                cancelled.is_set,
                tools=ToolRequest(body.tools, body.tool_choice, body.parallel_tool_calls),
                on_call=lambda index, call: emit({"event": "tool_call", "index": index, "call": call}),
            )
            for choice in answer.choices:
                emit(
                    {
                        "event": "finish",
                        "index": choice.index,
                        "finish_reason": choice.finish_reason,
                        "completion_tokens": choice.tokens,
                    }
                )
        except PromptTooLong as error:
            emit({"event": "error", "status": 400, "message": str(error)})
        except ModelLoadError as error:
            emit({"event": "error", "status": 503, "message": str(error)})
        except Exception as error:  # reported to the API, which tells its client without details
            log.exception("generation failed")
            emit({"event": "error", "status": 500, "message": f"{type(error).__name__}: {error}"})
        finally:
            emit(None)

    try:
        async with slots:
            queued = time.monotonic() - arrived
            task = loop.run_in_executor(None, work)
            while (event := await events.get()) is not None:
                yield json.dumps(event) + "\n"
            await task
    finally:
        cancelled.set()  # the client went away: generation stops at its next token
        admitted["count"] -= 1
