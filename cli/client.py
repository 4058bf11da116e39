"""A client of lmtune's HTTP API (OpenAI's fine-tuning API and lmtune's additions), for the terminal.

Every error the server answers becomes an `ApiError` with its message; an unreachable server
becomes one too, so a caller shows one line and never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# a training step can take minutes on a big model: the event stream may be silent that long.
# (connect, read, write, pool) as a plain tuple: FastAPI's TestClient is an httpx2 client, which
# refuses httpx's Timeout objects but takes a tuple, as httpx does
STREAM_TIMEOUT = (10.0, None, 30.0, 30.0)


class ApiError(Exception):
    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


class LmtuneClient:
    """`http` is any httpx.Client (tests pass FastAPI's TestClient); URLs are absolute."""

    def __init__(self, base_url: str, api_key: str | None, http: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.http = http or httpx.Client(timeout=TIMEOUT)

    def close(self) -> None:
        self.http.close()

    # -- plumbing

    def url(self, path: str) -> str:
        """`path` is relative to the base URL (`/files`) or a server path from a response (`/v1/...`)."""
        if path.startswith("/v1/") and self.base_url.endswith("/v1"):
            return self.base_url[: -len("/v1")] + path
        return self.base_url + path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(
                method, self.url(path), headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
            )
        except httpx.TransportError as error:
            raise ApiError(
                f"cannot reach lmtune at {self.base_url} ({error}); is `lmtune up` running there? Give the server's "
                "API root with --base-url or LMTUNE_BASE_URL (e.g. http://127.0.0.1:8765/v1)"
            ) from None
        check(response)
        return response

    def json(self, method: str, path: str, **kwargs) -> Any:
        return self.request(method, path, **kwargs).json()

    def pages(self, path: str, params: dict | None = None, limit: int = 100) -> Iterator[dict]:
        """Every item of a cursor-paged list (`after=<last id>`), oldest page first."""
        params = {**(params or {}), "limit": limit}
        while True:
            page = self.json("GET", path, params=params)
            yield from page["data"]
            if not page.get("has_more") or not page["data"]:
                return
            params["after"] = page["data"][-1]["id"]

    # -- files

    def upload_file(self, path: Path, purpose: str = "fine-tune") -> dict:
        with path.open("rb") as stream:
            return self.json("POST", "/files", files={"file": (path.name, stream)}, data={"purpose": purpose})

    def list_files(self) -> list[dict]:
        return self.json("GET", "/files")["data"]

    # -- jobs

    def create_job(self, body: dict) -> dict:
        return self.json("POST", "/fine_tuning/jobs", json=body)

    def list_jobs(self, limit: int = 20) -> list[dict]:
        """The newest `limit` jobs."""
        return self.json("GET", "/fine_tuning/jobs", params={"limit": limit})["data"]

    def get_job(self, job_id: str) -> dict:
        return self.json("GET", f"/fine_tuning/jobs/{job_id}")

    def job_action(self, job_id: str, action: str) -> dict:
        """`cancel`, `pause` or `resume`."""
        return self.json("POST", f"/fine_tuning/jobs/{job_id}/{action}")

    def stream_events(self, job_id: str) -> Iterator[dict]:
        """Every event of the job, oldest first, then each new one as it is written, until the job ends."""
        try:
            with connect_sse(
                self.http,
                "GET",
                self.url(f"/fine_tuning/jobs/{job_id}/events"),
                params={"stream": "true"},
                headers=self.headers,
                timeout=STREAM_TIMEOUT,
            ) as source:
                check(source.response)
                for message in source.iter_sse():
                    if not message.data:  # a keep-alive comment (httpx-sse hands it on once an id was seen)
                        continue
                    if message.data == "[DONE]":
                        return
                    yield json.loads(message.data)
        except httpx.TransportError as error:
            raise ApiError(f"the event stream from {self.base_url} broke off ({error})") from None

    def checkpoints(self, job_id: str) -> list[dict]:
        return list(self.pages(f"/fine_tuning/jobs/{job_id}/checkpoints"))

    def export(self, job_id: str, body: dict) -> dict:
        """The export of a job's model as `body` asks (the same one again when it exists)."""
        return self.json("POST", f"/fine_tuning/jobs/{job_id}/exports", json=body)

    def get_export(self, job_id: str, export_id: str) -> dict:
        return self.json("GET", f"/fine_tuning/jobs/{job_id}/exports/{export_id}")

    # -- models

    def list_models(self) -> list[dict]:
        return self.json("GET", "/models")["data"]

    def delete(self, collection: str, object_id: str) -> dict:
        """Delete from `files`, `fine_tuning/jobs` or `models`; the server's `{"id", "object", "deleted"}`."""
        return self.json("DELETE", f"/{collection}/{object_id}")


def check(response: httpx.Response) -> None:
    """Raise ApiError with the server's message for an error status."""
    if response.is_success:
        return
    response.read()  # a streamed response's body is not read yet
    try:
        error = response.json()["error"]
        message, code = error["message"], error.get("code")
    except (ValueError, KeyError, TypeError):
        message, code = f"{response.status_code} {response.reason_phrase}: {response.text[:200]}", None
    raise ApiError(message, status=response.status_code, code=code)
