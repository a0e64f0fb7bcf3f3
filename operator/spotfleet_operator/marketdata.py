"""The operator's view of the spot market: EC2 price history turned into the
engine's MarketSnapshot (cached per region for a few seconds), advisor bands
from the bundled snapshots, and the pools recently found out of capacity."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from spotfleet_engine import market as market_mod
from spotfleet_engine import model


class PriceSource(Protocol):
    """What the market cache needs from the EC2 adapter."""

    async def spot_price_history(
        self, start: dt.datetime, end: dt.datetime | None = None, instance_types: Sequence[str] = ()
    ) -> Sequence[PriceRow]: ...


class PriceRow(Protocol):
    instance_type: str
    zone: str
    at: dt.datetime
    price: float


@dataclass
class UnavailablePools:
    """Pools that answered InsufficientInstanceCapacity, each until its TTL expires."""

    ttl: dt.timedelta
    _until: dict[model.Pool, dt.datetime] = field(default_factory=dict)

    def mark(self, pool: model.Pool, now: dt.datetime) -> dt.datetime:
        """Mark ``pool`` unavailable from ``now``; returns when it will be retried."""
        until = now + self.ttl
        self._until[pool] = until
        return until

    def active(self, now: dt.datetime) -> frozenset[model.Pool]:
        """Pools still unavailable at ``now`` (expired marks are dropped)."""
        for p in [p for p, t in self._until.items() if t <= now]:
            del self._until[p]
        return frozenset(self._until)


@dataclass
class MarketCache:
    """One region's MarketSnapshot, refreshed from EC2 at most every ``max_age``."""

    region: str
    lookback: dt.timedelta
    max_age: dt.timedelta
    advisor: market_mod.AdvisorHistory | None = None
    _snapshot: market_mod.MarketSnapshot | None = None
    _fetched: dt.datetime | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(
        self, source: PriceSource, now: dt.datetime, unavailable: frozenset[model.Pool]
    ) -> market_mod.MarketSnapshot:
        """The market at ``now``; ``observed_at`` is the later of ``now`` and the newest
        price the market reported (a stand-in cloud may run its clock ahead)."""
        async with self._lock:
            if (
                self._snapshot is None
                or self._fetched is None
                or now - self._fetched > self.max_age
            ):
                rows = await source.spot_price_history(start=now - self.lookback)
                self._snapshot = build_snapshot(self.region, rows, now, self.advisor)
                self._fetched = now
            snap = self._snapshot
        return market_mod.MarketSnapshot(
            region=snap.region,
            observed_at=snap.observed_at,
            spot_history=snap.spot_history,
            advisor=snap.advisor,
            placement_scores=snap.placement_scores,
            unavailable=unavailable,
        )


def build_snapshot(
    region: str,
    rows: Sequence[PriceRow],
    now: dt.datetime,
    advisor: market_mod.AdvisorHistory | None = None,
) -> market_mod.MarketSnapshot:
    """Group DescribeSpotPriceHistory rows per (type, zone), ascending, de-duplicated."""
    acc: dict[tuple[str, str], dict[dt.datetime, float]] = {}
    newest = now
    for r in rows:
        at = r.at if r.at.tzinfo else r.at.replace(tzinfo=dt.UTC)
        acc.setdefault((r.instance_type, r.zone), {})[at] = r.price
        newest = max(newest, at)
    history = {
        key: tuple(market_mod.PricePoint(t, p) for t, p in sorted(points.items()))
        for key, points in acc.items()
    }
    adv = (advisor or market_mod.load_bundled_advisor(region)).at(newest)
    return market_mod.MarketSnapshot(
        region=region, observed_at=newest, spot_history=history, advisor=adv
    )
