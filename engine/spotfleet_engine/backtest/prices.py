"""Prices on the replay grid: the candidate pools of one policy (chosen by
:mod:`spotfleet_engine.candidates`, the planner's rule), exact per-second
billing, and cheap market snapshots that contain only the past.

Everything here is pure (no I/O, no clock): the price history comes in as a
:class:`~spotfleet_engine.market.PriceHistory` (built by a loader, or by
:func:`history_from_rows` from rows the caller read).

Billing: a spot instance pays the price in force, second by second (EC2 bills
Linux spot per second at the spot price of the moment, also for the seconds an
instance ran before EC2 interrupted it). The cumulative cost of one instance of
a pool from a reference time is a piecewise-linear function of time; it is
tabulated at every price change and on the decision grid, so billing an
interval is one subtraction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from spotfleet_engine import candidates as cand_mod
from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: How much history a snapshot carries (the risk model's longest window is 168 h).
DEFAULT_LOOKBACK = timedelta(days=8)


def parse_time(text: str) -> datetime:
    """ISO-8601 timestamp; naive means UTC; ``Z`` accepted."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "T"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def history_from_rows(
    rows: Iterable[Mapping[str, str]],
    region: str | None = None,
    product_description: str | None = "Linux/UNIX",
) -> market_mod.PriceHistory:
    """A PriceHistory from ``describe-spot-price-history`` CSV rows.

    Columns used: ``timestamp``, ``availability_zone``, ``instance_type``,
    ``spot_price``, and when present ``product_description`` (rows of another
    product are skipped unless ``product_description`` is None) and ``region``
    (default: the zone name minus its letter). Duplicate timestamps in a pool
    keep the last row. Rows whose price is unusable (negative or zero such as
    the ``-1.0`` sentinel, NaN, infinite, not a number:
    :func:`spotfleet_engine.market.price_problem`) are dropped and counted in
    ``PriceHistory.rejected_rows``. Raises ValueError when no row is usable.
    """
    acc: dict[tuple[str, str], dict[int, float]] = {}
    seen_region: str | None = region
    cache: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for r in rows:
        pd = r.get("product_description")
        if product_description is not None and pd is not None and pd != product_description:
            continue
        zone = r["availability_zone"]
        reg = r.get("region") or zone[:-1]
        if region is not None and reg != region:
            continue
        if seen_region is None:
            seen_region = reg
        elif reg != seen_region:
            raise ValueError(f"rows from more than one region ({seen_region}, {reg}); pass region=")
        problem = market_mod.price_problem(r["spot_price"])
        if problem is not None:
            rejected[problem] = rejected.get(problem, 0) + 1
            continue
        ts = r["timestamp"]
        sec = cache.get(ts)
        if sec is None:
            sec = int(parse_time(ts).timestamp())
            cache[ts] = sec
        acc.setdefault((r["instance_type"], zone), {})[sec] = float(r["spot_price"])
    if not acc or seen_region is None:
        dropped = f" ({rejected_text(rejected)} dropped)" if rejected else ""
        raise ValueError(f"no usable spot price rows{dropped}")
    series: dict[tuple[str, str], market_mod.PoolSeries] = {}
    lo = hi = None
    for key in sorted(acc):
        pts = sorted(acc[key].items())
        t = np.asarray([p[0] for p in pts], dtype=np.int64)
        v = np.asarray([p[1] for p in pts], dtype=np.float64)
        series[key] = market_mod.PoolSeries(times=t, prices=v)
        lo = int(t[0]) if lo is None else min(lo, int(t[0]))
        hi = int(t[-1]) if hi is None else max(hi, int(t[-1]))
    assert lo is not None and hi is not None
    return market_mod.PriceHistory(
        region=seen_region,
        series=series,
        start=datetime.fromtimestamp(lo, UTC),
        end=datetime.fromtimestamp(hi, UTC),
        rejected_rows=rejected,
    )


def rejected_text(rejected: Mapping[str, int]) -> str:
    """``"3 price rows: 1 not a number, 2 zero or negative"`` for the counts by reason."""
    n = sum(rejected.values())
    parts = ", ".join(f"{v} {k}" for k, v in sorted(rejected.items()))
    return f"{n} price row{'s' if n != 1 else ''}: {parts}"


def decision_grid(start: datetime, end: datetime, interval: timedelta) -> I64:
    """Epoch seconds ``start, start+interval, ...`` up to ``end`` (the last point
    is ``end`` itself, so the final interval may be shorter). At least 2 points."""
    step = int(interval.total_seconds())
    if step <= 0:
        raise ValueError("decision interval must be positive")
    a, b = int(start.timestamp()), int(end.timestamp())
    if b <= a:
        raise ValueError(f"empty window: {start} .. {end}")
    pts = list(range(a, b, step))
    pts.append(b)
    return np.asarray(pts, dtype=np.int64)


@dataclass(frozen=True)
class PriceCurve:
    """Cumulative cost of one instance of a pool: ``cum[i]`` USD from ``times[0]``
    to ``times[i]``; between changes it grows at ``prices[i]`` USD/h."""

    times: I64
    prices: F64
    cum: F64

    @classmethod
    def of(cls, s: market_mod.PoolSeries) -> PriceCurve:
        dt_h = np.diff(s.times).astype(np.float64) / 3600.0
        cum = np.concatenate(([0.0], np.cumsum(s.prices[:-1] * dt_h)))
        return cls(times=s.times, prices=s.prices, cum=cum)

    def at(self, t: I64 | int) -> F64:
        """Cumulative cost at epoch second(s) ``t``; 0 before the first price."""
        ta = np.atleast_1d(np.asarray(t, dtype=np.int64))
        i = np.searchsorted(self.times, ta, side="right") - 1
        ok = i >= 0
        j = np.where(ok, i, 0)
        val = self.cum[j] + self.prices[j] * (ta - self.times[j]).astype(np.float64) / 3600.0
        return np.where(ok, val, 0.0)

    def cost(self, a: int, b: int) -> float:
        """USD one instance pays from second ``a`` to second ``b`` (``a <= b``)."""
        v = self.at(np.asarray([a, b], dtype=np.int64))
        return float(v[1] - v[0])

    def price_at(self, t: int) -> float | None:
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        return float(self.prices[i]) if i >= 0 else None


@dataclass(frozen=True)
class Universe:
    """One policy's candidate pools on the decision grid.

    ``grid`` has K+1 epoch-second points (K decisions; the last point ends the
    replay). ``spot`` lists the spot pools the policy may use that have prices;
    ``interval_cost[i, k]`` is what one instance of ``spot[i]`` pays over
    interval ``k`` (USD). ``on_demand`` lists every on-demand pool a strategy
    may launch (:func:`spotfleet_engine.candidates.on_demand_pools`: the
    catalog's offerings or, failing those, the zones with spot prices in the
    history, restricted to the policy's zones).
    ``weight``/``od_price`` are per type (units per instance, USD/h).
    """

    region: str
    grid: I64
    spot: tuple[model.Pool, ...]
    curves: tuple[PriceCurve, ...]
    interval_cost: F64
    on_demand: tuple[model.Pool, ...]
    weight: Mapping[str, float]
    od_price: Mapping[str, float]
    points: tuple[tuple[market_mod.PricePoint, ...], ...]
    lookback_s: int

    @property
    def decisions(self) -> int:
        return len(self.grid) - 1

    def time(self, k: int) -> datetime:
        return datetime.fromtimestamp(int(self.grid[k]), UTC)

    def ref_unit_od_price(self) -> float:
        """Cheapest on-demand USD per unit-hour among the candidate types."""
        return min(self.od_price[t] / w for t, w in self.weight.items())

    def snapshot(
        self,
        k: int,
        advisor: Mapping[str, market_mod.AdvisorEntry],
        unavailable: frozenset[model.Pool],
    ) -> market_mod.MarketSnapshot:
        """The market at decision ``k``: per spot pool the price changes in
        ``(now - lookback, now]`` plus the one in force at the window start;
        nothing after ``now``."""
        now = int(self.grid[k])
        hist: dict[tuple[str, str], tuple[market_mod.PricePoint, ...]] = {}
        for pool, curve, pts in zip(self.spot, self.curves, self.points, strict=True):
            hi = int(np.searchsorted(curve.times, now, side="right"))
            if hi == 0:
                continue
            lo = max(int(np.searchsorted(curve.times, now - self.lookback_s, side="right")) - 1, 0)
            hist[(pool.instance_type, pool.zone)] = pts[lo:hi]
        return market_mod.MarketSnapshot(
            region=self.region,
            observed_at=datetime.fromtimestamp(now, UTC),
            spot_history=hist,
            advisor=advisor,
            unavailable=unavailable,
        )


def build_universe(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    history: market_mod.PriceHistory,
    grid: I64,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> Universe:
    """The candidate pools of ``policy`` in ``history`` and their costs on ``grid``.

    Raises ValueError when no pool matches (nothing to replay).
    """
    types = cand_mod.eligible_types(policy, catalog)
    spot: list[model.Pool] = []
    curves: list[PriceCurve] = []
    spot_zones: dict[str, set[str]] = {}
    for (t, z), s in sorted(history.series.items()):
        if t not in types or not cand_mod.zone_allowed(policy.zones, z) or len(s.times) == 0:
            continue
        if not bool(np.all(np.isfinite(s.prices) & (s.prices > 0.0))):
            raise ValueError(
                f"spot prices of {t} in {z} include values that are not positive and finite "
                "(history_from_rows drops such rows)"
            )
        spot.append(model.Pool(t, z, model.Market.SPOT))
        curves.append(PriceCurve.of(s))
        spot_zones.setdefault(t, set()).add(z)
    if not spot and not types:
        raise ValueError("no instance type in the catalog matches the policy")
    od = cand_mod.on_demand_pools(policy, catalog, types, spot_zones)
    if not spot and not od:
        raise ValueError("no pool matches the policy (types x zones)")
    n = len(spot)
    cost = np.zeros((n, len(grid) - 1), dtype=np.float64)
    for i, c in enumerate(curves):
        cost[i] = np.diff(c.at(grid))
    points = tuple(
        tuple(
            market_mod.PricePoint(datetime.fromtimestamp(int(a), UTC), float(p))
            for a, p in zip(c.times.tolist(), c.prices.tolist(), strict=True)
        )
        for c in curves
    )
    used = {p.instance_type for p in spot} | {p.instance_type for p in od}
    return Universe(
        region=history.region,
        grid=grid,
        spot=tuple(spot),
        curves=tuple(curves),
        interval_cost=cost,
        on_demand=tuple(od),
        weight={t: w for t, w in types.items() if t in used},
        od_price={t: float(catalog.on_demand_usd_per_hour[t]) for t in types if t in used},
        points=points,
        lookback_s=int(lookback.total_seconds()),
    )
