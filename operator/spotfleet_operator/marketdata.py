"""The operator's view of the spot market, shared by every policy of a region: EC2 price
history turned into the engine's MarketSnapshot (one refresh at a time, reused for
``max_age``, the last good one kept through an outage), the pools found out of
capacity, and the risk scores of a snapshot (scored once, whichever policy asks).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model
from spotfleet_engine.risk import protocol as risk_protocol

#: Price points stamped later than this past our clock are not trusted (clock skew).
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)


class PriceSource(Protocol):
    """What the market cache needs from the cloud port."""

    async def spot_price_history(
        self, start: dt.datetime, end: dt.datetime | None = None, instance_types: Sequence[str] = ()
    ) -> Sequence[PriceRow]: ...


class PriceRow(Protocol):
    """One price change (USD per instance-hour)."""

    @property
    def instance_type(self) -> str: ...
    @property
    def zone(self) -> str: ...
    @property
    def at(self) -> dt.datetime: ...
    @property
    def price(self) -> float: ...


@dataclass
class UnavailablePools:
    """Pools that answered a capacity error or were interrupted, each until its TTL ends."""

    ttl: dt.timedelta
    _until: dict[model.Pool, dt.datetime] = field(default_factory=dict)

    def mark(
        self, pool: model.Pool, now: dt.datetime, until: dt.datetime | None = None
    ) -> dt.datetime:
        """Avoid ``pool`` from ``now`` (until ``until``, default ``now`` + TTL; a later
        mark never shortens an earlier one); returns when it will be tried again."""
        end = until or now + self.ttl
        self._until[pool] = max(end, self._until.get(pool, end))
        return self._until[pool]

    def active(self, now: dt.datetime) -> frozenset[model.Pool]:
        """Pools still avoided at ``now`` (expired marks are dropped)."""
        for p in [p for p, t in self._until.items() if t <= now]:
            del self._until[p]
        return frozenset(self._until)

    def until(self, pool: model.Pool) -> dt.datetime | None:
        return self._until.get(pool)


@dataclass
class InterruptionPenalties:
    """Spot pools interrupted recently, as an extra interruption probability (0..1) the
    planner adds to the risk model's: each interruption adds ``per_interruption``
    (combined as independent events), halving every ``half_life``; forgotten below
    ``FORGET``. Quantised to 0.01, so a penalty that has not moved keeps a decision
    reusable. Graded (more interruptions, more penalty) and decaying, unlike the
    capacity TTL of :class:`UnavailablePools`."""

    half_life: dt.timedelta = dt.timedelta(hours=6)
    per_interruption: float = 0.3
    _seen: dict[model.Pool, list[dt.datetime]] = field(default_factory=dict)

    FORGET: ClassVar[float] = 0.01

    def note(self, pool: model.Pool, now: dt.datetime) -> None:
        """An instance in ``pool`` was interrupted at ``now``."""
        self._seen.setdefault(pool, []).append(now)

    def at(self, now: dt.datetime) -> dict[model.Pool, float]:
        """Each penalised pool's extra interruption probability at ``now``."""
        out: dict[model.Pool, float] = {}
        for pool, times in list(self._seen.items()):
            keep = 1.0
            for t in times:
                age = max(0.0, (now - t) / self.half_life)
                keep *= 1.0 - self.per_interruption * 0.5**age
            extra = round(1.0 - keep, 2)
            if extra < self.FORGET:
                del self._seen[pool]
            else:
                out[pool] = extra
        return out


class MarketUnavailable(Exception):
    """No price data could be read and no earlier snapshot is recent enough."""


