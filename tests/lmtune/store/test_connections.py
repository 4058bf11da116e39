"""Pooled PostgreSQL connections that the server has ended (a restart, a crash, an administrator's
`pg_terminate_backend`) are replaced before they are handed out: the next request gets a new
connection, not an error."""

import pytest
from sqlalchemy import create_engine, text

from lmtune.store.jobs import create_job, get_job
from lmtune.store.keys import authenticate, create_key
from tests.helpers import POSTGRESQL

pytestmark = pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)


def test_reads_and_writes_after_the_server_ended_every_pooled_connection_succeed_at_the_first_try(db, database_url):
    key_id, secret = create_key(db, "ops")
    held = [db.read() for _ in range(3)]  # three connections in the pool, each used once
    for connection in held:
        connection.execute(text("SELECT 1"))
    for connection in held:
        connection.close()
    assert db.engine.pool.checkedin() == 3

    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        ended = connection.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    admin.dispose()
    assert ended == 3  # each returned only once its server process had exited

    assert [authenticate(db, secret) for _ in range(3)] == [key_id] * 3
    job = create_job(db, owner=key_id, spec={"model": "lmtune-tiny", "training_file": "file-abc"}, queue="cpu")
    assert get_job(db, job.id).owner == key_id
