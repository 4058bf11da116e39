"""Engine, sessions and schema migrations (Alembic), for SQLite and PostgreSQL alike."""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from pydantic_core import from_json
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from lmtune.backoff import pause_after

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)
T = TypeVar("T")
# No transaction waits long on another's lock, and none holds its locks long: a process stalled in a
# transaction (SIGSTOP, a VM paused, a partition) is cut off by the server after IDLE_IN_TRANSACTION,
# its locks released, instead of when TCP keepalive gives up hours later. A stalled worker may hold
# a job's row in two sessions one after the other (its progress poll, then its heartbeat queued
# behind it): twice the idle timeout stays below the lock timeout, so a cancel waits, never fails.
# Every transaction of lmtune is a few statements; one cut off, or a lock wait that times out, is
# retried like an outage (is_unreachable).
LOCK_TIMEOUT_SECONDS = 10
IDLE_IN_TRANSACTION_SECONDS = 3
POSTGRES_OPTIONS = (
    f"-c lock_timeout={LOCK_TIMEOUT_SECONDS * 1000} "
    f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_SECONDS * 1000}"
)
# Connections kept open for as many reads at once as the API's thread pool runs (Starlette's default:
# 40), made as they are first needed: with the pool's default of 5, eight requests at once closed
# every connection past the fifth after one use, a new server process for most reads.
POOL_SIZE = 40


# JSON columns (a job's spec, metrics, metadata) are read by pydantic-core's parser, in Rust: the
# standard library's cost a job list a third of its CPU.


class Database:
    def __init__(self, url: str, clock: Callable[[], float] = time.time):
        self.url = url
        self.clock = clock  # what leases are measured against; tests move it instead of sleeping
        if url.startswith("sqlite"):
            Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
            # the API, a worker and the sweeper write concurrently: wait for the lock rather than fail
            self.engine = create_engine(
                url, connect_args={"timeout": 30, "check_same_thread": False}, json_deserializer=from_json
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            self._reads = self.engine
        else:
            # a database host that does not answer fails a connection in seconds, never hangs a worker
            self.engine = create_engine(
                url,
                connect_args={"connect_timeout": 5, "options": POSTGRES_OPTIONS},
                json_deserializer=from_json,
                pool_size=POOL_SIZE,
            )
            event.listen(self.engine, "checkout", _closed_by_the_server)
            # reads outside a transaction: no BEGIN and ROLLBACK round trips around their statements
            self._reads = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def read(self) -> Connection:
        """A pooled connection for a read of one statement or a few, each its own snapshot on PostgreSQL
        (one round trip a statement, where a transaction adds two); never to write with."""
        return self._reads.connect()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def upgrade(self) -> None:
        """Bring the schema to the newest migration; safe to run from every process at start."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["engine"] = self.engine
        command.upgrade(config, "head")


def plain_columns(model, names: tuple[str, ...] | None = None) -> list:
    """`model`'s columns (or those of `names`) labelled with its attribute names, for Core reads of
    plain rows that code written for the ORM object can read the same way (`job.job_metadata`)."""
    names = names or tuple(attribute.key for attribute in inspect(model).column_attrs)
    return [getattr(model, name).label(name) for name in names]


def get_owned(db: Database, model, object_id: str, owner: str | None):
    """The row with this id, if `owner` (an API key id) owns it; every key sees only its own."""
    with db.session() as session:
        row = session.get(model, object_id)
    return row if row is not None and (owner is None or row.owner == owner) else None


def _closed_by_the_server(dbapi_connection, _record, _proxy) -> None:
    """Before the pool hands out a PostgreSQL connection: a server that restarted, crashed or ended the
    session has closed its end or sent the error that says so, and either makes the socket readable;
    the pool then drops the connection and connects anew. A local poll, where the pool's pre-ping
    sends a query: a round trip that, with a transaction's BEGIN and ROLLBACK, made each read four."""
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if dbapi_connection.closed or poller.poll(0):
        raise DisconnectionError("the database server closed this connection")


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_database(url: str, clock: Callable[[], float] = time.time) -> Database:
    database = Database(url, clock)
    database.upgrade()
    return database


def engine_of(config: Config) -> Engine:
    return config.attributes["engine"]


def is_unreachable(error: BaseException) -> bool:
    """A database that does not answer (down, restarting, a dropped connection, a busy lock), as
    opposed to a write it refused: worth trying again."""
    if isinstance(error, (OperationalError, InterfaceError, PoolTimeout)):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def until_answered(
    action: Callable[[], T],
    what: str,
    *,
    between: Callable[[], object] = lambda: None,
    first_delay: float = 0.2,
    max_delay: float = 5.0,
) -> T:
    """`action()`, tried again with growing pauses while the database is unreachable. Any other error
    ends the tries, and so does one raised by `between()`, called before each new try (e.g. the
    attempt's lease check, once another attempt holds the job)."""
    failures = 0
    while True:
        try:
            return action()
        except Exception as error:
            if not is_unreachable(error):
                raise
            failures += 1
            delay = pause_after(failures, first_delay, max_delay)
            log.warning(
                "%s: the database is unreachable (%s); trying again in %.1f s", what, type(error).__name__, delay
            )
        time.sleep(delay)
        between()
