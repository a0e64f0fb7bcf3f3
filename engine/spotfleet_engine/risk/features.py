"""Features of a spot pool at a moment, computed from what was known at that moment.

Everything here is pure numpy over arrays. Price histories are held as one flat
array of change events per pool (:class:`PriceEvents`, times in hours since the
Unix epoch, prices in USD/h); a feature row for (pool, t) reads only events at
or before ``t``, so shuffling or deleting anything after ``t`` cannot change it
(``tests/unit/test_risk_features.py`` checks exactly that).

Training and serving use the same functions: :func:`feature_matrix` builds the
rows for many (pool, t) queries at once, for the hourly training grid and for a
live :class:`~spotfleet_engine.market.MarketSnapshot` alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spotfleet_engine import model
from spotfleet_engine.risk import event_stats

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: Trailing windows (hours) for price returns p(t)/p(t-L).
RETURN_LAGS: tuple[int, ...] = (1, 3, 6, 12, 24, 48, 72, 168)
#: Trailing windows (hours) for realised volatility and change counts.
VOL_WINDOWS: tuple[int, ...] = (6, 24, 72, 168)
#: Ages (hours) of the past days whose largest rise is a feature: for lag L, the
#: largest price in (t - L, t - L + 24 h] over the price at t - L (the spike label
#: the row at t - L got, as a log ratio; known by t).
DAY_RISE_LAGS: tuple[int, ...] = (24, 48, 72, 96, 120, 144, 168)
#: Length (hours) of those past days.
DAY_H = 24
#: Memory (hours) of the event-based features (time since, last change, streak):
#: events older than this count as absent, so a snapshot with this much history
#: gives exactly the training features. Also the "time since" value when none.
SINCE_CAP_H = 168.0

#: Leading letters of instance families, in a fixed order (the code is the index; unknown -> -1).
FAMILY_CLASSES: tuple[str, ...] = (
    "a", "c", "d", "dl", "f", "g", "h", "hpc", "i", "im", "inf", "is", "m", "mac",
    "p", "r", "t", "trn", "u", "vt", "x", "z",
)  # fmt: skip

_FAMILY_RE = re.compile(r"^([a-z]+?)(\d+)([a-z\-]*)$")

STATIC_NAMES: tuple[str, ...] = (
    "advisor_band",
    "advisor_savings_pct",
    "log_spot_over_ondemand",
    "zones_offered",
    "family_class",
    "generation",
    "log2_vcpus",
    "mem_per_vcpu",
    "arm64",
    "gpus",
    "burstable",
    "bare_metal",
    "amd",
    "local_disk",
    "network_opt",
)

DYNAMIC_NAMES: tuple[str, ...] = (
    *(f"ret_{lag}h" for lag in RETURN_LAGS),
    *(f"rvol_{w}h" for w in VOL_WINDOWS),
    *(f"changes_{w}h" for w in VOL_WINDOWS),
    *(f"rises_{w}h" for w in VOL_WINDOWS),
    *(f"rise_sum_{w}h" for w in VOL_WINDOWS),
    "max_rise_24h",
    "max_rise_168h",
    "rise_streak",
    "runup_since_fall",
    "hours_between_last_changes",
    "hours_since_change",
    "hours_since_rise",
    "hours_since_fall",
    "last_change",
    "below_max_168h",
    "above_min_168h",
    "hour_of_day",
    "day_of_week",
)

CROSS_NAMES: tuple[str, ...] = (
    "zones_priced",
    "rel_to_type_min",
    "rel_to_type_mean",
    "type_mean_ret_24h",
    "type_frac_rising_24h",
    "type_max_ret_24h",
    "zone_mean_rise_sum_24h",
    "family_zone_mean_ret_24h",
    "family_frac_rising_24h",
)

#: Largest rise within each past day (see :data:`DAY_RISE_LAGS`).
DAY_RISE_NAMES: tuple[str, ...] = tuple(f"day_rise_{lag}h" for lag in DAY_RISE_LAGS)

#: Every feature, in column order.
FEATURE_NAMES: tuple[str, ...] = (
    "log_price",
    *STATIC_NAMES,
    *DYNAMIC_NAMES,
    *CROSS_NAMES,
    *DAY_RISE_NAMES,
)


@dataclass(frozen=True)
class PriceEvents:
    """Spot price changes of many pools, flattened.

    Pool ``i`` owns events ``offsets[i]:offsets[i+1]`` of ``hours`` (ascending,
    hours since the Unix epoch) and ``prices`` (USD/h, > 0). ``types[i]`` and
    ``zones[i]`` name the pool.
    """

    types: tuple[str, ...]
    zones: tuple[str, ...]
    offsets: I64
    hours: F64
    prices: F64

    @property
    def n_pools(self) -> int:
        """Number of pools."""
        return len(self.types)

    def pool_of_event(self) -> I64:
        """Pool index of every event."""
        return np.repeat(np.arange(self.n_pools, dtype=np.int64), np.diff(self.offsets))


def events_from_series(
    series: Sequence[tuple[str, str, Sequence[float], Sequence[float]]],
) -> PriceEvents:
    """Build :class:`PriceEvents` from ``(type, zone, hours, prices)`` per pool.

    Each pool's points are sorted by time; points that repeat the previous price
    are kept (they carry no change and so add nothing to the change features).
    """
    types: list[str] = []
    zones: list[str] = []
    hs: list[F64] = []
    ps: list[F64] = []
    offsets = [0]
    for itype, zone, hours, prices in series:
        h = np.asarray(hours, dtype=np.float64)
        p = np.asarray(prices, dtype=np.float64)
        order = np.argsort(h, kind="stable")
        types.append(itype)
        zones.append(zone)
        hs.append(h[order])
        ps.append(p[order])
        offsets.append(offsets[-1] + len(h))
    return PriceEvents(
        types=tuple(types),
        zones=tuple(zones),
        offsets=np.asarray(offsets, dtype=np.int64),
        hours=np.concatenate(hs) if hs else np.zeros(0),
        prices=np.concatenate(ps) if ps else np.zeros(0),
    )


def _family_parts(family: str) -> tuple[str, int, str]:
    m = _FAMILY_RE.match(family)
    if not m:
        return family, -1, ""
    return m.group(1), int(m.group(2)), m.group(3)


def type_static_row(
    it: model.InstanceType | None,
    on_demand: float | None,
    zones_offered: int,
    advisor_band: int | None,
    advisor_savings: float | None,
) -> list[float]:
    """The static features of one type (all of :data:`STATIC_NAMES` but the price ratio,
    which needs the spot price; its slot holds log(on-demand price) here)."""
    nan = math.nan
    if it is None:
        cls_code, gen, suffix = -1.0, nan, ""
        vals = [nan] * 8
    else:
        cls, gen_i, suffix = _family_parts(it.family)
        cls_code = float(FAMILY_CLASSES.index(cls)) if cls in FAMILY_CLASSES else -1.0
        gen = float(gen_i) if gen_i >= 0 else nan
        vals = [
            math.log2(it.vcpus) if it.vcpus > 0 else nan,
            it.memory_gib / it.vcpus if it.vcpus > 0 else nan,
            1.0 if it.arch == "arm64" else 0.0,
            float(it.gpus),
            1.0 if it.burstable else 0.0,
            1.0 if it.bare_metal else 0.0,
            1.0 if "a" in suffix else 0.0,
            1.0 if "d" in suffix else 0.0,
        ]
    net = 1.0 if ("n" in suffix and it is not None) else 0.0
    return [
        float(advisor_band) if advisor_band is not None else nan,
        float(advisor_savings) if advisor_savings is not None else nan,
        math.log(on_demand) if on_demand and on_demand > 0 else nan,
        float(zones_offered) if zones_offered > 0 else nan,
        cls_code,
        gen,
        *vals,
        net,
    ]


def _group_stats(group: I64, values: F64, n_groups: int) -> tuple[F64, F64, F64, F64]:
    """Per-group count of finite values, their mean, min and max (NaN where empty)."""
    ok = np.isfinite(values)
    g = group[ok]
    v = values[ok]
    cnt = np.bincount(g, minlength=n_groups).astype(np.float64)
    s = np.bincount(g, weights=v, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan)
    mn = np.full(n_groups, np.inf)
    mx = np.full(n_groups, -np.inf)
    np.minimum.at(mn, g, v)
    np.maximum.at(mx, g, v)
    mn[cnt == 0] = np.nan
    mx[cnt == 0] = np.nan
    return cnt, mean, mn, mx


def _groups(time_group: I64, key: I64) -> I64:
    """Dense group numbers for the pairs (time_group, key)."""
    k = time_group.astype(np.int64) * (int(key.max()) + 1 if key.size else 1) + key
    inverse: I64 = np.unique(k, return_inverse=True)[1].astype(np.int64).reshape(-1)
    return inverse


@dataclass(frozen=True)
class StaticTable:
    """Static features per pool (rows follow the pools of a :class:`PriceEvents`).

    ``values[i]`` is :func:`type_static_row` of pool i's type; ``type_index[i]``
    numbers the distinct instance types (for cross-zone features).
    """

    values: F64
    type_index: I64


def static_table(
    ev: PriceEvents,
    types: Mapping[str, model.InstanceType],
    on_demand: Mapping[str, float],
    zones_offered: Mapping[str, int],
    advisor: Mapping[str, tuple[int, float]],
) -> StaticTable:
    """Static features for every pool of ``ev``; ``advisor[type] = (band 0..4, savings %)``."""
    rows: dict[str, list[float]] = {}
    tindex: dict[str, int] = {}
    for name in ev.types:
        if name not in rows:
            adv = advisor.get(name)
            rows[name] = type_static_row(
                types.get(name),
                on_demand.get(name),
                zones_offered.get(name, 0),
                adv[0] if adv else None,
                adv[1] if adv else None,
            )
            tindex[name] = len(tindex)
    values = np.asarray([rows[n] for n in ev.types], dtype=np.float64).reshape(
        len(ev.types), len(STATIC_NAMES)
    )
    return StaticTable(values, np.asarray([tindex[n] for n in ev.types], dtype=np.int64))


def feature_matrix(
    ev: PriceEvents,
    static: StaticTable,
    pool: I64,
    t: F64,
    time_group: I64 | None = None,
) -> F32:
    """Feature rows (float32, columns :data:`FEATURE_NAMES`) for queries (pool[k], t[k]).

    Reads only events at or before ``t[k]``. Cross-zone features compare pool
    ``pool[k]`` with the other pools of its type *queried at the same moment*:
    ``time_group[k]`` numbers the distinct query moments (all zero when omitted,
    i.e. every query is at one moment, as when serving a market snapshot). To
    compare against every zone, query every zone of the type at that moment.
    """
    m = pool.size
    pool = pool.astype(np.int64)
    t = t.astype(np.float64)
    if time_group is None:
        time_group = np.zeros(m, dtype=np.int64)
    stats = event_stats.stats_of(ev)
    pool_start = ev.offsets[pool]
    key = event_stats.search_keys(ev)
    # price (and event index) in force at t - lag, for every lag any feature reads
    lags = sorted(
        {
            0,
            *RETURN_LAGS,
            *VOL_WINDOWS,
            int(SINCE_CAP_H),
            *DAY_RISE_LAGS,
            *(lag - DAY_H for lag in DAY_RISE_LAGS),
        }
    )
    at_lag = event_stats.prices_at_lags(ev, pool, t, key, lags)
    p0, i0 = at_lag[0]
    logp0 = np.log(p0)
    cols: dict[str, F64] = {"log_price": logp0}

    st = static.values[pool]
    for j, name in enumerate(STATIC_NAMES):
        cols[name] = st[:, j]
    # slot holds log(on-demand); turn it into log(spot / on-demand)
    cols["log_spot_over_ondemand"] = logp0 - st[:, STATIC_NAMES.index("log_spot_over_ondemand")]

    lag_prices: list[F64] = [p0]
    for lag in RETURN_LAGS:
        pl, _ = at_lag[lag]
        lag_prices.append(pl)
        cols[f"ret_{lag}h"] = logp0 - np.log(pl)
    for w in VOL_WINDOWS:
        _, iw = at_lag[w]
        cols[f"rvol_{w}h"] = np.sqrt(
            np.maximum(event_stats.window_sum(stats.cum_sq, i0, iw, pool_start), 0)
        )
        cols[f"changes_{w}h"] = event_stats.window_sum(stats.cum_chg, i0, iw, pool_start)
        cols[f"rises_{w}h"] = event_stats.window_sum(stats.cum_rise, i0, iw, pool_start)
        cols[f"rise_sum_{w}h"] = event_stats.window_sum(stats.cum_rise_log, i0, iw, pool_start)
        if w in (24, 168):
            lo = np.where(iw >= 0, iw + 1, pool_start)
            mx = event_stats.range_max(stats.rise_table, lo, i0 + 1)
            cols[f"max_rise_{w}h"] = np.where(i0 >= 0, np.nan_to_num(mx, nan=0.0), np.nan)

    safe_i0 = np.maximum(i0, 0)

    # events after the one in force at t - SINCE_CAP_H are "recent"
    _, i_mem = at_lag[int(SINCE_CAP_H)]

    def recent(last_idx: I64) -> I64:
        li = last_idx[safe_i0]
        return np.where((i0 >= 0) & (li >= 0) & (li > i_mem), li, -1)

    def since(last_idx: I64) -> F64:
        li = recent(last_idx)
        h = np.where(li >= 0, t - ev.hours[np.maximum(li, 0)], SINCE_CAP_H)
        return np.where(i0 >= 0, np.minimum(h, SINCE_CAP_H), np.nan)

    cols["hours_since_change"] = since(stats.last_change_idx)
    cols["hours_since_rise"] = since(stats.last_rise_idx)
    cols["hours_since_fall"] = since(stats.last_fall_idx)
    lci = recent(stats.last_change_idx)
    cols["last_change"] = np.where(
        (i0 >= 0) & (lci >= 0), stats.logchg[np.maximum(lci, 0)], np.where(i0 >= 0, 0.0, np.nan)
    )
    # consecutive rises ending at the last recent change, counting recent changes only
    cols["rise_streak"] = np.where(
        i0 >= 0, np.minimum(stats.rise_streak[safe_i0], cols[f"changes_{VOL_WINDOWS[-1]}h"]), np.nan
    )
    lfi = recent(stats.last_fall_idx)
    cols["runup_since_fall"] = np.where(
        i0 < 0, np.nan, np.where(lfi >= 0, logp0 - np.log(ev.prices[np.maximum(lfi, 0)]), np.nan)
    )
    prev_chg = np.where(lci > pool_start, stats.last_change_idx[np.maximum(lci - 1, 0)], -1)
    prev_chg = np.where((prev_chg >= pool_start) & (prev_chg > i_mem), prev_chg, -1)
    gap = ev.hours[np.maximum(lci, 0)] - ev.hours[np.maximum(prev_chg, 0)]
    cols["hours_between_last_changes"] = np.where(
        (i0 >= 0) & (lci >= 0) & (prev_chg >= 0), np.minimum(gap, SINCE_CAP_H), np.nan
    )
    lp = np.vstack(lag_prices)
    with np.errstate(invalid="ignore", all="ignore"):
        cols["below_max_168h"] = logp0 - np.log(np.nanmax(lp, axis=0))
        cols["above_min_168h"] = logp0 - np.log(np.nanmin(lp, axis=0))
    # largest rise within each past day (t - L, t - L + 24 h] over the price at t - L;
    # 0 when the price did not change that day (ends at or before t: no look-ahead)
    for lag in DAY_RISE_LAGS:
        p_start, i_start = at_lag[lag]
        _, i_end = at_lag[lag - DAY_H]
        top = event_stats.range_max(stats.price_table, i_start + 1, i_end + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            day_rise = np.maximum(np.nan_to_num(np.log(top) - np.log(p_start), nan=0.0), 0.0)
        cols[f"day_rise_{lag}h"] = np.where(i_start >= 0, day_rise, np.nan)
    cols["hour_of_day"] = np.floor(np.mod(t, 24.0))
    # 1970-01-01 was a Thursday (Monday = 0)
    cols["day_of_week"] = np.floor(np.mod(t / 24.0 + 3.0, 7.0))

    # cross-zone: the other pools of the same type at the same query moment
    n_types = int(static.type_index.max()) + 1 if static.type_index.size else 1
    g = time_group.astype(np.int64) * n_types + static.type_index[pool]
    _, gi = np.unique(g, return_inverse=True)
    ng = int(gi.max()) + 1 if gi.size else 0
    cnt, mean_lp, min_lp, _ = _group_stats(gi, logp0, ng)
    cols["zones_priced"] = cnt[gi]
    cols["rel_to_type_min"] = logp0 - min_lp[gi]
    cols["rel_to_type_mean"] = logp0 - mean_lp[gi]
    r24 = cols["ret_24h"]
    _, mean_r, _, max_r = _group_stats(gi, r24, ng)
    cols["type_mean_ret_24h"] = mean_r[gi]
    cols["type_max_ret_24h"] = max_r[gi]
    rising = np.where(np.isfinite(r24), (r24 > 1e-12).astype(np.float64), np.nan)
    _, frac, _, _ = _group_stats(gi, rising, ng)
    cols["type_frac_rising_24h"] = frac[gi]

    zone_code = {z: i for i, z in enumerate(sorted(set(ev.zones)))}
    zone_of_pool = np.fromiter(map(zone_code.__getitem__, ev.zones), np.int64, len(ev.zones))
    fam_of_type = {n: n.split(".", 1)[0] for n in set(ev.types)}
    fams = list(map(fam_of_type.__getitem__, ev.types))
    fam_code = {f: i for i, f in enumerate(sorted(set(fams)))}
    fam_of_pool = np.fromiter(map(fam_code.__getitem__, fams), np.int64, len(fams))
    zg = _groups(time_group, zone_of_pool[pool])
    cols["zone_mean_rise_sum_24h"] = _group_stats(
        zg, cols["rise_sum_24h"], int(zg.max()) + 1 if zg.size else 0
    )[1][zg]
    fzg = _groups(time_group, fam_of_pool[pool] * len(zone_code) + zone_of_pool[pool])
    cols["family_zone_mean_ret_24h"] = _group_stats(
        fzg, r24, int(fzg.max()) + 1 if fzg.size else 0
    )[1][fzg]
    fg = _groups(time_group, fam_of_pool[pool])
    cols["family_frac_rising_24h"] = _group_stats(fg, rising, int(fg.max()) + 1 if fg.size else 0)[
        1
    ][fg]

    out = np.empty((m, len(FEATURE_NAMES)), dtype=np.float32)
    for j, name in enumerate(FEATURE_NAMES):
        out[:, j] = cols[name]
    return out
