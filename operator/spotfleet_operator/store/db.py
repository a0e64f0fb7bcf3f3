"""The store: one writer task, fed by a bounded in-memory queue, and the reads and
bulk writes of the operator's jobs and the toolbox.

Reconciles never wait for the database: :meth:`Store.submit` puts a row on the queue
and returns. The single writer task (:meth:`Store.run`) migrates the schema first
(``upgrade head``, idempotent; retried while the database is away), then writes rows in
batches over one connection at a time (SQLite in WAL mode with a busy timeout;
PostgreSQL pooled by SQLAlchemy), so concurrent reconciles never lose a row to
``database is locked``. When the database is down or slow, rows wait in the queue (its
depth is a metric), the outage is logged once (not once per row) and the writer retries
with backoff; once the database answers again the queue is flushed. Only when the queue
is full is a row dropped, and every dropped row is counted.

A row whose primary key is set (an interruption, written again when its replacement
runs) is merged; any other row is inserted.

URLs: ``postgresql://…`` (driven by asyncpg) or ``sqlite:///path`` (aiosqlite);
plain driver-less forms are normalised to their async drivers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel, col, delete, func, select

from spotfleet_operator import metrics as metrics_mod
from spotfleet_operator import scrub
from spotfleet_operator.store import ledger, schema, tables

log = logging.getLogger("spotfleet.store")

#: Rows per write; seconds between retries while the database is unavailable.
BATCH = 200
RETRY_MIN_SECONDS, RETRY_MAX_SECONDS = 1.0, 30.0
#: Price points per INSERT statement of :meth:`Store.add_prices`.
PRICE_CHUNK = 1000


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


def make_engine(url: str, connect_timeout: float = 10.0) -> AsyncEngine:
    """An async engine for ``url``: SQLite with one connection (one writer) and WAL,
    PostgreSQL pooled with pre-ping and a connect timeout (a server that is down fails
    fast instead of hanging the writer)."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, poolclass=sqlalchemy.pool.StaticPool)
        sqlalchemy.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    args: dict[str, Any] = {}
    if url.startswith("postgresql+asyncpg"):
        args = {"timeout": connect_timeout, "command_timeout": 60}
    return create_async_engine(url, pool_pre_ping=True, connect_args=args)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub.scrub(value)
    if isinstance(value, dict | list | tuple):
        return scrub.scrub_tree(value)
    return value


