"""The store on real PostgreSQL and SQLite (every test runs on both, ``store_url``):
migrations from an empty database and from release 0.1.0's database with its rows, a
re-run that changes nothing, every table round-tripped, deduplicated prices, the ledger
roll-up, retention, model promotion, and the writer buffering through an outage."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from spotfleet_operator import jobs, metrics, scrub
from spotfleet_operator.store import Store, ledger, schema, tables
from tests.fixtures.postgres import PgCluster

pytestmark = pytest.mark.integration

T0 = dt.datetime(2021, 5, 1, 12, 0, tzinfo=dt.UTC)

# ---- release 0.1.0's schema, frozen ----------------------------------------------------
# What `SQLModel.metadata.create_all` made in release 0.1.0 (store/tables.py at that
# release, column for column); its SQLite DDL is checked against the release's own text.
_V010 = sa.MetaData()
_S = sa.String  # sqlmodel's AutoString is a VARCHAR without length
V010_DECISIONS = sa.Table(
    "decisions",
    _V010,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("namespace", _S, nullable=False, index=True),
    sa.Column("policy", _S, nullable=False, index=True),
    sa.Column("policy_uid", _S, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("outcome", _S, nullable=False),
    sa.Column("plan_hash", _S, nullable=False),
    sa.Column("summary", _S, nullable=False),
    sa.Column("cost_per_hour", _S, nullable=False),
    sa.Column("on_demand_equivalent_per_hour", _S, nullable=False),
    sa.Column("savings_pct", _S, nullable=False),
    sa.Column("launches", sa.Integer, nullable=False),
    sa.Column("terminations", sa.Integer, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
)
#: `sqlite_master.sql` of release 0.1.0's table (read from a database it created).
V010_SQLITE_DDL = """CREATE TABLE decisions (
	id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	namespace VARCHAR NOT NULL, 
	policy VARCHAR NOT NULL, 
	policy_uid VARCHAR NOT NULL, 
	generation INTEGER NOT NULL, 
	outcome VARCHAR NOT NULL, 
	plan_hash VARCHAR NOT NULL, 
	summary VARCHAR NOT NULL, 
	cost_per_hour VARCHAR NOT NULL, 
	on_demand_equivalent_per_hour VARCHAR NOT NULL, 
	savings_pct VARCHAR NOT NULL, 
	launches INTEGER NOT NULL, 
	terminations INTEGER NOT NULL, 
	dry_run BOOLEAN NOT NULL, 
	PRIMARY KEY (id)
)"""  # noqa: W291


def v010_row(n: int) -> dict[str, Any]:
    return {
        "at": T0 + dt.timedelta(minutes=n),
        "namespace": "team-a",
        "policy": "web",
        "policy_uid": "uid-1",
        "generation": 1 + n % 2,
        "outcome": "Optimal",
        "plan_hash": f"h{n}",
        "summary": f"{n} x m5.large spot",
        "cost_per_hour": f"0.{n:02d}7",
        "on_demand_equivalent_per_hour": "0.1920",
        "savings_pct": "59.90",
        "launches": n,
        "terminations": n % 3,
        "dry_run": n == 2,
    }


async def make_release_database(url: str, rows: int) -> None:
    engine = Store(url).engine
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_V010.create_all)
            if rows:
                await conn.execute(V010_DECISIONS.insert(), [v010_row(n) for n in range(rows)])
    finally:
        await engine.dispose()


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    """Tables, their columns (name, type, nullable), indexes and unique constraints."""

    def read(conn: sa.Connection) -> dict[str, Any]:
        insp = sa.inspect(conn)
        out: dict[str, Any] = {}
        for t in sorted(insp.get_table_names()):
            out[t] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)
                ],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"])) for i in insp.get_indexes(t)
                ),
                "unique": sorted(
                    (u["name"] or "", tuple(u["column_names"]))
                    for u in insp.get_unique_constraints(t)
                ),
            }
        return out

    async with engine.connect() as conn:
        found: dict[str, Any] = await conn.run_sync(read)
        return found


def decision(n: int, at: dt.datetime, **kw: Any) -> tables.DecisionRecord:
    base: dict[str, Any] = {
        "at": at,
        "namespace": "team-a",
        "policy": "web",
        "policy_uid": "uid-1",
        "generation": 1,
        "outcome": "Optimal",
        "plan_hash": f"p{n}",
        "summary": f"plan {n}",
        "cost_per_hour": "1.00",
        "on_demand_equivalent_per_hour": "3.00",
        "savings_pct": "66.7",
        "unit": "vcpu",
        "capacity_spot": "28",
        "capacity_on_demand": "4",
    }
    base.update(kw)
    return tables.DecisionRecord(**base)


# ---- migrations ------------------------------------------------------------------------


async def test_release_ddl_is_what_release_0_1_0_made(tmp_path: Path) -> None:
    """The frozen 0.1.0 table is the release's table (its SQLite DDL, verbatim)."""
    url = f"sqlite:///{tmp_path / 'v010.db'}"
    await make_release_database(url, 0)
    s = Store(url)
    try:
        async with s.engine.connect() as conn:
            ddl = (
                await conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name='decisions'"))
            ).scalar_one()
    finally:
        await s.close()
    assert ddl == V010_SQLITE_DDL


