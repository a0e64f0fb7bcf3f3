"""Price outlook: how much of a spot pool's recent price move is expected to last.

The USD test of a voluntary move (:func:`spotfleet_engine.hysteresis.settle`) prices
spot pools at their expected mean over the horizon, not at today's price, so a pool
that just got cheaper is not assumed to stay that cheap where the market's own
history says prices come back (issue 17: "price mean-reversion").

:func:`persistence` estimates one coefficient ``beta`` for a set of pools from their
last :data:`LOOKBACK_HOURS` of prices, sampled hourly: at each hour ``t`` with a
trailing window of :data:`WINDOW_HOURS` before it and the horizon after it (so
``t <= now - horizon``), ``x = p(t) - m(t)`` with ``m(t)`` the window's mean and
``y`` the mean price over ``[t, t + horizon)`` minus ``m(t)``; ``beta = sum(x y) /
sum(x x)`` (pooled least squares through 0), clipped to [0, 1]. 1 means a deviation
persists over the horizon (the price as it is now), 0 that it is gone at once. With
no sample or no price variation ``beta`` is 1: no evidence of reversion keeps today's
price. Measured on the bundled histories (72 h lookback, every 3 days): 2021 median
1.61, 2023 1.35 (momentum, clipped to 1: no change), 2015 0.41 (strong reversion).

:func:`expected_prices` gives, per candidate, ``m + beta (p - m)`` for a spot pool
with prices over the whole window before now, else its price (on-demand: its price).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from spotfleet_engine import candidates as cand_mod
from spotfleet_engine import market as market_mod

#: Hours of history the estimate uses: the operator's default market lookback, so the
#: operator and a replay with a longer history estimate alike.
LOOKBACK_HOURS = 72
#: Hours of the trailing mean a deviation is measured from.
WINDOW_HOURS = 24


def hourly(points: Sequence[market_mod.PricePoint], end: float, n: int) -> cand_mod.F64:
    """Prices in force at the ``n`` hourly instants ending at epoch second ``end``
    (oldest first; NaN before the first point)."""
    ts = np.fromiter((p.at.timestamp() for p in points), dtype=np.float64, count=len(points))
    ps = np.fromiter((p.price for p in points), dtype=np.float64, count=len(points))
    grid = end - 3600.0 * np.arange(n - 1, -1, -1, dtype=np.float64)
    i = np.searchsorted(ts, grid, side="right") - 1
    out: cand_mod.F64 = np.where(i >= 0, ps[np.maximum(i, 0)], np.nan)
    return out


def persistence(series: Sequence[cand_mod.F64], horizon_hours: float) -> float:
    """``beta`` (module doc) from hourly price series of ``LOOKBACK_HOURS + 1`` points
    each, the last one now; series with a NaN are skipped."""
    h, w = max(1, round(horizon_hours)), WINDOW_HOURS
    sxy = sxx = 0.0
    for s in series:
        if len(s) < w + h + 1 or bool(np.isnan(s).any()):
            continue
        csum = np.concatenate(([0.0], np.cumsum(s)))
        k = np.arange(w, len(s) - h, dtype=np.int64)  # t's index; the horizon fits before now
        m = (csum[k] - csum[k - w]) / w
        x = s[k] - m
        y = (csum[k + h] - csum[k]) / h - m
        sxy += float(x @ y)
        sxx += float(x @ x)
    if sxx <= 1e-18:
        return 1.0
    return min(1.0, max(0.0, sxy / sxx))


def expected_prices(
    c: cand_mod.Candidates, market: market_mod.MarketSnapshot, now: datetime, horizon_hours: float
) -> cand_mod.F64:
    """Per candidate of ``c``, USD per instance-hour expected on average over the
    horizon (module doc); on-demand pools and spot pools without a full window of
    history keep ``c.price``."""
    end = now.timestamp()
    n = LOOKBACK_HOURS + 1
    spot = [i for i in range(len(c.pools)) if not c.is_od[i]]
    series = [
        hourly(market.history(c.pools[i].instance_type, c.pools[i].zone), end, n) for i in spot
    ]
    beta = persistence(series, horizon_hours)
    out: cand_mod.F64 = c.price.copy()
    if beta >= 1.0:
        return out
    for i, s in zip(spot, series, strict=True):
        window = s[-WINDOW_HOURS - 1 : -1]
        if window.size == WINDOW_HOURS and not bool(np.isnan(window).any()):
            m = float(window.mean())
            out[i] = m + beta * (float(c.price[i]) - m)
    return out
