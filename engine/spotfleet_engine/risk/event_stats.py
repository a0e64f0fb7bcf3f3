"""Lookups and window statistics over flattened price events
(:class:`~spotfleet_engine.risk.features.PriceEvents`), all vectorised numpy.

- :func:`price_at` / :func:`prices_at_lags`: the price in force at ``t`` (and at
  ``t - lag``) for many (pool, t) queries with one search;
- :func:`stats_of`: per-event cumulative sums and sparse range-max tables, so
  every trailing-window statistic is O(1) per query (:func:`window_sum`,
  :func:`range_max`).

Nothing here looks past the event a query lands on: a statistic at ``t`` reads
events at or before ``t`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # features builds rows from these statistics
    from spotfleet_engine.risk.features import PriceEvents

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def price_at(ev: PriceEvents, pool: I64, t: F64, key: F64 | None = None) -> tuple[F64, I64]:
    """Price in force at ``t`` for each (pool, t) and the index of that event (-1 if none)."""
    # Events of pool i live in [offsets[i], offsets[i+1]); search each pool's slice
    # at once by offsetting times with a per-pool stride larger than any span.
    if key is None:
        key = search_keys(ev)
    stride = _stride(ev)
    q = pool.astype(np.float64) * stride + (t - _t0(ev))
    idx = np.searchsorted(key, q, side="right") - 1
    start = ev.offsets[pool]
    ok = idx >= start
    idx = np.where(ok, idx, -1)
    price = np.where(ok, ev.prices[np.maximum(idx, 0)], np.nan)
    return price, idx


def prices_at_lags(
    ev: PriceEvents, pool: I64, t: F64, key: F64, lags: Sequence[int]
) -> dict[int, tuple[F64, I64]]:
    """:func:`price_at` at ``t - lag`` for every lag, with one search over all of them."""
    m = pool.size
    pools = np.tile(pool, len(lags))
    ts = np.concatenate([t - lag if lag else t for lag in lags]) if lags else t[:0]
    price, idx = price_at(ev, pools, ts, key)
    return {
        lag: (price[k * m : (k + 1) * m], idx[k * m : (k + 1) * m]) for k, lag in enumerate(lags)
    }


def _t0(ev: PriceEvents) -> float:
    return float(ev.hours.min()) - 1e4 if ev.hours.size else 0.0


def _stride(ev: PriceEvents) -> float:
    if not ev.hours.size:
        return 1.0
    return float(ev.hours.max() - _t0(ev)) + 1e5


def search_keys(ev: PriceEvents) -> F64:
    return ev.pool_of_event().astype(np.float64) * _stride(ev) + (ev.hours - _t0(ev))


@dataclass(frozen=True)
class EventStats:
    """Per-event cumulative sums used for O(1) window statistics."""

    logchg: F64  # log change at each event vs the previous one of its pool (0 for the first)
    cum_sq: F64
    cum_chg: F64
    cum_rise: F64
    cum_rise_log: F64
    last_change_idx: I64  # index of the latest event <= i with a non-zero change (-1 none)
    last_rise_idx: I64
    last_fall_idx: I64
    rise_table: list[F64]  # sparse range-max table of per-event log rises (falls count 0)
    price_table: list[F64]  # sparse range-max table of the event prices
    rise_streak: F64  # consecutive rises among the changes ending at event i


def range_max_table(values: F64) -> list[F64]:
    """Sparse table: ``table[k][i] = max(values[i : i + 2**k])``."""
    table = [values]
    k = 1
    while (1 << k) <= values.size:
        prev = table[-1]
        half = 1 << (k - 1)
        table.append(np.maximum(prev[: prev.size - half], prev[half:]))
        k += 1
    return table


def range_max(table: list[F64], lo: I64, hi: I64) -> F64:
    """max(values[lo:hi]) for each pair; NaN where hi <= lo."""
    length = hi - lo
    ok = length > 0
    k = np.zeros(lo.size, dtype=np.int64)
    k[ok] = np.floor(np.log2(length[ok])).astype(np.int64)
    out = np.full(lo.size, np.nan)
    for level in np.unique(k[ok]):
        sel = ok & (k == level)
        arr = table[int(level)]
        out[sel] = np.maximum(arr[lo[sel]], arr[hi[sel] - (1 << int(level))])
    return out


def stats_of(ev: PriceEvents) -> EventStats:
    n = ev.hours.size
    logp = np.log(ev.prices)
    logchg = np.zeros(n)
    if n > 1:
        logchg[1:] = logp[1:] - logp[:-1]
    logchg[ev.offsets[:-1][np.diff(ev.offsets) > 0]] = 0.0
    changed = np.abs(logchg) > 1e-12
    rise = logchg > 1e-12
    fall = logchg < -1e-12
    idx = np.arange(n, dtype=np.int64)
    pool_start = np.repeat(ev.offsets[:-1], np.diff(ev.offsets))

    def last_true(mask: npt.NDArray[np.bool_]) -> I64:
        marked = np.where(mask, idx, -1)
        out = np.maximum.accumulate(marked) if n else marked
        return np.where(out >= pool_start, out, -1)

    # streak: among changed events, count consecutive rises (a fall resets to 0)
    chg_idx = np.flatnonzero(changed)
    streak_at_chg = np.zeros(chg_idx.size)
    if chg_idx.size:
        is_rise = rise[chg_idx]
        new_pool = np.ones(chg_idx.size, dtype=bool)
        new_pool[1:] = pool_start[chg_idx[1:]] != pool_start[chg_idx[:-1]]
        reset = ~is_rise | new_pool
        run_id = np.cumsum(reset)
        c = np.cumsum(is_rise.astype(np.float64))
        base = np.zeros(int(run_id.max()) + 1)
        first_of_run = np.flatnonzero(reset)
        base[run_id[first_of_run]] = c[first_of_run] - is_rise[first_of_run]
        streak_at_chg = c - base[run_id]
    last_chg = last_true(changed)
    streak = np.zeros(n)
    pos = np.searchsorted(chg_idx, last_chg)
    has = last_chg >= 0
    streak[has] = streak_at_chg[pos[has]]

    def pool_cumsums(*vs: F64) -> list[F64]:
        # cumulative sums restarted at every pool, computed per pool (a padded
        # cumsum along each pool's row) so no pool's sums depend, even in
        # rounding, on another pool; all quantities in one padded array
        # (pad is position-major: row j holds every pool's j-th event, so the
        # cumsum runs down the positions, still one sequential sum per pool)
        lens = np.diff(ev.offsets)
        width = int(lens.max()) if lens.size else 0
        n_cols = len(vs) * lens.size
        pad = np.zeros((width, n_cols))
        flat = (idx - pool_start) * n_cols + np.repeat(np.arange(lens.size), lens)
        for k, v in enumerate(vs):
            pad.reshape(-1)[flat + k * lens.size] = v
        np.cumsum(pad, axis=0, out=pad)
        return [pad.reshape(-1)[flat + k * lens.size] for k in range(len(vs))]

    def pool_counts(mask: npt.NDArray[np.bool_]) -> F64:
        # running counts restarted at every pool: integer-valued, so a global
        # cumsum minus the count before the pool's start is exact (equal to pool_cumsums)
        total = np.cumsum(mask, dtype=np.int64)
        before = np.where(pool_start > 0, total[np.maximum(pool_start - 1, 0)], 0)
        out: F64 = (total - before).astype(np.float64)
        return out

    cum_sq, cum_rise_log = pool_cumsums(logchg**2, np.where(rise, logchg, 0.0))
    cum_chg, cum_rise = pool_counts(changed), pool_counts(rise)
    return EventStats(
        rise_table=range_max_table(np.maximum(logchg, 0.0)),
        price_table=range_max_table(ev.prices),
        rise_streak=streak,
        logchg=logchg,
        cum_sq=cum_sq,
        cum_chg=cum_chg,
        cum_rise=cum_rise,
        cum_rise_log=cum_rise_log,
        last_change_idx=last_chg,
        last_rise_idx=last_true(rise),
        last_fall_idx=last_true(fall),
    )


def window_sum(cum: F64, idx_now: I64, idx_then: I64, pool_start: I64) -> F64:
    """Sum over events in (then, now] of the per-event quantity whose cumsum is ``cum``."""
    now_v = np.where(idx_now >= 0, cum[np.maximum(idx_now, 0)], 0.0)
    # cumsums restart at each pool; idx_then == -1 means the window starts
    # before the pool's first event, so nothing is subtracted.
    then_v = np.where(idx_then >= 0, cum[np.maximum(idx_then, 0)], 0.0)
    return np.where(idx_now >= 0, now_v - then_v, np.nan)
