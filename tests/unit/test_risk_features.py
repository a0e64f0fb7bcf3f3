"""Risk features on real 2021 us-east-1 prices: no feature looks at the future."""

from __future__ import annotations

import numpy as np
import pytest

from spotfleet_cli import inputs
from spotfleet_cli.commands import risk as risk_cli
from spotfleet_engine import catalog
from spotfleet_engine.risk import dataset, features, labels


@pytest.fixture(scope="module")
def real() -> tuple[features.PriceEvents, float, float]:
    ev, first, last = inputs.load_prices([inputs.bundled_path(risk_cli.BUNDLED_PRICES)])
    keep = [i for i, t in enumerate(ev.types) if t.split(".")[0] in ("c5", "m5a", "r5d", "t3")]
    series = [
        (
            ev.types[i],
            ev.zones[i],
            ev.hours[ev.offsets[i] : ev.offsets[i + 1]],
            ev.prices[ev.offsets[i] : ev.offsets[i + 1]],
        )
        for i in keep
    ]
    return features.events_from_series(series), first, last


def _static(ev: features.PriceEvents) -> features.StaticTable:
    adv = inputs.load_advisor_snapshots([inputs.bundled_path(risk_cli.BUNDLED_ADVISOR)])
    return dataset.static_for(
        ev, catalog.load_bundled("us-east-1"), dataset.advisor_in_force(adv, 450000.0)
    )


def _truncate(ev: features.PriceEvents, t: float, shuffle_seed: int | None) -> features.PriceEvents:
    """Drop (or shuffle the prices of) every event after ``t``."""
    rng = np.random.default_rng(shuffle_seed)
    series = []
    for i in range(ev.n_pools):
        h = ev.hours[ev.offsets[i] : ev.offsets[i + 1]]
        p = ev.prices[ev.offsets[i] : ev.offsets[i + 1]].copy()
        future = h > t
        if shuffle_seed is None:
            h, p = h[~future], p[~future]
        else:
            p[future] = rng.permutation(p[future]) * rng.uniform(0.5, 3.0, future.sum())
        series.append((ev.types[i], ev.zones[i], h, p))
    return features.events_from_series(series)


@pytest.mark.parametrize("mode", ["truncate", "shuffle"])
def test_features_at_t_ignore_everything_after_t(
    real: tuple[features.PriceEvents, float, float], mode: str
) -> None:
    ev, first, _ = real
    static = _static(ev)
    for t in (first + 200.25, first + 1000.0, first + 1700.5):
        pool = np.arange(ev.n_pools, dtype=np.int64)
        ts = np.full(ev.n_pools, t)
        before = features.feature_matrix(ev, static, pool, ts)
        other = _truncate(ev, t, None if mode == "truncate" else 7)
        after = features.feature_matrix(other, _static(other), pool, ts)
        np.testing.assert_array_equal(before, after)
        # the features do move with the past: at least half the columns vary across pools
        assert (np.nanstd(before, axis=0) > 0).sum() > len(features.FEATURE_NAMES) // 2


def test_labels_do_see_the_future(real: tuple[features.PriceEvents, float, float]) -> None:
    ev, first, last = real
    grid = labels.hourly_grid(ev, first + 200, first + 1700)
    y = labels.spike_labels(ev, grid.pool, grid.t, last)
    assert 0.001 < np.nanmean(y) < 0.05  # rare, as in the issue (~0.9 % on all pools)
    t = float(grid.t[np.nanargmax(y)])  # an hour with a rise ahead of it
    sel = grid.t == t
    cut = _truncate(ev, t, None)
    y_cut = labels.spike_labels(cut, grid.pool[sel], grid.t[sel], last)
    # with the future gone no rise can be seen
    assert np.nansum(y_cut) == 0
    assert np.nansum(y[sel]) > 0


def test_spike_label_definition_on_a_hand_built_series() -> None:
    ev = features.events_from_series(
        [("m5.large", "us-east-1a", [0.0, 10.0, 30.0, 40.0], [1.0, 1.04, 1.2, 1.0])]
    )
    pool = np.zeros(5, dtype=np.int64)
    t = np.array([0.0, 5.0, 10.0, 20.0, 30.0])
    y = labels.spike_labels(ev, pool, t, observed_until=50.0, horizon_h=24.0, threshold=0.05)
    # t=0: 1.04 at 10 h is < 5 %, 1.2 at 30 h is outside 24 h -> 0; t=10 (1.04) sees 1.2 at 30 h
    np.testing.assert_array_equal(y, [0.0, 0.0, 1.0, 1.0, np.nan])


def test_window_features_on_a_hand_built_series() -> None:
    ev = features.events_from_series(
        [("m5.large", "us-east-1a", [0.0, 10.0, 20.0, 30.0], [1.0, 2.0, 1.0, 4.0])]
    )
    static = features.StaticTable(
        np.full((1, len(features.STATIC_NAMES)), np.nan), np.zeros(1, np.int64)
    )
    x = features.feature_matrix(ev, static, np.zeros(1, np.int64), np.array([31.0]))[0]
    col = {n: float(v) for n, v in zip(features.FEATURE_NAMES, x, strict=True)}
    ln2 = float(np.log(2.0))
    assert col["ret_1h"] == pytest.approx(0.0)
    assert col["ret_3h"] == pytest.approx(2 * ln2)  # 4.0 vs 1.0
    assert col["changes_24h"] == 3  # events at 10, 20, 30 h lie in (7, 31]
    assert col["rises_24h"] == 2
    assert col["rise_sum_24h"] == pytest.approx(3 * ln2, rel=1e-6)
    assert col["hours_since_change"] == pytest.approx(1.0)
    assert col["hours_since_fall"] == pytest.approx(11.0)
    assert col["rise_streak"] == 1
    assert col["max_rise_24h"] == pytest.approx(2 * ln2, rel=1e-6)
    # largest rise in the day (7, 31] over the price at 7 h (1.0): 4.0; no price 48 h ago
    assert col["day_rise_24h"] == pytest.approx(2 * ln2, rel=1e-6)
    assert np.isnan(col["day_rise_48h"])
    later = features.feature_matrix(ev, static, np.zeros(1, np.int64), np.array([55.0]))[0]
    col = {n: float(v) for n, v in zip(features.FEATURE_NAMES, later, strict=True)}
    assert col["day_rise_24h"] == 0.0  # no change in (31, 55]
    assert col["day_rise_48h"] == pytest.approx(2 * ln2, rel=1e-6)  # the day (7, 31] again
