"""The one error a request can end in, independent of HTTP: its status, message, field and code."""

from __future__ import annotations


class RequestError(Exception):
    """A request that cannot be done as asked: `status` is the HTTP status, `param` the field;
    `retry_after` (seconds) for a refusal that a later try may not get."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.retry_after = retry_after