async def test_migrate_an_empty_database_then_again_changes_nothing(store_url: str) -> None:
    s = Store(store_url)
    try:
        assert await schema.current(s.engine) is None
        assert await s.open() == (None, schema.head())
        assert schema.head() == "0002"
        first = await snapshot(s.engine)
        assert set(first) == {t.__tablename__ for t in tables.TABLES} | {"alembic_version"}
        # the revisions build exactly the tables the code declares
        assert await schema.differences(s.engine) == []
        assert await s.open() == ("0002", "0002")
        assert await snapshot(s.engine) == first
    finally:
        await s.close()


async def test_release_database_upgrades_in_place_with_every_row(store_url: str) -> None:
    await make_release_database(store_url, 5)
    s = Store(store_url)
    try:
        assert await schema.current(s.engine) is None  # 0.1.0 had no migrations
        assert await s.open() == (None, "0002")
        rows = await s.decisions("team-a", "web")
        assert len(rows) == 5
        for n, r in enumerate(rows):
            want = v010_row(n)
            got = {k: getattr(r, k) for k in want}
            got["at"] = ledger._utc(got["at"])
            assert got == want
            assert r.plan is None and r.engine_version is None and r.capacity_spot is None
        assert await schema.differences(s.engine) == []
        before = await snapshot(s.engine)
        assert await s.open() == ("0002", "0002")
        assert await snapshot(s.engine) == before
        assert len(await s.decisions("team-a", "web")) == 5
        # and the upgraded table takes the new rows
        await s.record(decision(9, T0 + dt.timedelta(hours=1), plan={"targets": {"a": 1}}))
        rows = await s.decisions("team-a", "web")
        assert len(rows) == 6 and rows[-1].plan == {"targets": {"a": 1}}
    finally:
        await s.close()


# ---- every table -----------------------------------------------------------------------


async def test_every_table_round_trips_through_the_writer(store_url: str) -> None:
    scrub.register("wJalrXUtnFEMI/K7MDENG/bPxRfiCYSTORETEST")
    m = metrics.Metrics()
    s = Store(store_url, metrics=m)
    await s.open()
    writer = asyncio.create_task(s.run())
    try:
        s.submit(
            decision(
                1,
                T0,
                plan={"note": "key wJalrXUtnFEMI/K7MDENG/bPxRfiCYSTORETEST"},
                explanation={"chosen": [{"pool": "m5.large/us-east-1a/spot"}]},
                engine_version="0.1.0",
                model_version="abc123def456",
            )
        )
        s.submit(
            tables.ActionRecord(
                at=T0,
                namespace="team-a",
                policy="web",
                policy_uid="uid-1",
                kind="launch",
                pool="m5.large/us-east-1a/spot",
                count_requested=3,
                instance_ids=["i-0000000000000001", "i-0000000000000002"],
                request_id="req-1",
                client_token="sf-abc",
                outcome="partial",
                error_code="InsufficientInstanceCapacity",
                duration_seconds=0.25,
            )
        )
        first = tables.InterruptionRecord(
            id="i-0000000000000001/warning/20210501T120500.000000Z",
            at=T0 + dt.timedelta(minutes=5),
            namespace="team-a",
            policy="web",
            policy_uid="uid-1",
            instance_id="i-0000000000000001",
            pool="m5.large/us-east-1a/spot",
            kind="warning",
            notice_at=T0 + dt.timedelta(minutes=5),
        )
        s.submit(first)
        # the same notice written again with its replacement: merged, not duplicated
        fields = {k: getattr(first, k) for k in tables.InterruptionRecord.model_fields}
        fields.update(
            replacement_ids=["i-0000000000000009"],
            replaced_at=T0 + dt.timedelta(minutes=6),
            running_at=T0 + dt.timedelta(minutes=7),
            time_to_replace_seconds=120.0,
        )
        s.submit(tables.InterruptionRecord(**fields))
        assert await s.flush(within=60)
        d = (await s.decisions("team-a", "web"))[0]
        assert d.plan == {"note": "key [REDACTED]"}  # JSON passes the scrubber too
        assert d.explanation == {"chosen": [{"pool": "m5.large/us-east-1a/spot"}]}
        assert (d.engine_version, d.model_version) == ("0.1.0", "abc123def456")
        (a,) = await s.actions("team-a", "web")
        assert a.instance_ids == ["i-0000000000000001", "i-0000000000000002"]
        assert (a.request_id, a.client_token, a.outcome) == ("req-1", "sf-abc", "partial")
        (i,) = await s.interruptions("team-a", "web")
        assert i.replacement_ids == ["i-0000000000000009"]
        assert i.time_to_replace_seconds == 120.0
        assert ledger._utc(i.running_at or T0) == T0 + dt.timedelta(minutes=7)
        assert s.submitted == {"decisions": 1, "actions": 1, "interruptions": 2}
        text = m.exposition().decode()
        assert 'spotfleet_store_rows_submitted_total{table="interruptions"} 2.0' in text
        assert 'spotfleet_store_rows_total{outcome="written"} 4.0' in text
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await s.close()


