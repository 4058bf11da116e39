"""Separate hosts on one machine: network namespaces on a bridge, each with its own address.

The test makes them and removes them (it runs as root, with iproute2). The bridge's own address,
in the test's namespace, is where the private Redis and PostgreSQL listen; a worker started
`inside(i, ...)` sees only its namespace's interface, so every byte between nodes goes over veth
pairs and the bridge, as between machines, and `cut(i)` takes a node's link down.
"""

from __future__ import annotations

import os
import shutil
import subprocess


def can_make_hosts() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


class Hosts:
    def __init__(self, count: int):
        tag = os.getpid() % 100000  # names and a subnet of this test process's own
        self.count = count
        self.subnet = f"10.77.{tag % 250}"
        self.bridge = f"lmb{tag}"
        self.address = f"{self.subnet}.1"  # the bridge's: Redis and PostgreSQL listen here
        self.namespaces = [f"lmtune-{tag}-{i}" for i in range(count)]
        self._outside = [f"lmv{tag}o{i}" for i in range(count)]
        self.interfaces = [f"lmv{tag}i{i}" for i in range(count)]  # inside each namespace

    def node(self, i: int) -> str:
        """Node i's address."""
        return f"{self.subnet}.{i + 2}"

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, namespace in enumerate(self.namespaces):
            _ip("netns", "add", namespace)
            _ip("link", "add", self._outside[i], "type", "veth", "peer", "name", self.interfaces[i])
            _ip("link", "set", self.interfaces[i], "netns", namespace)
            _ip("link", "set", self._outside[i], "master", self.bridge, "up")
            _ip("-n", namespace, "addr", "add", f"{self.node(i)}/24", "dev", self.interfaces[i])
            _ip("-n", namespace, "link", "set", self.interfaces[i], "up")
            _ip("-n", namespace, "link", "set", "lo", "up")

    def inside(self, i: int, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[i], *command]

    def cut(self, i: int) -> None:
        """Node i's link goes down: it reaches nothing, nothing reaches it."""
        _ip("-n", self.namespaces[i], "link", "set", self.interfaces[i], "down")

    def mend(self, i: int) -> None:
        _ip("-n", self.namespaces[i], "link", "set", self.interfaces[i], "up")

    def down(self) -> None:
        for namespace in self.namespaces:  # its end of the veth pair goes with it, and so the other end
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)
