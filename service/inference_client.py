"""The API's side of the model server (lmtune serve-models, at LMTUNE_INFERENCE_URL): send a
resolved model and the request, read back events as they come. See workers/serving/server.py for
the protocol; any server that speaks it (an adapter over vLLM or TGI, docs/inference.md) fits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from lmtune.problems import quote_id
from lmtune.services import RequestError

CONNECT_SECONDS = 5.0
SECRET_HEADER = "X-Lmtune-Inference-Secret"  # workers/serving/server.py checks it


def secret_headers(secret: str | None) -> dict[str, str]:
    return {SECRET_HEADER: secret} if secret else {}


def refused_secret(url: str) -> RequestError:
    return RequestError(
        502,
        f"the model server at {url} refused the API's secret: give both the same LMTUNE_INFERENCE_SECRET",
        code="model_server_error",
    )


class ServerBusy(RequestError):
    def __init__(self, message: str, retry_after: str):
        super().__init__(429, message, code="rate_limit_exceeded")
        self.retry_after = retry_after


@dataclass
class Upstream:
    """An answer under way: `start` is the first event (load and queue time, prompt tokens)."""

    start: dict
    _lines: AsyncIterator[str]
    _response: httpx.Response

    async def events(self) -> AsyncIterator[dict]:
        try:
            async for line in self._lines:
                if line.strip():
                    yield json.loads(line)
        finally:
            await self.close()

    async def close(self) -> None:
        await self._response.aclose()  # the server stops generating for a client that went away


class InferenceClient:
    """One connection pool to the model server for the API process; the app's lifespan closes it."""

    def __init__(self, url: str, secret: str | None = None, transport: httpx.AsyncBaseTransport | None = None):
        self.url = url
        self._client = httpx.AsyncClient(
            base_url=url,
            transport=transport,
            headers=secret_headers(secret),
            timeout=httpx.Timeout(None, connect=CONNECT_SECONDS),
        )

    async def open(self, model: str, payload: dict) -> Upstream:
        """Send the request; return once the model is loaded and the answer begins."""
        try:
            response = await self._client.send(
                self._client.build_request("POST", "/generate", json=payload), stream=True
            )
        except httpx.TransportError:
            raise RequestError(
                503,
                f"the model server is not reachable at {self.url} (start it with `lmtune serve-models`)",
                code="model_server_unavailable",
            ) from None
        if response.status_code == 429:
            body = json.loads(await response.aread())
            raise ServerBusy(body["message"], response.headers.get("retry-after", "1"))
        if response.status_code == 401:
            await response.aclose()
            raise refused_secret(self.url)
        if response.status_code != 200:
            await response.aclose()
            raise RequestError(502, f"the model server answered {response.status_code}", code="model_server_error")
        lines = response.aiter_lines()
        try:
            first = json.loads(await anext(lines))
        except BaseException:  # cancelled while it waited (its client went away): the model server stops it
            await response.aclose()
            raise
        if first["event"] == "error":
            await response.aclose()
            raise upstream_error(model, first)
        return Upstream(first, lines, response)

    async def aclose(self) -> None:
        await self._client.aclose()


def upstream_error(model: str, event: dict) -> RequestError:
    """The model server's error for the client, without its paths or internals (its log has those)."""
    if event["status"] == 400:
        return RequestError(400, event["message"], param="max_tokens", code="context_length_exceeded")
    if event["status"] == 503:
        return RequestError(
            503,
            f"model {quote_id(model)} could not be loaded by the model server; its log says why",
            code="model_not_loadable",
        )
    return RequestError(
        500, "the model server failed while answering; its log has the details", code="model_server_error"
    )
