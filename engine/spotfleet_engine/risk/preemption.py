"""Preemption traces (SkyPilot, Bamboo) as labelled rows, and the scores we can honestly give them.

Pure numpy: the CLI edge (``spotfleet_cli.commands.risk``) reads the bundled
CSV files and hands parsed rows to the builders here.

A :class:`Trace` is one spot pool (instance type x zone, or x region when the
zone is not recorded) observed for a while: a step function of how many spot
instances were held. A **preemption** is a moment the count drops
(:meth:`Trace.drops`): a single-node SkyPilot trace flipping from 0 (held) to 1
(preempted / unavailable), a Bamboo running-instance count going down, a Bamboo
cluster ``remove`` event. Rows are the grid moments ``t`` (every ``step_h``
hours from the trace start) at which something is held and the whole label
window ``(t, t + horizon]`` lies inside the trace; the label is 1.0 when a
preemption falls in that window (:func:`labels.drop_labels`).

The traces carry no absolute clock (SkyPilot: only a start date; Bamboo: not
even that for the cluster traces) and no prices, so:

* the "test split" is **per trace, by time**: rows whose label window ends by
  ``train_fraction`` of the trace's length are the earlier part (baselines are
  fitted there), rows starting at or after it are the later part (scored);
  rows straddling the boundary are dropped. The price-spike model never saw
  any trace.
* the XGBoost spike model sees only its static features (advisor band and
  savings, type facts); every price feature is missing (NaN). As served, the
  product gives pools without price history the advisor-band probability, so
  the "advisor band" row is also what the planner would get.
* the trailing signals (the analogue of trailing volatility) come from the
  trace's own past: preemptions in the last 1/6/24 h, hours since the last one,
  fraction of the last 24 h with nothing held, hours observed so far. They read
  only the trace at or before ``t`` (``tests/unit/test_risk_preemption.py``
  perturbs everything after ``t`` and checks they do not move).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine.risk import advisor, features, labels, metrics

if TYPE_CHECKING:
    from spotfleet_engine.risk import xgb

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Trailing windows (hours) of the preemption counts.
COUNT_WINDOWS: tuple[int, ...] = (1, 6, 24)
#: Cap (hours) of "hours since the last preemption" and "hours observed".
SINCE_CAP_H = 168.0
#: Window (hours) of the "nothing held" fraction.
DOWN_WINDOW_H = 24.0

#: Columns of :attr:`TraceRows.x`, in order.
TRACE_FEATURES: tuple[str, ...] = (
    "advisor_band",
    "advisor_savings_pct",
    *(f"preemptions_{w}h" for w in COUNT_WINDOWS),
    "hours_since_preemption",
    "down_frac_24h",
    "hours_observed",
)

#: Single-signal baselines: name -> column of :data:`TRACE_FEATURES`.
SINGLE_SIGNALS: Mapping[str, str] = {
    "trailing_preemptions_24h": "preemptions_24h",
    "hours_since_last_preemption": "hours_since_preemption",
}

#: SkyPilot accelerator tag -> AWS instance type (the tag's accelerator and count;
#: the traces' README maps k80_1/k80_8 to p2.2xlarge/p2.16xlarge, which hold 1/16
#: K80s only in name: 1 K80 is p2.xlarge, 8 K80s p2.8xlarge).
SKYPILOT_TYPES: Mapping[str, str] = {
    "v100_1": "p3.2xlarge",
    "v100_8": "p3.16xlarge",
    "k80_1": "p2.xlarge",
    "k80_8": "p2.8xlarge",
    "intel_64": "r5.16xlarge",
}

#: Bamboo cluster traces (no README): instance type and region assumed. The p3
#: trace is 32 p3.2xlarge per Parcae's README (same trace); the g4dn size is not
#: recorded, g4dn.xlarge is the size of every other Bamboo g4dn trace; every
#: named Bamboo trace is in us-east-1.
BAMBOO_CLUSTER_POOLS: Mapping[str, tuple[str, str]] = {
    "p3": ("p3.2xlarge", "us-east-1"),
    "g4dn": ("g4dn.xlarge", "us-east-1"),
}


@dataclass(frozen=True)
class Trace:
    """One pool's held-instance count over time (hours from the trace start).

    ``held[i]`` spot instances are held from ``change_h[i]`` until
    ``change_h[i + 1]`` (the last until ``end_h``); ``change_h[0] == 0`` and
    ``change_h`` strictly increases.
    """

    source: str
    trace_id: str
    instance_type: str
    region: str
    zone: str
    start_date: str
    change_h: F64
    held: F64
    end_h: float

    def drops(self) -> F64:
        """Times (hours) at which the held count goes down: the preemptions."""
        down = np.flatnonzero(np.diff(self.held) < 0) + 1
        out: F64 = self.change_h[down]
        return out

    def held_at(self, t: F64) -> F64:
        """Instances held at each ``t`` (right-continuous: a change at ``t`` counts)."""
        i = np.searchsorted(self.change_h, t, side="right") - 1
        out: F64 = self.held[np.clip(i, 0, self.held.size - 1)]
        return out


def step_trace(
    source: str,
    trace_id: str,
    instance_type: str,
    region: str,
    zone: str,
    start_date: str,
    times_h: Sequence[float] | F64,
    counts: Sequence[float] | F64,
    end_h: float,
) -> Trace:
    """A :class:`Trace` from (time, count) observations in time order (later rows at
    the same time win; times before 0 clip to 0; repeats of a count are merged)."""
    t = np.asarray(times_h, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    if t.size == 0:
        raise ValueError(f"trace {trace_id}: no observations")
    t = np.maximum(t, 0.0)
    if np.any(np.diff(t) < 0):
        raise ValueError(f"trace {trace_id}: times not in order")
    # last row at each distinct time
    last = np.r_[np.flatnonzero(np.diff(t) > 0), t.size - 1]
    t, c = t[last], c[last]
    if t[0] > 0:  # nothing known before the first row: take its count from 0
        t[0] = 0.0
    keep = np.r_[True, np.diff(c) != 0]
    return Trace(
        source,
        trace_id,
        instance_type,
        region,
        zone,
        start_date,
        t[keep],
        c[keep],
        float(max(end_h, t[-1])),
    )


def region_of_zone(zone: str) -> str:
    """``us-east-1c`` -> ``us-east-1``."""
    m = re.match(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d+)[a-z]$", zone)
    return m.group(1) if m else zone


def skypilot_trace(index_row: Mapping[str, str], tick_s: F64, value: F64) -> Trace:
    """A single-node SkyPilot trace: value 0 = an instance is held, 1 = preempted or
    unavailable (SkyPilot's simulator's reading), so held = 1 - value; the last tick
    holds for one gap."""
    gap = float(index_row["gap_seconds"])
    zone = index_row["zone"]
    tag = index_row["accelerator_tag"]
    d = iso_date(index_row.get("start_date_mm-dd-yyyy", ""))
    return step_trace(
        "skypilot",
        index_row["trace_id"],
        SKYPILOT_TYPES.get(tag, tag),
        region_of_zone(zone),
        zone,
        d,
        tick_s / 3600.0,
        1.0 - np.asarray(value, dtype=np.float64),
        (tick_s.size * gap) / 3600.0,
    )


def iso_date(mm_dd_yyyy: str) -> str:
    """``02-15-2023`` -> ``2023-02-15`` (empty when not in that form)."""
    m = re.match(r"^(\d{2})-(\d{2})-(\d{4})$", mm_dd_yyyy.strip())
    return f"{m.group(3)}-{m.group(1)}-{m.group(2)}" if m else ""


_BAMBOO_NAME = re.compile(
    r"^aws-spot-instances-(?P<fam>[a-z0-9]+)-(?P<size>[a-z0-9]+)-"
    r"(?:(?P<zone>[a-z]{2}-[a-z]+-\d[a-z])-)?"
    r"(?P<d0>\d{4}-\d{2}-\d{2})(?:-(?P<t0>\d{2}:?\d{2}))?-to-"
    r"(?P<d1>\d{4}-\d{2}-\d{2})(?:-(?P<t1>\d{2}:?\d{2}))?$"
)


def _window_hours(d0: str, t0: str | None, d1: str, t1: str | None) -> float:
    """Length of a ``date[-HHMM]-to-date[-HHMM]`` window; NaN without both times."""
    from datetime import datetime

    if not t0 or not t1:
        return math.nan
    a = datetime.fromisoformat(f"{d0}T{t0.replace(':', '')[:2]}:{t0.replace(':', '')[2:]}")
    b = datetime.fromisoformat(f"{d1}T{t1.replace(':', '')[:2]}:{t1.replace(':', '')[2:]}")
    return (b - a).total_seconds() / 3600.0


def bamboo_count_traces(rows: Iterable[Mapping[str, str]]) -> list[Trace]:
    """Traces from ``bamboo_spot_instance_count_steps_2020-11.csv`` rows (``trace``,
    ``time_unit`` seconds|hours, ``time_offset``, ``running_instance_count``).

    Type, zone (absent for the multi-day p2 file: region only) and window come
    from the file name; a trace is observed until the end of the window its name
    gives (or its last row, when later or when the name gives no times)."""
    acc: dict[str, tuple[list[float], list[float]]] = {}
    units: dict[str, str] = {}
    for r in rows:
        ts, cs = acc.setdefault(r["trace"], ([], []))
        scale = 1.0 if r["time_unit"] == "hours" else 1.0 / 3600.0
        units[r["trace"]] = r["time_unit"]
        ts.append(float(r["time_offset"]) * scale)
        cs.append(float(r["running_instance_count"]))
    out = []
    for name, (ts, cs) in sorted(acc.items()):
        m = _BAMBOO_NAME.match(name)
        if m is None:
            raise ValueError(f"unrecognised Bamboo trace name {name!r}")
        zone = m.group("zone") or ""
        window = _window_hours(m.group("d0"), m.group("t0"), m.group("d1"), m.group("t1"))
        end = max(ts) if math.isnan(window) else max(window, max(ts))
        out.append(
            step_trace(
                "bamboo",
                name,
                f"{m.group('fam')}.{m.group('size')}",
                region_of_zone(zone) if zone else "us-east-1",
                zone,
                m.group("d0"),
                ts,
                cs,
                end,
            )
        )
    return out


def bamboo_cluster_traces(rows: Iterable[Mapping[str, str]]) -> list[Trace]:
    """Traces from ``bamboo_spot_cluster_events_p3_g4dn.csv`` rows (``trace``,
    ``offset_ms``, ``event`` add|remove): the count is adds minus removes so far;
    observed until the last event; pool per :data:`BAMBOO_CLUSTER_POOLS`."""
    acc: dict[str, list[tuple[float, int]]] = {}
    for r in rows:
        step = 1 if r["event"] == "add" else -1 if r["event"] == "remove" else 0
        if step == 0:
            raise ValueError(f"unknown Bamboo cluster event {r['event']!r}")
        acc.setdefault(r["trace"], []).append((float(r["offset_ms"]) / 3.6e6, step))
    out = []
    for name, evs in sorted(acc.items()):
        evs.sort(key=lambda e: e[0])
        t = np.asarray([e[0] for e in evs])
        c = np.cumsum([e[1] for e in evs]).astype(np.float64)
        itype, region = BAMBOO_CLUSTER_POOLS.get(name, (name, "us-east-1"))
        out.append(step_trace("bamboo", f"cluster-{name}", itype, region, "", "", t, c, t[-1]))
    return out


# --------------------------------------------------------------------------
# rows and features
# --------------------------------------------------------------------------


def trailing_features(trace: Trace, t: F64) -> F64:
    """The trace's own-past columns of :data:`TRACE_FEATURES` (all but the two advisor
    ones) at moments ``t``: reads only changes at or before each ``t``."""
    t = np.asarray(t, dtype=np.float64)
    drops = trace.drops()
    now = np.searchsorted(drops, t, side="right")  # drops at or before t
    cols: list[F64] = []
    for w in COUNT_WINDOWS:
        then = np.searchsorted(drops, t - w, side="right")
        cols.append((now - then).astype(np.float64))
    observed = np.minimum(t, SINCE_CAP_H)
    padded = np.r_[-np.inf, drops]
    last = padded[now]  # the latest drop at or before t; -inf when none
    cols.append(np.minimum(t - last, observed))  # none yet: hours observed (censored)
    # time with nothing held in (t - 24 h, t], over the observed part of the window
    down = (trace.held <= 0).astype(np.float64)
    seg = np.diff(np.r_[trace.change_h, np.inf])
    cum = np.r_[0.0, np.cumsum(np.where(np.isfinite(seg), seg, 0.0) * down)]

    def down_until(x: F64) -> F64:
        i = np.clip(np.searchsorted(trace.change_h, x, side="right") - 1, 0, None)
        out: F64 = cum[i] + (x - trace.change_h[i]) * down[i]
        return out

    lo = np.maximum(t - DOWN_WINDOW_H, 0.0)
    span = t - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(span > 0, (down_until(t) - down_until(lo)) / span, np.nan)
    cols.append(frac)
    cols.append(observed)
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class TraceRows:
    """Labelled rows of many traces; ``trace`` indexes the traces given,
    ``later`` marks the later (scored) part."""

    x: F64
    y: F64
    trace: I64
    t: F64
    later: npt.NDArray[np.bool_]

    def select(self, mask: npt.NDArray[np.bool_]) -> TraceRows:
        """The rows where ``mask`` is true."""
        return TraceRows(
            self.x[mask], self.y[mask], self.trace[mask], self.t[mask], self.later[mask]
        )


def trace_rows(
    trace: Trace, horizon_h: float, step_h: float, train_fraction: float
) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """(t, label, later) for one trace: grid moments with something held whose
    label window lies inside the trace and on one side of the split moment
    ``train_fraction x end_h``."""
    eps = 1e-9
    grid = np.arange(0.0, trace.end_h - horizon_h + eps, step_h)
    split = train_fraction * trace.end_h
    earlier = grid + horizon_h <= split + eps
    later = grid >= split - eps
    keep = (trace.held_at(grid) > 0) & (earlier | later)
    t = grid[keep]
    y = labels.drop_labels(trace.drops(), t, horizon_h)
    return t, y, later[keep]


def build_rows(
    traces: Sequence[Trace],
    advisor_by_region: Mapping[str, Mapping[str, tuple[int, float]]],
    horizon_h: float,
    step_h: float,
    train_fraction: float = 0.5,
) -> TraceRows:
    """Rows of every trace with :data:`TRACE_FEATURES` (advisor columns from
    ``advisor_by_region[region][type] = (band, savings %)``; unlisted: NaN)."""
    xs, ys, ids, ts, lat = [], [], [], [], []
    for k, tr in enumerate(traces):
        t, y, later = trace_rows(tr, horizon_h, step_h, train_fraction)
        adv = advisor_by_region.get(tr.region, {}).get(tr.instance_type)
        static = np.array([adv[0], adv[1]] if adv else [np.nan, np.nan], dtype=np.float64)
        x = np.concatenate([np.tile(static, (t.size, 1)), trailing_features(tr, t)], axis=1)
        xs.append(x)
        ys.append(y)
        ids.append(np.full(t.size, k, dtype=np.int64))
        ts.append(t)
        lat.append(later)
    if not xs:
        n = len(TRACE_FEATURES)
        return TraceRows(
            np.zeros((0, n)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool)
        )
    return TraceRows(
        np.concatenate(xs),
        np.concatenate(ys),
        np.concatenate(ids),
        np.concatenate(ts),
        np.concatenate(lat),
    )


def static_model_rows(
    traces: Sequence[Trace],
    catalogs: Mapping[str, catalog_mod.Catalog],
    advisor_by_region: Mapping[str, Mapping[str, tuple[int, float]]],
) -> F32:
    """One spike-model feature row per trace (columns :data:`features.FEATURE_NAMES`):
    the static type features filled, every price-derived feature NaN (no prices)."""
    n = len(features.FEATURE_NAMES)
    out = np.full((len(traces), n), np.nan, dtype=np.float32)
    j0 = features.FEATURE_NAMES.index(features.STATIC_NAMES[0])
    ratio = features.FEATURE_NAMES.index("log_spot_over_ondemand")
    for k, tr in enumerate(traces):
        cat = catalogs.get(tr.region)
        it = cat.types.get(tr.instance_type) if cat else None
        od = cat.on_demand_usd_per_hour.get(tr.instance_type) if cat else None
        zones = len(cat.zones.get(tr.instance_type, ())) if cat else 0
        adv = advisor_by_region.get(tr.region, {}).get(tr.instance_type)
        row = features.type_static_row(
            it, od, zones, adv[0] if adv else None, adv[1] if adv else None
        )
        out[k, j0 : j0 + len(row)] = row
        out[k, ratio] = np.nan  # the slot holds log(on-demand) until a spot price divides it
    return out


# --------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------


def band_scores(x: F64, horizon_h: float) -> F64:
    """The advisor-band probability over ``horizon_h`` per row (unlisted: the middle band)."""
    band = x[:, TRACE_FEATURES.index("advisor_band")]
    b = np.where(np.isfinite(band), band, advisor.UNKNOWN_BAND).astype(np.int64)
    table = np.asarray([advisor.band_probability(i, horizon_h) for i in range(5)])
    out: F64 = table[np.clip(b, 0, 4)]
    return out


def _metrics(y: F64, p: F64) -> dict[str, Any]:
    out = metrics.summary(y, p)
    out["positives"] = int(np.sum(y > 0.5))
    return out


def evaluate_source(
    traces: Sequence[Trace],
    rows: TraceRows,
    model: xgb.XGBoostRisk | None,
    static_rows: F32 | None,
    horizon_h: float,
) -> dict[str, Any]:
    """Every score on the later part of ``rows``, baselines fitted on the earlier part.

    Returns ``{"results": {name: metrics.summary + positives}, "train_rows",
    "train_positives", "rows", "positives", "traces", "per_trace": [...]}``;
    ``results`` is empty when the later part lacks a class (nothing to rank).
    """
    early, late = rows.select(~rows.later), rows.select(rows.later)
    out: dict[str, Any] = {
        "traces": len(traces),
        "rows": int(late.y.size),
        "positives": int(late.y.sum()),
        "train_rows": int(early.y.size),
        "train_positives": int(early.y.sum()),
        "results": {},
        "per_trace": [
            {
                "trace_id": tr.trace_id,
                "instance_type": tr.instance_type,
                "region": tr.region,
                "zone": tr.zone,
                "start_date": tr.start_date,
                "hours": tr.end_h,
                "preemptions": int(tr.drops().size),
                "rows": int(np.sum(late.trace == k)),
                "positives": int(late.y[late.trace == k].sum()),
                "train_rows": int(np.sum(early.trace == k)),
            }
            for k, tr in enumerate(traces)
        ],
    }
    ok_late = 0 < late.y.sum() < late.y.size
    ok_early = 0 < early.y.sum() < early.y.size
    if not (ok_late and ok_early):
        return out
    res: dict[str, dict[str, Any]] = {}
    if model is not None and static_rows is not None:
        p_static = model.predict_features(static_rows)
        res["xgboost_static_only"] = _metrics(late.y, p_static[late.trace])
    res["advisor_band"] = _metrics(late.y, band_scores(late.x, horizon_h))
    for name, col in SINGLE_SIGNALS.items():
        j = TRACE_FEATURES.index(col)
        lr = metrics.fit_logistic(early.x[:, j : j + 1], early.y, l2=1e-3)
        res[name] = _metrics(late.y, lr.predict(late.x[:, j : j + 1]))
    lr_all = metrics.fit_logistic(early.x, early.y, l2=1.0, max_iter=300)
    res["logistic_regression"] = _metrics(late.y, lr_all.predict(late.x))
    out["results"] = res
    out["logistic_regression"] = lr_all.to_json()
    return out
