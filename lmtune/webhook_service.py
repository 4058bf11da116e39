"""What a client can ask of webhook endpoints, independent of HTTP: create one (its URL checked, a
secret made), change it, rotate its secret, delete it, and the signed sample event a test sends
(the API sends it: service/webhook_sender.py). An endpoint that is not the key's is a LookupError,
as for jobs (lmtune/services.py), which the HTTP adapter answers with a 404.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from lmtune.errors import RequestError
from lmtune.ids import new_id
from lmtune.settings import Settings
from lmtune.store import webhooks as webhook_store
from lmtune.store.database import Database
from lmtune.store.models import WebhookEndpoint
from lmtune.webhook_signing import signed_headers
from lmtune.webhook_targets import RefusedTarget, check_url

KEEP_OLD_SECRET_SECONDS = 24 * 3600
TEST_OBJECT_IDS = {"fine_tuning.job": "ftjob-test", "eval.run": "evalrun_test"}  # name no real object


def create_endpoint(
    settings: Settings, db: Database, owner: str, url: str, *, name: str | None, event_types: list[str] | None
) -> WebhookEndpoint:
    """A new endpoint for this key's events (default: every type lmtune sends), named after its host
    unless named; 400 for a URL it may not reach, 429 past the key's number of endpoints."""
    url = _checked_url(url, settings.webhook_allow_private)
    try:
        return webhook_store.create_endpoint(
            db,
            owner,
            name or urlsplit(url).hostname,
            url,
            list(event_types or webhook_store.EVENT_TYPES),
            int(time.time()),
        )
    except webhook_store.TooManyEndpoints as error:
        raise RequestError(429, str(error), code="quota_exceeded") from None


def update_endpoint(settings: Settings, db: Database, endpoint_id: str, owner: str, **fields) -> WebhookEndpoint:
    """Change the name, the URL (checked as at creation) or the complete set of event types."""
    if "url" in fields:
        fields["url"] = _checked_url(fields["url"], settings.webhook_allow_private)
    row = webhook_store.update_endpoint(db, endpoint_id, owner, int(time.time()), **fields)
    if row is None:
        raise LookupError(endpoint_id)
    return row


def rotate_secret(db: Database, endpoint_id: str, owner: str, *, keep_old: bool) -> WebhookEndpoint:
    """A new signing secret; with `keep_old`, deliveries carry a signature by each secret for 24
    hours, so a receiver can switch when it likes."""
    keep = KEEP_OLD_SECRET_SECONDS if keep_old else None
    row = webhook_store.rotate_secret(db, endpoint_id, owner, int(time.time()), keep)
    if row is None:
        raise LookupError(endpoint_id)
    return row


def delete_endpoint(db: Database, endpoint_id: str, owner: str) -> None:
    """The endpoint and its deliveries; those not yet sent never are."""
    if not webhook_store.delete_endpoint(db, endpoint_id, owner):
        raise LookupError(endpoint_id)


def sample_event(endpoint: WebhookEndpoint, event_type: str) -> tuple[bytes, dict[str, str]]:
    """A sample event of `event_type` for `endpoint`, signed as a real delivery is: (body, headers)."""
    created = int(time.time())
    object_id = TEST_OBJECT_IDS[event_type.rsplit(".", 1)[0]]
    body = webhook_store.body_of(new_id("evt", "_"), created, event_type, object_id)
    headers = signed_headers(webhook_store.signing_secrets(endpoint, created), new_id("wh", "_"), created, body)
    return body, headers


def _checked_url(url: str, allow_private: bool) -> str:
    try:
        return check_url(url, allow_private)
    except RefusedTarget as error:
        raise RequestError(400, f"url: {error}", param="url", code="invalid_url") from None
