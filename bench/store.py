"""Benchmark the store: write throughput of its writer on PostgreSQL and SQLite, and what
it costs a reconcile to have the store on.

1. **Throughput**: ``--rows`` decision rows (with plan JSON, as the operator writes them)
   are submitted to :class:`spotfleet_operator.store.Store` and the writer task flushes
   them in batches; rows/s = rows / time until the queue is empty (after migration).
   PostgreSQL is a throwaway server (initdb/pg_ctl, as the tests start it) or
   ``$DATABASE_URL``; SQLite is a file in a temporary directory (WAL).
2. **Reconcile latency**: the real ``reconcile.run`` pipeline (planner, act, report) over
   the component tests' in-memory EC2 on the bundled 2021 market; every reconcile is a
   new generation that moves the target between 32 and 48 vCPU, so each one decides,
   launches or terminates and submits decision and action rows. Run ``--reconciles``
   times with the store off (``deps.audit = None``), on SQLite and on PostgreSQL (its
   writer running concurrently on the same event loop); the ratio is p50(on) / p50(off)
   in this run.

Prints one line per figure, then one JSON object (last line).

Usage: .venv/bin/python bench/store.py [--rows N] [--reconciles N]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.component.fake_ec2 import FakeEc2  # noqa: E402
from tests.component.harness import MARKET_TIME, make_deps, policy  # noqa: E402

from spotfleet_operator import metrics, reconcile  # noqa: E402
from spotfleet_operator.store import Store, tables  # noqa: E402

T0 = dt.datetime(2021, 5, 1, tzinfo=dt.UTC)


def row(n: int) -> tables.DecisionRecord:
    return tables.DecisionRecord(
        at=T0 + dt.timedelta(seconds=n),
        namespace="bench",
        policy=f"p{n % 50}",
        policy_uid=f"uid-{n % 50}",
        generation=n,
        outcome="Optimal",
        plan_hash=f"{n:016x}",
        summary="Optimal: 32/32 vcpu in 4 pools, $0.4000/h (60.0% below on-demand)",
        cost_per_hour="0.400000",
        on_demand_equivalent_per_hour="1.000000",
        savings_pct="60.0",
        launches=2,
        plan={"targets": {f"m5.large/us-east-1{z}/spot": 2 for z in "abcd"}, "target": 32.0},
        explanation={"chosen": [{"pool": "m5.large/us-east-1a/spot", "risk": 0.01}] * 4},
        engine_version="0.1.0",
        model_version="0123456789ab",
        unit="vcpu",
        capacity_spot="28",
        capacity_on_demand="4",
    )


async def throughput(url: str, rows: int) -> float:
    s = Store(url, queue_size=rows + 1)
    await s.open()
    writer = asyncio.create_task(s.run())
    try:
        t0 = time.perf_counter()
        for n in range(rows):
            s.submit(row(n))
        assert await s.flush(within=600), "writer did not drain"
        seconds = time.perf_counter() - t0
        assert s.written == rows
        return rows / seconds
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await s.close()


async def reconcile_latency(url: str | None, n: int) -> tuple[list[float], int]:
    """Seconds per reconcile (each one acts), and the rows the store got."""
    deps = make_deps(FakeEc2(MARKET_TIME))
    store: Store | None = None
    writer: asyncio.Task[Any] | None = None
    if url is not None:
        store = Store(url, metrics=metrics.Metrics())
        await store.open()
        writer = asyncio.create_task(store.run())
        deps.audit = store
        deps.record = tables.DecisionRecord
    body = policy()
    out: list[float] = []
    try:
        for i in range(n + 2):
            body = policy({"capacity": {"target": 32 if i % 2 else 48, "unit": "vcpu"}}, i + 1)
            now = MARKET_TIME + dt.timedelta(minutes=i)
            t0 = time.perf_counter()
            res = await reconcile.run(body, deps, now)
            if i >= 2:  # the first two warm caches (market, sweep, solver)
                out.append(time.perf_counter() - t0)
            assert res.plan is not None
        rows = 0
        if store is not None:
            assert await store.flush(within=120)
            rows = store.written
        return out, rows
    finally:
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        if store is not None:
            await store.close()


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


async def main_async(args: argparse.Namespace, pg_url: str, tmp: Path) -> dict[str, Any]:
    sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
    res: dict[str, Any] = {"rows": args.rows, "reconciles": args.reconciles}
    res["sqlite_rows_per_s"] = round(await throughput(sqlite_url, args.rows), 1)
    print(f"write throughput, SQLite:     {res['sqlite_rows_per_s']:>10,.0f} rows/s")
    res["postgres_rows_per_s"] = round(await throughput(pg_url, args.rows), 1)
    print(f"write throughput, PostgreSQL: {res['postgres_rows_per_s']:>10,.0f} rows/s")
    off, _ = await reconcile_latency(None, args.reconciles)
    on_sqlite, rows_sqlite = await reconcile_latency(f"sqlite:///{tmp / 'rec.db'}", args.reconciles)
    on_pg, rows_pg = await reconcile_latency(
        pg_url.replace("/spotfleet", "/recbench"), args.reconciles
    )
    res["reconcile_p50_ms_store_off"] = round(1000 * p50(off), 2)
    res["reconcile_p50_ms_store_sqlite"] = round(1000 * p50(on_sqlite), 2)
    res["reconcile_p50_ms_store_postgres"] = round(1000 * p50(on_pg), 2)
    res["ratio_sqlite_vs_off"] = round(p50(on_sqlite) / p50(off), 3)
    res["ratio_postgres_vs_off"] = round(p50(on_pg) / p50(off), 3)
    res["rows_written_sqlite"] = rows_sqlite
    res["rows_written_postgres"] = rows_pg
    for k in ("off", "sqlite", "postgres"):
        key = f"reconcile_p50_ms_store_{k}"
        print(f"reconcile p50, store {k:<9} {res[key]:>8.2f} ms")
    print(
        f"ratio on/off: SQLite {res['ratio_sqlite_vs_off']:.3f}, "
        f"PostgreSQL {res['ratio_postgres_vs_off']:.3f} "
        f"({rows_sqlite} / {rows_pg} rows written by the reconciles)"
    )
    res["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--reconciles", type=int, default=40)
    args = ap.parse_args()
    cluster = None
    pg_url = os.environ.get("DATABASE_URL")
    if not pg_url:
        from tests.fixtures import postgres

        cluster = postgres.start_cluster()
        pg_url = cluster.url
        cluster.create_database("recbench")
    try:
        with tempfile.TemporaryDirectory(prefix="spotfleet-bench-") as d:
            res = asyncio.run(main_async(args, pg_url, Path(d)))
    finally:
        if cluster is not None:
            cluster.destroy()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
