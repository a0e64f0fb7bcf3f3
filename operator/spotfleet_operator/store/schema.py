"""The store's schema, owned by Alembic: ``upgrade head`` at start-up (idempotent), the
current revision and the history, for the operator and ``spotfleet db``.

A database made by release 0.1.0 (``create_all``: a ``decisions`` table, no
``alembic_version``) is stamped at revision ``0001``, which reproduces that table
exactly, and then upgraded in place: its rows are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")
#: The revision that reproduces release 0.1.0's ``decisions`` table.
BASELINE = "0001"


def alembic_config(connection: sqlalchemy.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this release knows."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, heads
    return str(heads[0])


def history() -> list[dict[str, str]]:
    """Every revision, oldest first: id, parent and the first line of its docstring."""
    out = []
    for rev in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions())):
        out.append(
            {
                "revision": str(rev.revision),
                "down_revision": str(rev.down_revision or ""),
                "doc": (rev.doc or "").strip().splitlines()[0] if rev.doc else "",
            }
        )
    return out


def _current(conn: sqlalchemy.Connection) -> str | None:
    rev = MigrationContext.configure(conn).get_current_revision()
    return str(rev) if rev is not None else None


def _upgrade(conn: sqlalchemy.Connection, target: str) -> tuple[str | None, str | None]:
    before = _current(conn)
    if before is None and sqlalchemy.inspect(conn).has_table("decisions"):
        # a release-0.1.0 database: adopt it at the baseline, keep its rows
        command.stamp(alembic_config(conn), BASELINE)
    command.upgrade(alembic_config(conn), target)
    return before, _current(conn)


async def upgrade(engine: AsyncEngine, target: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``target`` (idempotent); returns the (before, after) revisions."""
    async with engine.begin() as conn:
        result: tuple[str | None, str | None] = await conn.run_sync(_upgrade, target)
        return result


async def current(engine: AsyncEngine) -> str | None:
    """The database's revision (None: never migrated)."""
    async with engine.connect() as conn:
        rev: str | None = await conn.run_sync(_current)
        return rev


async def differences(engine: AsyncEngine) -> list[Any]:
    """What differs between the database and the tables in ``tables.py`` (empty: they
    agree). The tests use this to prove the revisions build exactly the tables."""
    from alembic.autogenerate import compare_metadata
    from sqlmodel import SQLModel

    from spotfleet_operator.store import tables

    assert tables.TABLES  # every table is registered on SQLModel.metadata

    def diff(conn: sqlalchemy.Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return [
            d
            for d in compare_metadata(ctx, SQLModel.metadata)
            if not (isinstance(d, tuple) and d and d[0] == "remove_table")
        ]

    async with engine.connect() as conn:
        found: list[Any] = await conn.run_sync(diff)
        return found