@dataclass
class MarketCache:
    """One region's MarketSnapshot, refreshed from EC2 at most every ``max_age`` (one
    refresh at a time: concurrent callers wait for it). After the first full read of
    ``lookback`` hours, a refresh asks only for the changes since the previous one
    (minus ``overlap``) and merges them; pools without a change keep their history
    objects. A failed refresh keeps serving the last good snapshot while it is younger
    than ``keep_last_good``."""

    region: str
    lookback: dt.timedelta
    max_age: dt.timedelta
    keep_last_good: dt.timedelta = dt.timedelta(minutes=15)
    overlap: dt.timedelta = dt.timedelta(minutes=5)
    advisor: market_mod.AdvisorHistory | None = None
    refreshes: int = 0
    _snapshot: market_mod.MarketSnapshot | None = None
    _fetched: dt.datetime | None = None
    _points: dict[tuple[str, str], dict[dt.datetime, float]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def fresh(self, now: dt.datetime) -> bool:
        return self._fetched is not None and now - self._fetched <= self.max_age

    async def get(self, source: PriceSource, now: dt.datetime) -> market_mod.MarketSnapshot:
        """The region's snapshot as of (at most ``max_age`` before) ``now``."""
        if self._snapshot is not None and self.fresh(now):
            return self._snapshot
        async with self._lock:
            if self._snapshot is not None and self.fresh(now):
                return self._snapshot
            full = self._snapshot is None or self._fetched is None
            start = (
                now - self.lookback
                if full
                else max(now - self.lookback, (self._fetched or now) - self.overlap)
            )
            try:
                rows = await source.spot_price_history(start=start)
            except Exception:
                if (
                    self._snapshot is not None
                    and self._fetched is not None
                    and now - self._fetched <= self.keep_last_good
                ):
                    return self._snapshot
                raise
            self._snapshot = self._merge(rows, now, self._snapshot)
            self._fetched = now
            self.refreshes += 1
            return self._snapshot

    def _merge(
        self,
        rows: Sequence[PriceRow],
        now: dt.datetime,
        previous: market_mod.MarketSnapshot | None,
    ) -> market_mod.MarketSnapshot:
        limit = now + MAX_CLOCK_SKEW
        dirty: set[tuple[str, str]] = set()
        for r in rows:
            at = r.at if r.at.tzinfo else r.at.replace(tzinfo=dt.UTC)
            if at > limit:
                continue
            key = (r.instance_type, r.zone)
            pts = self._points.setdefault(key, {})
            if pts.get(at) != r.price:
                pts[at] = r.price
                dirty.add(key)
        cutoff = now - self.lookback
        for key, pts in self._points.items():
            old = sorted(t for t in pts if t < cutoff)
            for t in old[:-1]:  # the last one before the window is the price in force
                del pts[t]
                dirty.add(key)
        if previous is not None and not dirty and len(previous.spot_history) == len(self._points):
            return previous  # nothing changed: the same snapshot (and its scored risk)
        history: dict[tuple[str, str], tuple[market_mod.PricePoint, ...]] = {}
        before = previous.spot_history if previous is not None else {}
        newest = now
        for key, pts in self._points.items():
            kept = before.get(key)
            if key in dirty or kept is None:
                history[key] = tuple(market_mod.PricePoint(t, p) for t, p in sorted(pts.items()))
            else:
                history[key] = tuple(kept)
            if history[key]:
                newest = max(newest, history[key][-1].at)
        adv = (self.advisor or market_mod.load_bundled_advisor(self.region)).at(newest)
        return market_mod.MarketSnapshot(
            region=self.region, observed_at=newest, spot_history=history, advisor=adv
        )


def build_snapshot(
    region: str,
    rows: Sequence[PriceRow],
    now: dt.datetime,
    advisor: market_mod.AdvisorHistory | None = None,
) -> market_mod.MarketSnapshot:
    """Group DescribeSpotPriceHistory rows per (type, zone), ascending, de-duplicated;
    points stamped more than :data:`MAX_CLOCK_SKEW` after ``now`` are dropped, so the
    snapshot never holds a price from the future (``observed_at`` is ``now``, or the
    newest point within the skew)."""
    acc: dict[tuple[str, str], dict[dt.datetime, float]] = {}
    newest = now
    limit = now + MAX_CLOCK_SKEW
    for r in rows:
        at = r.at if r.at.tzinfo else r.at.replace(tzinfo=dt.UTC)
        if at > limit:
            continue
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


class SnapshotRisk:
    """A :class:`RiskModel` bound to one market snapshot: each pool is scored once, at the
    snapshot's own time, whichever policy asks (the risk of a pool is a property of the
    market, not of the policy). Thread-safe: decisions run on worker threads.

    The ``market`` and ``now`` a caller passes are ignored in favour of the bound
    snapshot (the same prices, with that policy's view of unavailable pools)."""

    def __init__(
        self,
        model_: risk_protocol.RiskModel,
        snapshot: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
    ) -> None:
        self.inner = model_
        self.snapshot = snapshot
        self.catalog = catalog
        self.name = model_.name
        self.horizon_hours = model_.horizon_hours
        self._p: dict[model.Pool, float] = {}
        self._lock = threading.Lock()

    def interruption_probability(
        self,
        pools: Sequence[model.Pool],
        market: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
        now: dt.datetime,
    ) -> list[float]:
        with self._lock:
            if not self._p:  # score the whole market once: scores never depend on who asks
                every = [p for p, _ in self.snapshot.spot_pools()]
                if every:
                    scores = self.inner.interruption_probability(
                        every, self.snapshot, self.catalog, self.snapshot.observed_at
                    )
                    self._p.update(zip(every, scores, strict=True))
            missing = [p for p in dict.fromkeys(pools) if p not in self._p]
            if missing:
                scores = self.inner.interruption_probability(
                    missing, self.snapshot, self.catalog, self.snapshot.observed_at
                )
                self._p.update(zip(missing, scores, strict=True))
            return [self._p[p] for p in pools]
