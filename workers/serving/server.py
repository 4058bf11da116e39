"""`lmtune serve-models`: the process that holds models in memory and answers with them.

Only the API talks to it (LMTUNE_INFERENCE_URL), showing the secret they share
(LMTUNE_INFERENCE_SECRET) in every request; anyone else gets 401. The API checks the key, resolves
the model id to folders in the data folder, and sends them here with the key's id; this process
loads only what it is sent. It may import torch; the API never does.

POST /generate  {model: {source, builtin?, adapter?, base?}, prompt | messages, max_tokens,
                 temperature, top_p, stop, seed, n, tools?, tool_choice?, parallel_tool_calls?}
(`messages` as lmtune/tool_calls.py's Conversation holds them: a call's arguments are an object)
answers with newline-delimited JSON, each line an event:
    {"event": "start", "load_seconds", "queue_seconds", "prompt_tokens"}   once loaded
    {"event": "text", "index", "text"}                                      as each answer grows
    {"event": "tool_call", "index", "call": {index, id, name, arguments}}   each complete call
    {"event": "finish", "index", "finish_reason", "completion_tokens"}
    {"event": "error", "status", "message"}                                 instead of the rest
At most `concurrency` answers run at once, taking turns token by token; up to `queue_size` more wait
(loading a model happens there, holding no running place); beyond that, or beyond a key's share
(lmtune/admission.py): 429. A request whose client goes away stops at once, waiting or running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from lmtune.admission import Admission, Place, Refused
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
    key: str = Field("", max_length=64, description="The API key's id: places are shared fairly among keys")


SECRET_HEADER = "X-Lmtune-Inference-Secret"


def create_serving_app(cache: ModelCache, concurrency: int = 4, queue_size: int = 8, secret: str = "") -> FastAPI:
    """The app; with a `secret`, every request must show it in SECRET_HEADER (the API does)."""

    def only_the_api(request: Request) -> None:
        shown = request.headers.get(SECRET_HEADER, "")
        if secret and not hmac.compare_digest(shown.encode(), secret.encode()):
            raise HTTPException(401, f"{SECRET_HEADER} is missing or wrong")

    app = FastAPI(title="lmtune model server", openapi_url=None, dependencies=[Depends(only_the_api)])
    admission = Admission(concurrency, queue_size)
    # a thread for every place: one waiting for its turn never keeps another key's request from starting
    threads = concurrent.futures.ThreadPoolExecutor(concurrency + queue_size, thread_name_prefix="answer")
    counts = {"cancelled": 0}  # answers stopped because their client went away

    @app.get("/health")
    async def health() -> dict:  # on the event loop, which alone changes the counts
        return {
            "loaded": cache.loaded,
            "admitted": admission.admitted,
            "running": sum(admission.busy.values()),
            "capacity": concurrency + queue_size,
            "cancelled": counts["cancelled"],
        }

    @app.post("/generate")
    async def generate(body: GenerateRequest):
        try:
            place = admission.admit(body.key)
        except Refused as refused:
            return JSONResponse({"message": refused.message}, status_code=429, headers={"Retry-After": "1"})
        answer = _Answer(body, cache, place, counts, threads)
        return _Answering(answer.events(), place=place, answer=answer, media_type="application/x-ndjson")

    return app


class _Answering(StreamingResponse):
    """Gives its place back however the response ends, also when its body never started."""

    def __init__(self, *args, place: Place, answer: _Answer, **kwargs):
        super().__init__(*args, **kwargs)
        self.place, self.answer = place, answer

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.answer.started:  # else the answer's thread gives it back when it stops
                self.place.release()


class _Answer:
    """One request: hold the model (loading it if needed, in a waiting place), wait for a running
    place, generate in a thread, and hand the thread's events to the response as they come."""

    def __init__(self, body: GenerateRequest, cache: ModelCache, place: Place, counts: dict, threads):
        self.body, self.cache, self.place, self.counts, self.threads = body, cache, place, counts, threads
        self.started = False
        self.cancelled = threading.Event()

    async def events(self) -> AsyncIterator[str]:
        self.started = True
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        emit = lambda event: loop.call_soon_threadsafe(queue.put_nowait, event)  # noqa: E731
        arrived = time.monotonic()

        def give_back() -> None:
            loop.call_soon_threadsafe(self.place.release)

        def runnable() -> float:
            """Waits for a running place (from this thread); the seconds since the request arrived."""
            asyncio.run_coroutine_threadsafe(self.place.run(), loop).result()
            return time.monotonic() - arrived

        work = loop.run_in_executor(self.threads, self._work, emit, runnable, give_back)
        finished = False
        try:
            while (event := await queue.get()) is not None:
                yield json.dumps(event) + "\n"
            finished = True
            await work
        finally:
            if not finished:  # the client went away: generation stops at its next token
                self.counts["cancelled"] += 1
                self.cancelled.set()
                self.place.abandon()

    def _work(self, emit, runnable, give_back) -> None:
        body = self.body
        params = GenerationParams(
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=tuple(body.stop),
            seed=body.seed,
            n=body.n,
        )
        prompt = body.messages if body.messages is not None else body.prompt or ""
        try:
            with self.cache.holding(body.model.model_dump()) as held:
                if self.cancelled.is_set():
                    return
                queued = runnable()

                def on_start(load_seconds: float, prompt_tokens: int) -> None:
                    emit(
                        {
                            "event": "start",
                            "load_seconds": round(load_seconds, 3),
                            "queue_seconds": round(max(0.0, queued - load_seconds), 3),
                            "prompt_tokens": prompt_tokens,
                        }
                    )

                answer = self.cache.answer_held(
                    held,
                    prompt,
                    params,
                    on_start,
                    lambda index, text: emit({"event": "text", "index": index, "text": text}),
                    self.cancelled.is_set,
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
        except concurrent.futures.CancelledError:  # abandoned while it waited for a place
            pass
        except PromptTooLong as error:
            emit({"event": "error", "status": 400, "message": str(error)})
        except ModelLoadError as error:
            emit({"event": "error", "status": 503, "message": str(error)})
        except Exception as error:  # reported to the API, which tells its client without details
            log.exception("generation failed")
            emit({"event": "error", "status": 500, "message": f"{type(error).__name__}: {error}"})
        finally:
            give_back()
            emit(None)
