"""Which webhook URLs lmtune may send to: http(s) URLs whose host is a public address, unless the
deployment allows private ones (LMTUNE_WEBHOOK_ALLOW_PRIVATE, which `lmtune up` sets).

A URL is checked when its endpoint is created, and every address its host resolves to is checked
again when the deliverer connects (lmtune's own resolution, then a connection to that very address),
so a name that later resolves to an inside address (DNS rebinding) still reaches nothing inside.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048
ALLOW_PRIVATE_SETTING = "LMTUNE_WEBHOOK_ALLOW_PRIVATE"
LOCAL_NAMES = ("localhost", "localhost.localdomain")


class RefusedTarget(ValueError):
    """A webhook URL or address lmtune will not send to; the message says why and what to do."""


def check_url(url: str, allow_private: bool) -> str:
    """The URL, if lmtune may send to it as far as the URL alone tells; else RefusedTarget."""
    if len(url) > MAX_URL_CHARS:
        raise RefusedTarget(f"the URL has {len(url):,} characters; at most {MAX_URL_CHARS:,} are allowed")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedTarget("give an http:// or https:// URL")
    if not parts.hostname:
        raise RefusedTarget("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise RefusedTarget("the URL may not hold a user name or password; authenticate with the signature")
    try:
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError:
        raise RefusedTarget("the URL's port is not a number from 0 to 65535") from None
    host = parts.hostname.rstrip(".").lower()
    if not allow_private and (host in LOCAL_NAMES or host.endswith(".localhost")):
        raise RefusedTarget(_private_message(host, "a loopback name"))
    if _is_ip(host):
        check_address(host, allow_private)
    return url  # a name: each address it resolves to is checked when the deliverer connects


def check_address(address: str, allow_private: bool) -> None:
    """RefusedTarget unless lmtune may connect to this IP address."""
    if allow_private:
        return
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 address may carry a %zone
    ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is 127.0.0.1
    if not ip.is_global or ip.is_multicast:
        kind = "a loopback" if ip.is_loopback else "a private or reserved"
        raise RefusedTarget(_private_message(str(ip), f"{kind} address"))


def _private_message(host: str, what: str) -> str:
    return (
        f"{host} is {what}: webhooks go to public addresses only, unless the server allows private ones "
        f"({ALLOW_PRIVATE_SETTING}=true)"
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
