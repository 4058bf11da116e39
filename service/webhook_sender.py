"""Sending one signed webhook request: no redirects followed, no proxy, bounded in time and in what
is read back, and only to addresses lmtune may reach (lmtune/webhook_targets.py).

The guard sits where the connection is made: the host is resolved here, each address checked, and
the connection opened to the checked address itself, so a name that resolves elsewhere a moment
later (DNS rebinding) cannot slip an inside address past the check. TLS still verifies the name.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import anyio
import httpcore

from lmtune.webhook_targets import RefusedTarget, check_address

ANSWER_BYTES_READ = 64 * 1024  # of a receiver's answer body: read to reuse the connection, then dropped


@dataclass(frozen=True)
class Answer:
    status_code: int | None  # None when no answer came
    error: str | None  # None for a 2xx answer

    @property
    def ok(self) -> bool:
        return self.error is None


class GuardedBackend(httpcore.AnyIOBackend):
    """Resolves the host itself and connects only to an address lmtune may reach."""

    def __init__(self, allow_private: bool):
        self.allow_private = allow_private

    async def connect_tcp(self, host: str, port: int, timeout=None, local_address=None, socket_options=None):
        try:
            with anyio.fail_after(timeout):
                found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from None
        refused = []
        for *_, address in found:
            try:
                check_address(address[0], self.allow_private)
            except RefusedTarget as why:
                refused.append(str(why))
                continue
            return await super().connect_tcp(address[0], port, timeout, local_address, socket_options)
        raise httpcore.ConnectError(refused[0] if refused else f"{host} has no address")


class WebhookSender:
    """One connection pool for every endpoint; each try is bounded by `timeout` seconds in all."""

    def __init__(
        self, allow_private: bool, timeout: float, network_backend: httpcore.AsyncNetworkBackend | None = None
    ):
        self.timeout = timeout
        self._pool = httpcore.AsyncConnectionPool(
            network_backend=network_backend or GuardedBackend(allow_private),
            max_connections=256,
            keepalive_expiry=30,
            retries=0,
        )

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        limits = {"connect": self.timeout, "read": self.timeout, "write": self.timeout, "pool": self.timeout}
        try:
            async with asyncio.timeout(self.timeout):
                async with self._pool.stream(
                    "POST", url, headers=list(headers.items()), content=body, extensions={"timeout": limits}
                ) as response:
                    read = 0
                    async for chunk in response.aiter_stream():
                        read += len(chunk)
                        if read > ANSWER_BYTES_READ:
                            break
                    status = response.status
        except (TimeoutError, httpcore.TimeoutException):
            return Answer(None, f"no answer within {self.timeout:g} s")
        except httpcore.ConnectError as error:
            return Answer(None, f"cannot connect: {error}")
        except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.UnsupportedProtocol) as error:
            return Answer(None, f"{type(error).__name__}: {error}")
        if 200 <= status < 300:
            return Answer(status, None)
        if 300 <= status < 400:
            return Answer(status, f"answered {status}; redirects are not followed: give the final URL")
        return Answer(status, f"answered {status}")

    async def close(self) -> None:
        await self._pool.aclose()
