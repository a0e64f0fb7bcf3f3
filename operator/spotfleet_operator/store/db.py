"""Async database access for the audit store.

URLs: ``postgresql://…`` (driven by asyncpg) or ``sqlite:///path`` (aiosqlite);
plain driver-less forms are normalised to their async drivers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel, select

from spotfleet_operator.store import tables


def default_url() -> str:
    """$SPOTFLEET_DATABASE_URL, else an SQLite file in the working directory."""
    return os.environ.get("SPOTFLEET_DATABASE_URL", "sqlite+aiosqlite:///spotfleet-audit.db")


def normalise_url(url: str) -> str:
    """Map ``postgresql://`` / ``postgres://`` / ``sqlite://`` to their async drivers."""
    for prefix, repl in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return repl + url[len(prefix) :]
    return url


class Store:
    """The audit store; ``await open()`` creates the tables if they do not exist."""

    def __init__(self, url: str | None = None) -> None:
        self.url = normalise_url(url or default_url())
        self.engine: AsyncEngine = create_async_engine(self.url)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def open(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    async def record(self, rec: tables.DecisionRecord) -> None:
        """Append one decision."""
        async with self._sessions() as s:
            s.add(rec)
            await s.commit()

    async def decisions(self, namespace: str, policy: str) -> Sequence[tables.DecisionRecord]:
        """Every decision of one policy, oldest first."""
        async with self._sessions() as s:
            stmt = (
                select(tables.DecisionRecord)
                .where(tables.DecisionRecord.namespace == namespace)
                .where(tables.DecisionRecord.policy == policy)
                .order_by(tables.DecisionRecord.at)  # type: ignore[arg-type]
            )
            return (await s.execute(stmt)).scalars().all()
