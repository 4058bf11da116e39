"""Standard Webhooks signatures (https://www.standardwebhooks.com), as OpenAI signs its webhooks.

A secret is `whsec_` + base64 of random bytes; a signature is `v1,` + base64 of the HMAC-SHA256,
keyed with those bytes, of `<webhook-id>.<webhook-timestamp>.<body>`. The `openai` SDK's
`client.webhooks.unwrap()` and the `standardwebhooks` library verify what this signs (tests do both).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(random.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secrets: list[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one try; with several secrets (a rotation that keeps the old one for a while),
    one signature each, space-separated as Standard Webhooks has it: either secret verifies."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(secret, webhook_id, timestamp, body) for secret in secrets),
        "content-type": "application/json",
        "user-agent": "lmtune-webhooks/1",
    }
