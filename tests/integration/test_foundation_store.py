"""Foundation: the audit store creates its table and round-trips rows in PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import text

from spotfleet_operator import store

pytestmark = pytest.mark.integration


def _row(n: int) -> store.DecisionRecord:
    return store.DecisionRecord(
        at=dt.datetime(2021, 5, 1, 12, n, tzinfo=dt.UTC),
        namespace="team-a",
        policy="web",
        policy_uid="uid-1",
        generation=1,
        outcome="Optimal",
        plan_hash=f"h{n}",
        summary="2 x m5.large spot",
        cost_per_hour="0.0770",
        on_demand_equivalent_per_hour="0.1920",
        savings_pct="59.90",
        launches=2,
    )


async def _roundtrip(url: str) -> list[str]:
    s = store.Store(url)
    await s.open()
    try:
        await s.record(_row(1))
        await s.record(_row(2))
        rows = await s.decisions("team-a", "web")
        return [r.plan_hash for r in rows]
    finally:
        await s.close()


async def test_postgres_table_created_and_rows_read_back(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://")
    assert await _roundtrip(postgres_url) == ["h1", "h2"]
    s = store.Store(postgres_url)
    try:
        async with s.engine.connect() as conn:
            version = (await conn.execute(text("select version()"))).scalar_one()
            cols = (
                (
                    await conn.execute(
                        text(
                            "select column_name from information_schema.columns "
                            "where table_name = 'decisions' order by column_name"
                        )
                    )
                )
                .scalars()
                .all()
            )
    finally:
        await s.close()
    assert "PostgreSQL" in version
    assert {"at", "namespace", "policy", "cost_per_hour", "savings_pct"} <= set(cols)


async def test_sqlite_default_roundtrip(tmp_path: Path) -> None:
    assert await _roundtrip(f"sqlite:///{tmp_path / 'audit.db'}") == ["h1", "h2"]
    assert (tmp_path / "audit.db").stat().st_size > 0
