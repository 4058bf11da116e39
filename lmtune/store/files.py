"""Uploaded files: rows here, bytes in the data folder under a server-made name."""

from __future__ import annotations

from sqlalchemy import func, select

from lmtune.store.database import Database, get_owned
from lmtune.store.idempotency import IdempotencyKey, remember
from lmtune.store.jobs import now
from lmtune.store.models import File


def add_file(
    db: Database,
    *,
    file_id: str,
    owner: str,
    filename: str,
    purpose: str,
    size: int,
    sha256: str,
    examples: int,
    path: str,
    row_shapes: dict[str, int] | None = None,
    idem: IdempotencyKey | None = None,
) -> File:
    """The row of a stored file; with `idem`, the request's Idempotency-Key in the same transaction."""
    row = File(
        id=file_id,
        owner=owner,
        filename=filename,
        purpose=purpose,
        bytes=size,
        sha256=sha256,
        examples=examples,
        row_shapes=row_shapes,
        path=path,
        created_at=now(),
    )
    with db.session() as session:
        session.add(row)
        if idem:
            remember(session, idem, file_id)
    return row


def get_file(db: Database, file_id: str, owner: str | None = None) -> File | None:
    return get_owned(db, File, file_id, owner)


def list_files(db: Database, owner: str, purpose: str | None = None) -> list[File]:
    with db.session() as session:
        query = select(File).where(File.owner == owner).order_by(File.id.desc())
        if purpose:
            query = query.where(File.purpose == purpose)
        return list(session.scalars(query).all())


def delete_file(db: Database, file_id: str) -> None:
    with db.session() as session:
        row = session.get(File, file_id)
        if row is not None:
            session.delete(row)


def stored_bytes(db: Database, owner: str, largest: int = 3) -> tuple[int, list[tuple[str, int]]]:
    """(bytes in the owner's files, the `largest` files as (id, bytes))."""
    with db.session() as session:
        total = session.scalar(select(func.coalesce(func.sum(File.bytes), 0)).where(File.owner == owner))
        top = session.execute(
            select(File.id, File.bytes).where(File.owner == owner).order_by(File.bytes.desc()).limit(largest)
        ).all()
    return int(total), [(row[0], int(row[1])) for row in top]
