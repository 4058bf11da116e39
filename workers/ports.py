"""A free TCP port, for a rendezvous (a gang's or a launcher's) and for the servers tests start."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now on `host` (another process may take it before it is bound)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