async def test_prices_are_unique_per_point(store_url: str) -> None:
    s = Store(store_url)
    await s.open()
    try:
        pts = [
            {
                "region": "us-east-1",
                "zone": z,
                "instance_type": t,
                "product": "Linux/UNIX",
                "at": T0 + dt.timedelta(hours=h),
                "price": f"0.0{h + 1}",
            }
            for z in ("us-east-1a", "us-east-1b")
            for t in ("m5.large", "c5.large")
            for h in range(3)
        ]
        assert await s.add_prices(pts) == 12
        assert await s.add_prices(pts) == 0
        later = [dict(p, at=p["at"] + dt.timedelta(hours=3)) for p in pts[:4]]
        assert await s.add_prices(pts + later) == 4
        assert await s.count(tables.PriceObservation) == 16
        last = await s.last_price_at("us-east-1")
        assert last == {
            "m5.large": T0 + dt.timedelta(hours=5),
            "c5.large": T0 + dt.timedelta(hours=3),
        }
    finally:
        await s.close()


async def test_ledger_rollup_prices_each_hour_by_the_plan_in_force(store_url: str) -> None:
    s = Store(store_url)
    await s.open()
    try:
        await s.record(decision(1, T0 + dt.timedelta(minutes=30), cost_per_hour="2.00"))
        await s.record(decision(2, T0 + dt.timedelta(hours=1, minutes=15), cost_per_hour="4.00"))
        await s.record(decision(3, T0 + dt.timedelta(hours=1, minutes=20), dry_run=True))
        await s.record(
            tables.ActionRecord(
                at=T0 + dt.timedelta(hours=1, minutes=15),
                namespace="team-a",
                policy="web",
                policy_uid="uid-1",
                kind="launch",
                count_requested=2,
                instance_ids=["i-1", "i-2"],
                outcome="ok",
            )
        )
        now = T0 + dt.timedelta(hours=2, minutes=30)
        assert await jobs.rollup_ledger(s, now, dt.timedelta(days=1)) == 3
        rows = await s.ledger("team-a", "web")
        by = {ledger._utc(r.hour): r for r in rows}
        h0, h1, h2 = T0, T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2)
        assert list(by) == [h0, h1, h2]
        # 12:30-13:00 at $2; 13:00-13:15 at $2, 13:15-14:00 at $4 (the dry run ignored);
        # 14:00-14:30 at $4
        assert by[h0].cost == "1.000000" and by[h0].covered_hours == "0.500000"
        assert by[h1].cost == "3.500000" and by[h1].launches == 2
        assert by[h2].cost == "2.000000" and by[h2].covered_hours == "0.500000"
        assert by[h2].rate_per_hour == "4.000000"
        assert by[h1].on_demand_equivalent == "3.000000" and by[h1].savings == "-0.500000"
        assert by[h1].capacity_hours_spot == "28.000000"
        # rolled up again later: the partial hour grows, nothing is duplicated
        later = now + dt.timedelta(minutes=15)
        await jobs.rollup_ledger(s, later, dt.timedelta(days=1))
        rows = await s.ledger("team-a", "web")
        assert [r.cost for r in rows] == ["1.000000", "3.500000", "3.000000"]
    finally:
        await s.close()


