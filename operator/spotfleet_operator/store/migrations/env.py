"""Alembic environment of the store: always run with a connection handed in by
:func:`spotfleet_operator.store.schema.upgrade` (``config.attributes["connection"]``);
on PostgreSQL an advisory lock serialises replicas that start at the same moment."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

from spotfleet_operator.store import tables  # noqa: F401 (registers the tables)

#: pg_advisory_xact_lock key of schema migrations ("spotfleet" in ASCII, truncated).
LOCK_KEY = 0x73706F74666C6565

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only ever run through store.schema
    raise RuntimeError("the store's migrations run through spotfleet_operator.store.schema")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    context.run_migrations()
