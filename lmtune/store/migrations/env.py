"""Alembic environment: migrations run on the engine the application hands over."""

from alembic import context

from lmtune.store.database import engine_of
from lmtune.store.models import Base

config = context.config

with engine_of(config).connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":  # another process's migration may hold the tables a while
            connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
            connection.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
        context.run_migrations()
