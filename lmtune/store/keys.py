"""API keys: the secret is shown once; only its sha256 is stored, and compared in constant time."""

from __future__ import annotations

import hmac
import secrets

from sqlalchemy import bindparam, select

from lmtune.ids import new_id
from lmtune.store.database import Database, plain_columns
from lmtune.store.jobs import now
from lmtune.store.key_reads import KEY_ID, digest, read_with_key, with_key
from lmtune.store.models import ApiKey, Job

SECRET_PREFIX = "lmt-"


def create_key(db: Database, name: str) -> tuple[str, str]:
    """(key id, secret)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), name=name, hashed=digest(secret), created_at=now())
    with db.session() as session:
        session.add(key)
    return key.id, secret


# Every request asks this, so it is one prepared Core query (built and compiled once) on a pooled
# connection: no ORM session, object or transaction of its own; a third of a request's CPU before.
_KEY_BY_DIGEST = select(ApiKey.id, ApiKey.hashed).where(ApiKey.hashed == bindparam("digest"))


def authenticate(db: Database, secret: str) -> str | None:
    """The key id for a presented secret, or None."""
    presented = digest(secret)
    with db.read() as connection:
        key = connection.execute(_KEY_BY_DIGEST, {"digest": presented}).first()
    if key is None or not hmac.compare_digest(key.hashed, presented):
        return None
    return key.id


# Every request under /v1/fine_tuning/jobs/{id} reads its key and its job: one prepared Core query, one
# round trip where there were two, the job built from its row (an ORM session, identity map and
# transaction cost twice as much).
_JOB_COLUMNS = plain_columns(Job)
_JOB_NAMES = tuple(column.name for column in _JOB_COLUMNS)
_KEY_AND_JOB = with_key(select(*_JOB_COLUMNS).where(Job.id == bindparam("job_id"), Job.owner == KEY_ID))


def authenticate_for_job(db: Database, secret: str, job_id: str) -> tuple[str | None, Job | None]:
    """(key id, the job if that key owns it) for a presented secret; (None, None) for an unknown key.
    The Job is detached from any session: to read, never to write back."""
    owner, rows = read_with_key(db, _KEY_AND_JOB, secret, {"job_id": job_id})
    if owner is None:
        return None, None
    fields = rows[0]._mapping
    return owner, Job(**{name: fields[name] for name in _JOB_NAMES}) if fields["id"] is not None else None


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
