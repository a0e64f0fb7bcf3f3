"""The audit store: one writer task, fed by a bounded in-memory queue.

Reconciles never wait for the database: :meth:`Store.submit` puts a row on the queue
and returns. The single writer task (:meth:`Store.run`) writes rows in batches over
one connection at a time (SQLite in WAL mode with a busy timeout; PostgreSQL pooled
by SQLAlchemy), so concurrent reconciles never lose a row to ``database is locked``.
When the database is down or slow, rows wait in the queue (its depth is a metric), the
outage is logged once (not once per row) and the writer retries with backoff; only
when the queue is full is a row dropped, and every dropped row is counted.

URLs: ``postgresql://…`` (driven by asyncpg) or ``sqlite:///path`` (aiosqlite);
plain driver-less forms are normalised to their async drivers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel, select

from spotfleet_operator import metrics as metrics_mod
from spotfleet_operator import scrub
from spotfleet_operator.store import tables

log = logging.getLogger("spotfleet.store")

#: Rows per write; seconds between retries while the database is unavailable.
BATCH = 200
RETRY_MIN_SECONDS, RETRY_MAX_SECONDS = 1.0, 30.0


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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class Store:
    """The audit store; ``await open()`` creates the tables, ``run()`` is the writer task."""

    def __init__(
        self,
        url: str | None = None,
        queue_size: int = 10_000,
        metrics: metrics_mod.Metrics | None = None,
    ) -> None:
        self.url = normalise_url(url or default_url())
        sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if sqlite:
            kwargs = {"poolclass": sqlalchemy.pool.StaticPool}  # one connection, one writer
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if sqlite:
            sqlalchemy.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._queue: collections.deque[SQLModel] = collections.deque()
        self._size = queue_size
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._metrics = metrics
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._down = False

    async def open(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, row: SQLModel) -> bool:
        """Queue ``row`` for writing (never blocks, never raises). False: the queue was
        full and the row was dropped (counted)."""
        for name, value in list(row.__dict__.items()):
            if isinstance(value, str):
                setattr(row, name, scrub.scrub(value))
        if len(self._queue) >= self._size:
            self.dropped += 1
            if self._metrics is not None:
                self._metrics.store_rows.labels("dropped").inc()
            return False
        self._queue.append(row)
        self._ready.set()
        if self._metrics is not None:
            self._metrics.store_queue_depth.set(len(self._queue))
        return True

    async def _write(self, rows: Sequence[SQLModel]) -> None:
        async with self._sessions() as s:
            s.add_all(rows)
            await s.commit()

    async def run(self) -> None:
        """The writer: forever, write queued rows in batches; retry through outages."""
        delay = RETRY_MIN_SECONDS
        while True:
            if not self._queue:
                self._drained.set()
                self._ready.clear()
                await self._ready.wait()
            batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                if self._metrics is not None:
                    self._metrics.store_write_errors.inc()
                if not self._down:
                    log.warning(
                        "audit store unavailable (%s); buffering up to %d rows and retrying",
                        type(e).__name__,
                        self._size,
                    )
                    self._down = True
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_SECONDS, delay * 2)
                continue
            for _ in batch:
                self._queue.popleft()
            self.written += len(batch)
            if self._metrics is not None:
                self._metrics.store_rows.labels("written").inc(len(batch))
                self._metrics.store_queue_depth.set(len(self._queue))
            if self._down:
                log.info("audit store available again; %d buffered rows left", len(self._queue))
                self._down = False
            delay = RETRY_MIN_SECONDS

    async def flush(self, within: float = 5.0) -> bool:
        """Wait until the queue is empty (at shutdown); False when ``within`` seconds ran out."""
        if not self._queue:
            return True
        self._drained.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), within)
        return not self._queue

    async def record(self, rec: tables.DecisionRecord) -> None:
        """Write one decision at once (tools and tests; the operator uses :meth:`submit`)."""
        await self._write([rec])

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
