"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}; never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from lmtune.problems import quote
from lmtune.services import RequestError
from lmtune.spec import describe_errors, error_location

log = logging.getLogger(__name__)
TYPES = {401: "authentication_error", 500: "server_error"}
WHAT_EXISTS = (
    "the API is under /v1/ (/v1/files, /v1/fine_tuning/jobs, /v1/models), its documentation at /docs, "
    "and the dashboard at / in a browser"
)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


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
    body = ErrorBody(message=message, type=TYPES.get(status, "invalid_request_error"), param=param, code=code)
    headers = {**({"WWW-Authenticate": "Bearer"} if status == 401 else {}), **(headers or {})}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": body.model_dump()}, status_code=status, headers=headers)


def not_found(what: str, object_id: str) -> RequestError:
    # also for objects of other keys: never reveal that they exist
    return RequestError(404, f"no {what} with id {quote(object_id)}", code=f"{what.replace(' ', '_')}_not_found")


def documented(*statuses: int) -> dict:
    """`responses=` for a route: the error statuses it can answer, all in the same shape (400 for
    invalid values is added wherever a route takes any)."""
    return {
        status: {"model": ErrorResponse, "description": DESCRIPTIONS.get(status, "Error")}
        for status in (401, *statuses)
    }


DESCRIPTIONS = {
    400: "Bad request: a value is invalid (`param` names it)",
    401: "Missing or invalid API key",
    404: "No such object for this API key",
    409: "The object is in the wrong state for this",
    413: "The upload is larger than the limit",
    416: "The range is not satisfiable",
    429: "Over a quota (`code` is `quota_exceeded`) or a limit (with `Retry-After`)",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        return error_response(error.status, error.message, error.param, error.code, error.retry_after)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        param = error_location(error.errors()[0]) or None
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

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error; the server log has the details")


def _allowed_methods(request: Request) -> list[str]:
    # asks each route, as routing does, which methods would fully match this path
    allowed = []
    for method in METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed
