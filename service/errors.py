"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}; never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from lmtune.problems import quote, quote_id
from lmtune.services import RequestError
from lmtune.spec import describe_errors, error_location
from lmtune.store.database import is_unreachable

log = logging.getLogger(__name__)
# OpenAI's error types: `invalid_request_error` for every other 4xx
TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
    507: "server_error",
}
CODE_TYPES = {"quota_exceeded": "insufficient_quota"}  # a 429 that waiting alone does not lift
WHAT_EXISTS = (
    "the API is under /v1/ (/v1/files, /v1/fine_tuning/jobs, /v1/models), its documentation at /docs, "
    "and the dashboard at / in a browser"
)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
NOT_A_JSON_OBJECT = "the request's body must be a JSON object, sent with Content-Type: application/json"
DATABASE_RETRY_SECONDS = 5  # a restart or failover takes seconds; the workers retry on the same scale


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(message=message, type=error_type(status, code), param=param, code=code)
    headers = {**({"WWW-Authenticate": "Bearer"} if status == 401 else {}), **(headers or {})}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": body.model_dump()}, status_code=status, headers=headers)


def error_type(status: int, code: str | None = None) -> str:
    return CODE_TYPES.get(code or "", TYPES.get(status, "invalid_request_error"))


def not_found(what: str, object_id: str) -> RequestError:
    # also for objects of other keys: never reveal that they exist
    return RequestError(404, f"no {what} with id {quote_id(object_id)}", code=f"{what.replace(' ', '_')}_not_found")


def documented(*statuses: int) -> dict:
    """`responses=` for a route: the error statuses it can answer, all in the same shape (400 for
    invalid values is added wherever a route takes any)."""
    return {
        status: {"model": ErrorResponse, "description": DESCRIPTIONS.get(status, "Error")}
        for status in (401, *statuses, 503)  # every route reads the store: 503 while the database is down
    }


DESCRIPTIONS = {
    400: "Bad request: a value is invalid (`param` names it)",
    401: "Missing or invalid API key",
    403: "Not allowed on this object (a catalogue model cannot be deleted)",
    404: "No such object for this API key",
    409: "The object is in the wrong state for this",
    413: "The upload is larger than the limit",
    416: "The range is not satisfiable",
    429: "Over a quota (`code` is `quota_exceeded`) or a limit (with `Retry-After`)",
    507: "The data folder's disk is full (`code` is `disk_full`; the message says how much space is needed)",
    503: "Unavailable for now (the database is unreachable, or the route's `code` says what): try again after "
    "`Retry-After` seconds",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        return error_response(error.status, error.message, error.param, error.code, error.retry_after)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        if first["type"] == "json_invalid":  # its `loc` is the character where parsing stopped
            return error_response(400, await _json_problem(request, first), code="invalid_json")
        param = error_location(first) or None
        if param is None:  # the body itself: none, not an object, or not sent as JSON
            return error_response(400, NOT_A_JSON_OBJECT, code="invalid_value")
        return error_response(400, describe_errors(error.errors()), param=param, code="invalid_value")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        # Starlette's own (404 for an unknown route, 405) and the body limit's 413, which names its field;
        # the routes answer RequestError, so a 404 here is a path nothing serves
        if error.status_code == 404:
            return error_response(404, f"nothing at {quote(request.url.path)}: {WHAT_EXISTS}", code="not_found")
        # Starlette's 405 names the methods of the first route on the path only
        headers = {"Allow": ", ".join(_allowed_methods(request))} if error.status_code == 405 else None
        return error_response(
            error.status_code,
            str(error.detail),
            getattr(error, "param", None),
            getattr(error, "code", None),
            headers=headers,
        )

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect):
        # the client hung up while sending its body (an upload given up): nothing went wrong here,
        # and nobody is left to read an answer
        log.info("client disconnected while sending %s %s; the request was dropped", request.method, request.url.path)
        return error_response(
            400, "the client disconnected before its request was received", code="client_disconnected"
        )

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, error: SQLAlchemyError):
        if not is_unreachable(error):
            return await unexpected(request, error)
        log.warning("the database is unreachable on %s %s: %s", request.method, request.url.path, type(error).__name__)
        return error_response(
            503,
            f"the database is unreachable; try again in {DATABASE_RETRY_SECONDS} s",
            code="database_unavailable",
            retry_after=DATABASE_RETRY_SECONDS,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error; the server log has the details")


async def _json_problem(request: Request, error: dict) -> str:
    """What is wrong with a body that is not JSON, and where: line, column and character."""
    position = error["loc"][-1] if isinstance(error["loc"][-1], int) else 0
    text = (await request.body()).decode("utf-8", errors="replace")  # at most the body limit (1 MiB)
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    reason = error.get("ctx", {}).get("error", "not valid JSON")
    return (
        f"the request body is not valid JSON: {reason} at line {line}, column {column} (character "
        f"{position + 1}); send one JSON object with Content-Type: application/json"
    )


def _allowed_methods(request: Request) -> list[str]:
    # asks each route, as routing does, which methods would fully match this path
    allowed = []
    for method in METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed
