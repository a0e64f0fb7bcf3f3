"""The simulated reclaim stream: seeded, and the same for every strategy.

Common random numbers: the events of a pool are drawn from a generator seeded
with ``(seed, crc32(pool key), stream)``, so they do not depend on which
strategy runs, on which other pools exist, or on the order of anything. Each
strategy then meets exactly the same reclaims in the pools it holds.

Three sources, per spot pool (type x zone):

1. **Advisor hazard.** The Spot Instance Advisor band of the type in the
   region (the snapshot in force at each hour) gives a monthly share ``f`` of
   instances interrupted (:data:`BAND_MONTHLY_RATE`, the band midpoints:
   <5% -> 2.5%, 5-10% -> 7.5%, 10-15% -> 12.5%, 15-20% -> 17.5%, >20% -> 25%;
   unlisted types use the middle band). With a constant hazard the per-instance
   hourly hazard is ``h = -ln(1 - f) / 730``. A reclaim takes a share ``s`` of
   the pool's instances (``s ~ U(share_min, share_max)``), so reclaim *events*
   arrive as a Poisson process of rate ``h x hazard_scale / E[s]`` per hour:
   each instance is then interrupted at the advisor's rate on average.
   Hourly hazard per band at the defaults (events per pool-hour):
   see :func:`band_event_rate`.
2. **Price spikes.** Assumption: a sharp rise of the spot price means the pool
   is running short of spare capacity, which is when EC2 reclaims. A spike is
   a price change to at least ``(1 + spike_threshold)`` x the lowest price in
   force during the previous ``spike_window_hours``; only the first change of
   an episode counts (the episode ends when the price falls back below the
   threshold). Each spike causes a reclaim at that second with probability
   ``spike_reclaim_probability`` (0 switches this source off).
3. **Real availability traces** (:mod:`.traces`). A pool with a bundled trace
   takes its reclaims from it instead of (1) and (2): every outage starts with
   a reclaim and the pool has no capacity for the outage's real duration.

After a hazard or spike reclaim the pool has no spot capacity for
``drought_hours`` (EC2 reclaims because the pool ran dry, so relaunching into it
fails): launches into it fail until then. A reclaim takes
``floor(s x n + u)`` of the ``n`` instances a strategy holds there (``u`` is
drawn with the event: stochastic rounding, so the expected loss is ``s x n``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from spotfleet_engine import market as market_mod
from spotfleet_engine import model
from spotfleet_engine.backtest import prices as prices_mod
from spotfleet_engine.backtest import traces as traces_mod

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Monthly share of instances interrupted assumed per advisor band (midpoints).
BAND_MONTHLY_RATE: tuple[float, ...] = (0.025, 0.075, 0.125, 0.175, 0.25)
UNKNOWN_BAND = 2
HOURS_PER_MONTH = 730.0

_HAZARD, _SPIKE, _TRACE = 1, 2, 3


@dataclass(frozen=True)
class InterruptionConfig:
    """Knobs of the reclaim simulation (defaults are the published ones)."""

    seed: int = 0
    hazard_scale: float = 1.0
    share_min: float = 0.25
    share_max: float = 1.0
    drought_hours: float = 2.0
    spike_threshold: float = 0.10
    spike_window_hours: float = 24.0
    spike_reclaim_probability: float = 0.5
    use_traces: bool = True

    def problems(self) -> list[str]:
        out: list[str] = []
        if not 0 < self.share_min <= self.share_max <= 1:
            out.append("need 0 < share_min <= share_max <= 1")
        if self.hazard_scale < 0 or self.drought_hours < 0:
            out.append("hazard_scale and drought_hours must be >= 0")
        if not 0 <= self.spike_reclaim_probability <= 1:
            out.append("spike_reclaim_probability must be in [0, 1]")
        return out


def band_event_rate(band: int, config: InterruptionConfig) -> float:
    """Reclaim events per pool-hour for an advisor band (see module doc)."""
    f = BAND_MONTHLY_RATE[min(max(band, 0), len(BAND_MONTHLY_RATE) - 1)]
    per_instance = -math.log(1.0 - f) / HOURS_PER_MONTH
    mean_share = 0.5 * (config.share_min + config.share_max)
    return per_instance * config.hazard_scale / mean_share


@dataclass(frozen=True)
class Reclaim:
    """A reclaim at epoch second ``at`` in ``pool`` (index into the universe's
    spot pools) taking ``floor(share x n + rounding)`` of ``n`` instances."""

    at: int
    pool: int
    share: float
    rounding: float
    source: str  # "hazard" | "spike" | "trace"

    def lost(self, n: int) -> int:
        return min(n, math.floor(self.share * n + self.rounding))


@dataclass(frozen=True)
class EventStream:
    """Every reclaim of a replay (ascending by time) and the pools' droughts.

    ``by_interval[k]`` lists the reclaims in ``[grid[k], grid[k+1])``;
    ``unavailable[k]`` the spot pools without capacity at decision ``k``.
    """

    reclaims: tuple[Reclaim, ...]
    by_interval: tuple[tuple[Reclaim, ...], ...]
    unavailable: tuple[frozenset[model.Pool], ...]
    droughts: Mapping[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    def counts_by_source(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.reclaims:
            out[r.source] = out.get(r.source, 0) + 1
        return out


def _rng(seed: int, pool: model.Pool, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(pool.key().encode()), stream])


def spike_times(curve: prices_mod.PriceCurve, threshold: float, window_s: int) -> I64:
    """Epoch seconds at which a spike episode starts (see module doc)."""
    t, p = curve.times, curve.prices
    out: list[int] = []
    inside = False
    for i in range(1, len(t)):
        lo = max(int(np.searchsorted(t, t[i] - window_s, side="right")) - 1, 0)
        base = float(p[lo:i].min())
        spiking = p[i] >= (1.0 + threshold) * base
        if spiking and not inside:
            out.append(int(t[i]))
        inside = bool(spiking) or (inside and p[i] >= (1.0 + threshold) * base)
    return np.asarray(out, dtype=np.int64)


def _draw(rng: np.random.Generator, n: int, config: InterruptionConfig) -> tuple[F64, F64]:
    share = rng.uniform(config.share_min, config.share_max, size=n)
    rounding = rng.uniform(0.0, 1.0, size=n)
    return share, rounding


def simulate(
    universe: prices_mod.Universe,
    advisor_at: Callable[[int], Mapping[str, market_mod.AdvisorEntry]],
    config: InterruptionConfig = InterruptionConfig(),
    traces: Sequence[traces_mod.AvailabilityTrace] = (),
) -> EventStream:
    """The reclaim stream of every spot pool of ``universe`` over its grid.

    ``advisor_at(k)`` is the advisor snapshot in force at decision ``k``.
    Uses every price of the history (the simulated world knows its own
    future; strategies never see this stream before it happens).
    """
    bad = config.problems()
    if bad:
        raise ValueError("; ".join(bad))
    grid = universe.grid
    start, end = int(grid[0]), int(grid[-1])
    dt_h = np.diff(grid).astype(np.float64) / 3600.0
    k_count = len(grid) - 1
    by_trace = {(tr.instance_type, tr.zone): tr for tr in traces} if config.use_traces else {}
    rates_by_band = [band_event_rate(b, config) for b in range(len(BAND_MONTHLY_RATE))]
    bands_at: list[Mapping[str, market_mod.AdvisorEntry]] = [advisor_at(k) for k in range(k_count)]
    drought_s = int(config.drought_hours * 3600)
    window_s = int(config.spike_window_hours * 3600)
    reclaims: list[Reclaim] = []
    droughts: dict[int, list[tuple[int, int]]] = {}
    for i, pool in enumerate(universe.spot):
        tr = by_trace.get((pool.instance_type, pool.zone))
        if tr is not None:
            rng = _rng(config.seed, pool, _TRACE)
            span = []
            base = start
            while base < end and tr.duration_s > 0:
                for a, b in tr.outages:
                    if base + a >= end:
                        break
                    span.append((base + a, min(base + b, end)))
                base += tr.duration_s
            share, rnd = _draw(rng, len(span), config)
            for j, (a, b) in enumerate(span):
                reclaims.append(Reclaim(a, i, float(share[j]), float(rnd[j]), "trace"))
                droughts.setdefault(i, []).append((a, b))
            continue
        # advisor hazard: Poisson counts per interval, uniform times inside it
        rng = _rng(config.seed, pool, _HAZARD)
        lam = np.empty(k_count, dtype=np.float64)
        for k in range(k_count):
            entry = bands_at[k].get(pool.instance_type)
            lam[k] = rates_by_band[entry.band if entry is not None else UNKNOWN_BAND] * dt_h[k]
        counts = rng.poisson(lam)
        total = int(counts.sum())
        u = rng.uniform(0.0, 1.0, size=total)
        share, rnd = _draw(rng, total, config)
        ks = np.repeat(np.arange(k_count), counts)
        at = grid[ks] + np.floor(u * (grid[ks + 1] - grid[ks])).astype(np.int64)
        for j in range(total):
            a = int(at[j])
            reclaims.append(Reclaim(a, i, float(share[j]), float(rnd[j]), "hazard"))
            droughts.setdefault(i, []).append((a, a + drought_s))
        # price spikes (draws made for every spike so the stream is stable across q)
        spikes = spike_times(universe.curves[i], config.spike_threshold, window_s)
        rng = _rng(config.seed, pool, _SPIKE)
        q = rng.uniform(0.0, 1.0, size=len(spikes))
        share, rnd = _draw(rng, len(spikes), config)
        for j, a in enumerate(spikes.tolist()):
            if start <= a < end and q[j] < config.spike_reclaim_probability:
                reclaims.append(Reclaim(a, i, float(share[j]), float(rnd[j]), "spike"))
                droughts.setdefault(i, []).append((a, a + drought_s))
    reclaims.sort(key=lambda r: (r.at, r.pool))
    buckets: list[list[Reclaim]] = [[] for _ in range(k_count)]
    for r in reclaims:
        k = int(np.searchsorted(grid, r.at, side="right")) - 1
        if 0 <= k < k_count:
            buckets[k].append(r)
    unavailable: list[set[model.Pool]] = [set() for _ in range(k_count)]
    for i, spans in droughts.items():
        for a, b in spans:
            # decisions k with a < grid[k] < b (a reclaim at a decision time
            # happens just after that decision)
            k0 = int(np.searchsorted(grid[:-1], a, side="right"))
            k1 = int(np.searchsorted(grid[:-1], b, side="left"))
            for k in range(k0, k1):
                unavailable[k].add(universe.spot[i])
    return EventStream(
        reclaims=tuple(r for r in reclaims if start <= r.at < end),
        by_interval=tuple(tuple(b) for b in buckets),
        unavailable=tuple(frozenset(s) for s in unavailable),
        droughts={i: tuple(sorted(v)) for i, v in droughts.items()},
    )
