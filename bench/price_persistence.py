"""Does a spot price that just moved come back? Measured on every bundled history.

The move test (``spotfleet_engine.hysteresis``) values a move at today's prices held
over the horizon. Issue 17 asks for price mean-reversion ("a pool that just got cheaper
often gets dearer again") to be priced in. This bench measures whether the bundled
histories show it, per history, on hourly samples of every pool:

- ``persist_dev``: least-squares slope of (mean price over the next ``H`` hours minus the
  trailing 7-day mean) on (price now minus that mean), both relative to the mean, over
  hours where the two differ by >= 1 %. 1 means the deviation persists over the horizon
  as the move test assumes; 0 means it reverts at once; above 1 means it keeps going.
- ``follow_6h``: slope of (mean price over the next ``H`` hours minus price now) on the
  change over the last 6 hours, both relative to the price now, over hours that changed
  by >= 1 %. Negative would be reversion (a drop followed by a rise); positive is
  momentum. ``after_drop``: the mean of that future move after a drop, with the mean drop.

Each figure is given for the first 30 days of a history and for the rest, so a reader
can see whether it holds out of the part one would fit on.

Usage: .venv/bin/python bench/price_persistence.py [--horizon-hours 24]
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spotfleet_engine import market

WINDOW_H = 168
LAG_H = 6
MIN_REL = 0.01


def _bench_backtest() -> Any:
    """bench/backtest.py's HISTORIES (one place for the files and windows)."""
    path = Path(__file__).resolve().parent / "backtest.py"
    spec = importlib.util.spec_from_file_location("bench_backtest", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def hourly(
    s: market.PoolSeries, t0: int, t1: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(hour start, price in force) for each whole hour in [t0, t1) once the pool has a price."""
    grid = np.arange(t0, t1, 3600, dtype=np.int64)
    idx = np.searchsorted(s.times, grid, side="right") - 1
    ok = idx >= 0
    return grid[ok], s.prices[idx[ok]]


def slope(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float | None:
    return None if x.size == 0 else round(float(x @ y / (x @ x)), 3)


def measure(hist: market.PriceHistory, horizon: int) -> dict[str, Any]:
    t0, t1 = int(hist.start.timestamp()), int(hist.end.timestamp())
    split = t0 + 30 * 86400
    parts: dict[str, dict[str, list[float]]] = {
        p: {"dx": [], "dy": [], "mx": [], "my": []} for p in ("first_30d", "rest")
    }
    for s in hist.series.values():
        g, p = hourly(s, t0, t1)
        if p.size < WINDOW_H + horizon + 1:
            continue
        c = np.concatenate(([0.0], np.cumsum(p)))
        k = np.arange(WINDOW_H, p.size - horizon)
        mean = (c[k + 1] - c[k + 1 - WINDOW_H]) / WINDOW_H
        fut = (c[k + 1 + horizon] - c[k + 1]) / horizon
        now = p[k]
        dev, ahead = (now - mean) / mean, (fut - mean) / mean
        change, follow = (now - p[k - LAG_H]) / now, (fut - now) / now
        for name, sel in (("first_30d", g[k] < split), ("rest", g[k] >= split)):
            a = sel & (np.abs(dev) >= MIN_REL)
            b = sel & (np.abs(change) >= MIN_REL)
            parts[name]["dx"] += dev[a].tolist()
            parts[name]["dy"] += ahead[a].tolist()
            parts[name]["mx"] += change[b].tolist()
            parts[name]["my"] += follow[b].tolist()
    out: dict[str, Any] = {}
    for name, v in parts.items():
        dx, dy = np.asarray(v["dx"]), np.asarray(v["dy"])
        mx, my = np.asarray(v["mx"]), np.asarray(v["my"])
        drop = mx < 0
        out[name] = {
            "n_dev": int(dx.size),
            "persist_dev": slope(dx, dy),
            "n_moves": int(mx.size),
            "follow_6h": slope(mx, my),
            "after_drop_pct": None if not drop.any() else round(100 * float(my[drop].mean()), 2),
            "mean_drop_pct": None if not drop.any() else round(100 * float(mx[drop].mean()), 2),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--horizon-hours", type=int, default=24)
    args = ap.parse_args()
    bb = _bench_backtest()
    result: dict[str, Any] = {"horizon_hours": args.horizon_hours}
    print(f"horizon {args.horizon_hours} h, trailing mean {WINDOW_H} h, change over {LAG_H} h")
    print(f"{'history':8s} {'part':10s} {'n':>8s} {'persist':>8s} {'n':>7s} {'follow':>7s} "
          f"{'after drop %':>12s} {'drop %':>7s}")  # fmt: skip
    for name, h in bb.HISTORIES.items():
        m = measure(h.load(), args.horizon_hours)
        result[name] = m
        for part, f in m.items():
            print(
                f"{name:8s} {part:10s} {f['n_dev']:8d} {f['persist_dev']!s:>8s} "
                f"{f['n_moves']:7d} {f['follow_6h']!s:>7s} {f['after_drop_pct']!s:>12s} "
                f"{f['mean_drop_pct']!s:>7s}"
            )
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