def _utc(t: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back naive: they were stored as UTC."""
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


class Store:
    """The store; ``await open()`` migrates the schema, ``run()`` is the writer task."""

    def __init__(
        self,
        url: str | None = None,
        queue_size: int = 10_000,
        metrics: metrics_mod.Metrics | None = None,
    ) -> None:
        self.url = normalise_url(url or default_url())
        self.sqlite = self.url.startswith("sqlite")
        self.engine: AsyncEngine = make_engine(self.url)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._queue: collections.deque[SQLModel] = collections.deque()
        self._size = queue_size
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._metrics = metrics
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.submitted: collections.Counter[str] = collections.Counter()
        self.migrated: tuple[str | None, str | None] | None = None
        self._down = False

    # ---- schema ------------------------------------------------------------------

    async def open(self) -> tuple[str | None, str | None]:
        """``upgrade head`` (idempotent): the (before, after) revisions."""
        self.migrated = await schema.upgrade(self.engine)
        if self.migrated[0] != self.migrated[1]:
            log.info("store migrated from %s to %s", self.migrated[0], self.migrated[1])
        return self.migrated

    async def close(self) -> None:
        await self.engine.dispose()

    # ---- the writer --------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def available(self) -> bool:
        """False while the writer is retrying through an outage."""
        return not self._down

    def submit(self, row: SQLModel) -> bool:
        """Queue ``row`` for writing (never blocks, never raises). Every string in it,
        JSON included, passes through the scrubber. False: the queue was full and the
        row was dropped (counted)."""
        for name, value in list(row.__dict__.items()):
            if not name.startswith("_"):
                clean = _scrubbed(value)
                if clean is not value:
                    setattr(row, name, clean)
        table = str(getattr(row, "__tablename__", type(row).__name__))
        self.submitted[table] += 1
        if self._metrics is not None:
            self._metrics.store_rows_submitted.labels(table).inc()
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
            for row in rows:
                if isinstance(row, tables.InterruptionRecord):
                    await s.merge(row)  # the same notice, written again with its replacement
                else:
                    s.add(row)
            await s.commit()

    def _outage(self, e: BaseException) -> None:
        self.failures += 1
        if self._metrics is not None:
            self._metrics.store_write_errors.inc()
            self._metrics.store_up.set(0)
        if not self._down:
            log.warning(
                "store unavailable (%s); buffering up to %d rows and retrying",
                type(e).__name__,
                self._size,
            )
            self._down = True

    async def run(self) -> None:
        """The writer: migrate (retrying), then forever write queued rows in batches,
        retrying through outages."""
        delay = RETRY_MIN_SECONDS
        while self.migrated is None:
            try:
                await self.open()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._outage(e)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_SECONDS, delay * 2)
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
                self._outage(e)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_SECONDS, delay * 2)
                continue
            for _ in batch:
                self._queue.popleft()
            self.written += len(batch)
            if self._metrics is not None:
                self._metrics.store_rows.labels("written").inc(len(batch))
                self._metrics.store_queue_depth.set(len(self._queue))
                self._metrics.store_up.set(1)
            if self._down:
                log.info("store available again; %d buffered rows left", len(self._queue))
                self._down = False
            delay = RETRY_MIN_SECONDS

    async def flush(self, within: float = 5.0) -> bool:
        """Wait until the queue is empty; False when ``within`` seconds ran out."""
        if not self._queue:
            return True
        self._drained.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), within)
        return not self._queue

    async def record(self, rec: SQLModel) -> None:
        """Write one row at once (tools and tests; the operator uses :meth:`submit`)."""
        await self._write([rec])

    # ---- reads ---------------------------------------------------------------------

    async def _all(self, stmt: Any) -> list[Any]:
        async with self._sessions() as s:
            return list((await s.execute(stmt)).scalars().all())

    async def decisions(
        self,
        namespace: str,
        policy: str,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> list[tables.DecisionRecord]:
        """Decisions of one policy, oldest first (``start <= at < end`` when given)."""
        t = tables.DecisionRecord
        stmt = select(t).where(t.namespace == namespace).where(t.policy == policy)
        if start is not None:
            stmt = stmt.where(col(t.at) >= start)
        if end is not None:
            stmt = stmt.where(col(t.at) < end)
        return await self._all(stmt.order_by(col(t.at), col(t.id)))

    async def decision_in_force(
        self, namespace: str, policy: str, at: dt.datetime
    ) -> tables.DecisionRecord | None:
        """The last decision of the policy made before ``at`` that changed what runs
        (dry-run and infeasible decisions do not: :func:`ledger.counts`)."""
        t = tables.DecisionRecord
        stmt = (
            select(t)
            .where(t.namespace == namespace)
            .where(t.policy == policy)
            .where(col(t.at) < at)
            .where(col(t.dry_run).is_(False))
            .where(col(t.outcome).not_in(sorted(ledger.SKIPPED_OUTCOMES)))
            .order_by(col(t.at).desc(), col(t.id).desc())
            .limit(1)
        )
        found = await self._all(stmt)
        return found[0] if found else None

    async def actions(
        self,
        namespace: str,
        policy: str,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> list[tables.ActionRecord]:
        t = tables.ActionRecord
        stmt = select(t).where(t.namespace == namespace).where(t.policy == policy)
        if start is not None:
            stmt = stmt.where(col(t.at) >= start)
        if end is not None:
            stmt = stmt.where(col(t.at) < end)
        return await self._all(stmt.order_by(col(t.at), col(t.id)))

    async def interruptions(
        self,
        namespace: str,
        policy: str,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> list[tables.InterruptionRecord]:
        t = tables.InterruptionRecord
        stmt = select(t).where(t.namespace == namespace).where(t.policy == policy)
        if start is not None:
            stmt = stmt.where(col(t.notice_at) >= start)
        if end is not None:
            stmt = stmt.where(col(t.notice_at) < end)
        return await self._all(stmt.order_by(col(t.notice_at), col(t.id)))

    async def policies_since(self, start: dt.datetime) -> list[tuple[str, str, str]]:
        """(namespace, policy, uid) of every policy with a decision at or after ``start``,
        or one in force then (its fleet may still be running)."""
        t = tables.DecisionRecord
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(t.namespace, t.policy, func.max(t.policy_uid)).group_by(
                        t.namespace, t.policy
                    )
                )
            ).all()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    async def ledger(
        self,
        namespace: str,
        policy: str,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> list[tables.SavingsLedgerRow]:
        t = tables.SavingsLedgerRow
        stmt = select(t).where(t.namespace == namespace).where(t.policy == policy)
        if start is not None:
            stmt = stmt.where(col(t.hour) >= start)
        if end is not None:
            stmt = stmt.where(col(t.hour) < end)
        return await self._all(stmt.order_by(col(t.hour)))

    async def put_ledger(self, rows: Iterable[tables.SavingsLedgerRow]) -> int:
        """Replace the ledger rows of the same (namespace, policy, hour) in one transaction."""
        rows = list(rows)
        if not rows:
            return 0
        t = tables.SavingsLedgerRow
        async with self._sessions() as s:
            for r in rows:
                await s.execute(
                    delete(t)
                    .where(col(t.namespace) == r.namespace)
                    .where(col(t.policy) == r.policy)
                    .where(col(t.hour) == r.hour)
                )
            s.add_all(rows)
            await s.commit()
        return len(rows)

    # ---- prices ----------------------------------------------------------------------

    async def last_price_at(self, region: str) -> dict[str, dt.datetime]:
        """Instance type -> its newest stored price point in ``region``."""
        t = tables.PriceObservation
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(t.instance_type, func.max(t.at))
                    .where(t.region == region)
                    .group_by(t.instance_type)
                )
            ).all()
        return {str(k): _utc(v) for k, v in rows if v is not None}

    async def add_prices(self, points: Sequence[dict[str, Any]]) -> int:
        """Insert price points (dicts of the table's columns); a point already stored is
        skipped (unique per region, zone, type, product and time). Returns how many were
        new."""
        if not points:
            return 0
        t = tables.PriceObservation
        if self.sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        new = 0
        async with self._sessions() as s:
            for i in range(0, len(points), PRICE_CHUNK):
                stmt = (
                    insert(t)
                    .values(list(points[i : i + PRICE_CHUNK]))
                    .on_conflict_do_nothing(
                        index_elements=["region", "zone", "instance_type", "product", "at"]
                    )
                    .returning(col(t.id))
                )
                new += len((await s.execute(stmt)).all())
            await s.commit()
        return new

    async def prices(
        self,
        region: str,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        instance_types: Sequence[str] = (),
    ) -> list[tables.PriceObservation]:
        """Stored price points of ``region``, oldest first."""
        t = tables.PriceObservation
        stmt = select(t).where(t.region == region)
        if start is not None:
            stmt = stmt.where(col(t.at) >= start)
        if end is not None:
            stmt = stmt.where(col(t.at) < end)
        if instance_types:
            stmt = stmt.where(col(t.instance_type).in_(list(instance_types)))
        return await self._all(stmt.order_by(col(t.at), col(t.id)))

    async def count(self, table: type[SQLModel]) -> int:
        async with self._sessions() as s:
            n = (await s.execute(select(func.count()).select_from(table))).scalar_one()
            return int(n)

    # ---- retention -------------------------------------------------------------------

    async def prune(self, before: dt.datetime) -> dict[str, int]:
        """Delete rows older than ``before`` from every time-series table (model versions
        are kept); rows deleted per table."""
        out: dict[str, int] = {}
        targets: list[tuple[type[SQLModel], Any]] = [
            (tables.DecisionRecord, tables.DecisionRecord.at),
            (tables.ActionRecord, tables.ActionRecord.at),
            (tables.InterruptionRecord, tables.InterruptionRecord.notice_at),
            (tables.PriceObservation, tables.PriceObservation.at),
            (tables.SavingsLedgerRow, tables.SavingsLedgerRow.hour),
        ]
        async with self._sessions() as s:
            for table, column in targets:
                res: Any = await s.execute(delete(table).where(col(column) < before))
                out[str(getattr(table, "__tablename__", table.__name__))] = int(res.rowcount or 0)
            await s.commit()
        return out

    # ---- models ----------------------------------------------------------------------

    async def add_model(self, row: tables.ModelVersion) -> tables.ModelVersion:
        """Insert a model version (an artifact already stored is returned as it is)."""
        t = tables.ModelVersion
        async with self._sessions() as s:
            found = (
                await s.execute(select(t).where(t.artifact_sha256 == row.artifact_sha256))
            ).scalar_one_or_none()
            if found is not None:
                return found
            s.add(row)
            await s.commit()
            return row

    async def promote(self, sha256: str, at: dt.datetime) -> None:
        """Make ``sha256`` the one promoted model of its region (the region's others are
        demoted)."""
        t = tables.ModelVersion
        async with self._sessions() as s:
            chosen = (await s.execute(select(t).where(t.artifact_sha256 == sha256))).scalar_one()
            for m in (await s.execute(select(t).where(t.region == chosen.region))).scalars():
                want = m.artifact_sha256 == sha256
                if m.promoted != want:
                    m.promoted = want
                    m.promoted_at = at if want else m.promoted_at
                    s.add(m)
            await s.commit()

    async def promoted_model(self, region: str | None = None) -> tables.ModelVersion | None:
        """The promoted model (of ``region`` when given), newest first."""
        t = tables.ModelVersion
        stmt = select(t).where(col(t.promoted).is_(True))
        if region is not None:
            stmt = stmt.where(t.region == region)
        found = await self._all(stmt.order_by(col(t.promoted_at).desc(), col(t.id).desc()))
        return found[0] if found else None

    async def models(self) -> list[tables.ModelVersion]:
        t = tables.ModelVersion
        return await self._all(select(t).order_by(col(t.id)))
