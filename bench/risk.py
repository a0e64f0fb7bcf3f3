"""Scoring speed of the bundled risk model on every us-east-1 pool.

Prints the median time of (a) one inplace_predict on a prebuilt float32 feature
array of all pools (the figure the issue's "< 2 ms" goal is about), (b) the same
through a pandas-free naive path (xgboost DMatrix + predict), and (c) the whole
protocol call (features from a MarketSnapshot + predict). Last line: one JSON object.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import xgboost

from spotfleet_engine import catalog, market, model
from spotfleet_engine.risk import xgb


def median_ms(fn: Callable[[], object], repeat: int = 50) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main() -> None:
    risk = xgb.load_bundled(nthread=1)
    now = datetime(2021, 5, 12, 6, tzinfo=UTC)
    snap = market.snapshot_at(market.load_bundled_history(), now, lookback=timedelta(days=7))
    cat = catalog.load_bundled("us-east-1")
    # every spot pool the us-east-1 catalog offers (types x zones), priced or not
    pools = sorted(
        model.Pool(t, z, model.Market.SPOT) for t, zones in cat.zones.items() for z in zones
    )
    _names, x = risk.market_features(
        snap, cat, now, extra=[(p.instance_type, p.zone) for p in pools]
    )
    predict_ms = median_ms(lambda: risk.predict_features(x))
    names_ = list(risk.artifact["features"])
    dm_ms = median_ms(
        lambda: risk.booster.predict(xgboost.DMatrix(x, feature_names=names_)), repeat=20
    )

    def full() -> object:
        risk._cache_key = None  # force the features to be rebuilt each time
        return risk.interruption_probability(pools, snap, cat, now)

    full_ms = median_ms(full, repeat=10)
    probs = np.asarray(full())
    out = {
        "bench": "risk_scoring",
        "pools": len(pools),
        "rows_scored": int(x.shape[0]),
        "features": int(x.shape[1]),
        "trees": int(risk.artifact["n_trees"]),
        "predict_prebuilt_float32_ms": round(predict_ms, 3),
        "dmatrix_predict_ms": round(dm_ms, 3),
        "protocol_call_with_features_ms": round(full_ms, 2),
        "goal_ms": 2.0,
        "meets_goal": predict_ms < 2.0,
        "mean_probability": round(float(probs.mean()), 5),
    }
    print(f"scored {out['rows_scored']} pools ({len(pools)} asked): predict {predict_ms:.3f} ms")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