async def test_retention_prunes_old_rows_and_keeps_models(store_url: str) -> None:
    s = Store(store_url)
    await s.open()
    try:
        old, new = T0 - dt.timedelta(days=100), T0
        await s.record(decision(1, old))
        await s.record(decision(2, new))
        await s.add_prices(
            [
                {
                    "region": "r",
                    "zone": "z",
                    "instance_type": "t",
                    "product": "p",
                    "at": t,
                    "price": "1",
                }
                for t in (old, new)
            ]
        )
        await s.add_model(model_row("a" * 64))
        gone = await s.prune(T0 - dt.timedelta(days=90))
        assert gone["decisions"] == 1 and gone["price_observations"] == 1
        assert [d.plan_hash for d in await s.decisions("team-a", "web")] == ["p2"]
        assert len(await s.models()) == 1
    finally:
        await s.close()


def model_row(sha: str, region: str = "us-east-1") -> tables.ModelVersion:
    return tables.ModelVersion(
        artifact_sha256=sha,
        created_at=T0,
        region=region,
        name="xgboost-price-spike",
        artifact="{}",
    )


async def test_one_promoted_model_per_region(store_url: str) -> None:
    s = Store(store_url)
    await s.open()
    try:
        for sha, region in (
            ("a" * 64, "us-east-1"),
            ("b" * 64, "us-east-1"),
            ("c" * 64, "eu-west-1"),
        ):
            await s.add_model(model_row(sha, region))
        assert await s.promoted_model() is None
        await s.promote("a" * 64, T0)
        await s.promote("c" * 64, T0 + dt.timedelta(minutes=1))
        await s.promote("b" * 64, T0 + dt.timedelta(minutes=2))
        got = await s.promoted_model("us-east-1")
        assert got is not None and got.artifact_sha256 == "b" * 64
        eu = await s.promoted_model("eu-west-1")
        assert eu is not None and eu.artifact_sha256 == "c" * 64
        assert sum(m.promoted for m in await s.models()) == 2
        # the same artifact added again is the same row
        again = await s.add_model(model_row("a" * 64))
        assert again.artifact_sha256 == "a" * 64 and len(await s.models()) == 3
    finally:
        await s.close()


# ---- the writer through an outage --------------------------------------------------------


async def _wait(predicate: Any, what: str, tries: int = 600) -> None:
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def _outage_then_recovery(
    s: Store, m: metrics.Metrics, down: Any, up: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spotfleet.store")
    writer = asyncio.create_task(s.run())
    try:
        await down()
        for n in range(25):
            assert s.submit(decision(n, T0 + dt.timedelta(seconds=n)))
        await _wait(lambda: s.failures >= 2, "two failed attempts")
        assert s.depth == 25 and s.written == 0 and not s.available
        # 5 more than the buffer holds: dropped, each one counted
        for n in range(25, 35):
            s.submit(decision(n, T0 + dt.timedelta(seconds=n)))
        assert s.dropped == 5 and s.depth == 30
        await up()
        assert await s.flush(within=120)
        assert s.written == 30 and s.available
        rows = await s.decisions("team-a", "web")
        assert [r.plan_hash for r in rows] == [f"p{n}" for n in range(30)]
        warnings = [r for r in caplog.records if "store unavailable" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        assert any("available again" in r.getMessage() for r in caplog.records)
        text = m.exposition().decode()
        assert 'spotfleet_store_rows_total{outcome="dropped"} 5.0' in text
        assert 'spotfleet_store_rows_total{outcome="written"} 30.0' in text
        assert "spotfleet_store_queue_depth 0.0" in text
        assert f"spotfleet_store_write_errors_total {float(s.failures)}" in text
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await s.close()


async def test_sqlite_writer_buffers_while_the_database_cannot_be_opened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    where = tmp_path / "not-yet"
    m = metrics.Metrics()
    s = Store(f"sqlite:///{where / 'store.db'}", queue_size=30, metrics=m)

    async def down() -> None:
        assert not where.exists()  # the file cannot be opened: every attempt fails

    async def up() -> None:
        where.mkdir()

    await _outage_then_recovery(s, m, down, up, caplog)


async def test_postgres_writer_buffers_while_the_server_is_stopped(
    pg_cluster: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    url = pg_cluster.create_database("outage")
    m = metrics.Metrics()
    s = Store(url, queue_size=30, metrics=m)
    await s.open()

    async def down() -> None:
        await asyncio.to_thread(pg_cluster.stop, "immediate")

    async def up() -> None:
        await asyncio.to_thread(pg_cluster.start)

    try:
        await _outage_then_recovery(s, m, down, up, caplog)
    finally:
        if not _running(pg_cluster):  # leave the session's server running for the others
            await asyncio.to_thread(pg_cluster.start)


def _running(c: PgCluster) -> bool:
    return (c.data / "postmaster.pid").exists()
