"""API keys: the secret is shown once; only its sha256 is stored, and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import bindparam, select

from lmtune.ids import new_id
from lmtune.store.database import Database
from lmtune.store.jobs import now
from lmtune.store.models import ApiKey

SECRET_PREFIX = "lmt-"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(db: Database, name: str) -> tuple[str, str]:
    """(key id, secret)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), name=name, hashed=_digest(secret), created_at=now())
    with db.session() as session:
        session.add(key)
    return key.id, secret


# Every request asks this, so it is one prepared Core query (built and compiled once) on a pooled
# connection: no ORM session, object or transaction of its own; a third of a request's CPU before.
_KEY_BY_DIGEST = select(ApiKey.id, ApiKey.hashed).where(ApiKey.hashed == bindparam("digest"))


def authenticate(db: Database, secret: str) -> str | None:
    """The key id for a presented secret, or None."""
    digest = _digest(secret)
    with db.engine.connect() as connection:
        key = connection.execute(_KEY_BY_DIGEST, {"digest": digest}).first()
    if key is None or not hmac.compare_digest(key.hashed, digest):
        return None
    return key.id


def list_keys(db: Database) -> list[ApiKey]:
    """Every key, oldest first (ids and names only: the secrets were never stored)."""
    with db.session() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(db: Database, key_id: str) -> bool:
    """Delete the key: its secret gets 401 from the next request on. False if there is no such key.
    The key's files and jobs stay on disk and in the store."""
    with db.session() as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            return False
        session.delete(key)
    return True
