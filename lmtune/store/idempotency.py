"""`Idempotency-Key`: the same key from the same API key within 24 h gets the first answer.

A create request stores its object and the key in one transaction; a repeat with the same body
finds the key and returns the object it made; another body with the same key is a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete

from lmtune.store.database import Database
from lmtune.store.jobs import now
from lmtune.store.models import IdempotentRequest

KEEP_SECONDS = 24 * 3600


class KeyReused(Exception):
    """The key came before with another request body."""


@dataclass(frozen=True)
class IdempotencyKey:
    owner: str
    key: str
    request_hash: str  # sha256 of the request, as the caller defines it


def earlier_answer(db: Database, idem: IdempotencyKey) -> str | None:
    """The id of the object this key created within 24 h; KeyReused if it came with another body."""
    with db.session() as session:
        row = session.get(IdempotentRequest, (idem.owner, idem.key))
        if row is None or row.created_at < now() - KEEP_SECONDS:
            return None
        if row.request_hash != idem.request_hash:
            raise KeyReused(idem.key)
        return row.object_id


def remember(session, idem: IdempotencyKey, object_id: str) -> None:
    """In the transaction that creates the object. A key older than 24 h is replaced; a concurrent
    request with the same key makes the commit fail (primary key), and its caller asks again."""
    session.execute(
        delete(IdempotentRequest).where(
            IdempotentRequest.owner == idem.owner,
            IdempotentRequest.key == idem.key,
            IdempotentRequest.created_at < now() - KEEP_SECONDS,
        )
    )
    session.add(
        IdempotentRequest(
            owner=idem.owner, key=idem.key, request_hash=idem.request_hash, object_id=object_id, created_at=now()
        )
    )
