"""Labels from real data: price spikes in price history, preemptions in availability traces.

Pure numpy. A label looks at the future on purpose (that is what it predicts);
features never do (see :mod:`spotfleet_engine.risk.features`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spotfleet_engine.risk import event_stats, features

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Default horizon (hours) and relative rise that counts as a spike.
DEFAULT_HORIZON_H = 24.0
DEFAULT_THRESHOLD = 0.05


def spike_labels(
    ev: features.PriceEvents,
    pool: I64,
    t: F64,
    observed_until: float,
    horizon_h: float = DEFAULT_HORIZON_H,
    threshold: float = DEFAULT_THRESHOLD,
) -> F64:
    """1.0 when pool ``pool[k]``'s spot price rises to >= (1 + threshold) x its price
    at ``t[k]`` at some moment in (t, t + horizon], else 0.0; NaN when the label
    is unknown (no price at ``t``, or ``t + horizon`` after ``observed_until``,
    the last moment the history covers, in hours since the epoch)."""
    key = event_stats.search_keys(ev)
    p0, i0 = event_stats.price_at(ev, pool, t, key)
    _, i1 = event_stats.price_at(ev, pool, t + horizon_h, key)
    table = event_stats.range_max_table(ev.prices)
    # events strictly after t and at or before t + horizon: indices (i0, i1]
    mx = event_stats.range_max(table, i0 + 1, i1 + 1)
    rose = np.where(np.isfinite(mx), mx >= p0 * (1.0 + threshold) - 1e-12, False)
    out = rose.astype(np.float64)
    unknown = (i0 < 0) | (t + horizon_h > observed_until)
    out[unknown] = np.nan
    return out


@dataclass(frozen=True)
class HourlyGrid:
    """Query rows (pool, hour) on a whole-hour grid; ``group`` numbers the hours."""

    pool: I64
    t: F64
    group: I64


def hourly_grid(ev: features.PriceEvents, start_h: float, end_h: float) -> HourlyGrid:
    """Every pool at every whole hour in [start_h, end_h] at which it has a price."""
    hours = np.arange(np.ceil(start_h), np.floor(end_h) + 1.0, 1.0)
    first = np.full(ev.n_pools, np.inf)
    nonempty = np.diff(ev.offsets) > 0
    first[nonempty] = ev.hours[ev.offsets[:-1][nonempty]]
    pool = np.repeat(np.arange(ev.n_pools, dtype=np.int64), hours.size)
    t = np.tile(hours, ev.n_pools)
    group = np.tile(np.arange(hours.size, dtype=np.int64), ev.n_pools)
    keep = t >= first[pool]
    return HourlyGrid(pool[keep], t[keep], group[keep])


def preemption_labels(
    tick_s: F64, value: F64, horizon_s: float
) -> tuple[npt.NDArray[np.bool_], F64]:
    """Labels for one single-node SkyPilot trace, sampled at its ticks.

    ``value`` is the trace value per tick: 0 = a spot instance is held
    (available), 1 = preempted / unavailable (the reading of SkyPilot's own
    simulator; see docs/risk.md). Returns (rows, label): rows are the ticks at
    which the instance is held and the full horizon lies inside the trace; the
    label is 1.0 when any tick in (t, t + horizon] is preempted.
    """
    n = tick_s.size
    bad = (value > 0).astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(bad)])
    hi = np.searchsorted(tick_s, tick_s + horizon_s, side="right")
    cnt = cum[hi] - cum[np.arange(n) + 1]
    rows = (value == 0) & (tick_s + horizon_s <= tick_s[-1] if n else np.zeros(0, bool))
    return rows, (cnt > 0).astype(np.float64)


def drop_labels(drop_h: F64, t: F64, horizon_h: float) -> F64:
    """1.0 when a preemption time of ``drop_h`` (sorted, hours) lies in (t, t + horizon],
    else 0.0: the label of a preemption-trace row (see :mod:`.preemption`)."""
    lo = np.searchsorted(drop_h, t, side="right")
    hi = np.searchsorted(drop_h, np.asarray(t, dtype=np.float64) + horizon_h, side="right")
    return (hi > lo).astype(np.float64)
