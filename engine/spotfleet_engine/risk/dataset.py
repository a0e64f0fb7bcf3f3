"""Training/evaluation rows: the hourly (pool, t) grid with features and spike labels.

Pure: takes parsed arrays (the CLI edge reads the CSV files). Advisor data come
as dated snapshots; each row uses the latest snapshot dated at or before its
time (none in force -> NaN advisor features), so no row sees a later snapshot.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine.risk import features, labels

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: advisor snapshots: {snapshot hour (hours since epoch): {type: (band 0..4, savings %)}}
AdvisorSnapshots = Mapping[float, Mapping[str, tuple[int, float]]]


@dataclass(frozen=True)
class Rows:
    """Feature rows with labels; ``t`` in hours since the epoch."""

    x: F32
    y: F64
    pool: I64
    t: F64

    def select(self, mask: npt.NDArray[np.bool_]) -> Rows:
        """The rows where ``mask`` is true."""
        return Rows(self.x[mask], self.y[mask], self.pool[mask], self.t[mask])

    def between(self, start_h: float, end_h: float, horizon_h: float) -> Rows:
        """Rows with start <= t and t + horizon <= end (their labels end inside the span)."""
        return self.select((self.t >= start_h) & (self.t + horizon_h <= end_h))


#: the past days an onset row has no rise in (hours, each a :data:`features.DAY_RISE_LAGS`)
ONSET_QUIET_LAGS: tuple[int, ...] = (24, 48, 72)


def onset_mask(rows: Rows, threshold: float) -> npt.NDArray[np.bool_]:
    """The rows at the possible start of a price rise: in none of the past three days
    (the ``day_rise`` features of lags 24, 48 and 72 h) did the price rise by
    ``threshold`` (a fraction: 0.05 is 5 %) or more. Rows without that history (NaN)
    are not onset rows."""
    cols = [features.FEATURE_NAMES.index(f"day_rise_{lag}h") for lag in ONSET_QUIET_LAGS]
    limit = np.log1p(threshold)
    quiet: npt.NDArray[np.bool_] = np.all(rows.x[:, cols] < limit, axis=1)
    return quiet


def advisor_in_force(snapshots: AdvisorSnapshots, t: float) -> Mapping[str, tuple[int, float]]:
    """The snapshot in force at ``t`` (hours since the epoch) by the engine's one rule,
    :func:`spotfleet_engine.market.snapshot_in_force`: the latest dated at or before
    ``t``, empty when none is."""
    taken = sorted(snapshots)
    i = market_mod.snapshot_in_force(taken, t)
    return snapshots[taken[i]] if i is not None else {}


def static_for(
    ev: features.PriceEvents, cat: catalog_mod.Catalog, advisor: Mapping[str, tuple[int, float]]
) -> features.StaticTable:
    """Static features of ``ev``'s pools from a catalog and one advisor snapshot."""
    return features.static_table(
        ev,
        cat.types,
        cat.on_demand_usd_per_hour,
        {n: len(z) for n, z in cat.zones.items()},
        advisor,
    )


def build_rows(
    ev: features.PriceEvents,
    cat: catalog_mod.Catalog,
    advisor: AdvisorSnapshots,
    start_h: float,
    end_h: float,
    observed_until: float,
    horizon_h: float = labels.DEFAULT_HORIZON_H,
    threshold: float = labels.DEFAULT_THRESHOLD,
) -> Rows:
    """Every pool at every whole hour in [start_h, end_h] with a price and a known label."""
    grid = labels.hourly_grid(ev, start_h, end_h)
    y = labels.spike_labels(ev, grid.pool, grid.t, observed_until, horizon_h, threshold)
    keep = np.isfinite(y)
    pool, t, group, y = grid.pool[keep], grid.t[keep], grid.group[keep], y[keep]
    x = np.empty((pool.size, len(features.FEATURE_NAMES)), dtype=np.float32)
    # split rows by the advisor snapshot in force
    dates = sorted(advisor)
    edges = [-np.inf, *dates, np.inf]
    for lo, hi in itertools.pairwise(edges):
        sel = (t >= lo) & (t < hi)
        if not sel.any():
            continue
        snap = advisor_in_force(advisor, float(lo)) if np.isfinite(lo) else {}
        static = static_for(ev, cat, snap)
        x[sel] = features.feature_matrix(ev, static, pool[sel], t[sel], group[sel])
    return Rows(x, y, pool, t)
