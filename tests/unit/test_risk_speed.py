"""The fast scoring path of the risk model, on the real bundled market and artifact:
the compiled forest (numba kernel and numpy reference) equals xgboost, also on
other tree shapes, the flat snapshot conversion equals the training conversion,
and the per-market cache never changes a number."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import xgboost

from spotfleet_cli import inputs
from spotfleet_cli.commands import risk as risk_cli
from spotfleet_engine import catalog, market, model
from spotfleet_engine.risk import features, forest, serving, xgb

NOW = datetime(2021, 5, 12, 6, tzinfo=UTC)
F32 = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def risk() -> xgb.XGBoostRisk:
    return xgb.load_bundled()


@pytest.fixture(scope="module")
def snap() -> market.MarketSnapshot:
    return market.snapshot_at(market.load_bundled_history(), NOW, lookback=timedelta(days=7))


@pytest.fixture(scope="module")
def cat() -> catalog.Catalog:
    return catalog.load_bundled("us-east-1")


def _spot_pools(snap: market.MarketSnapshot) -> list[model.Pool]:
    return [p for p, _ in snap.spot_pools()]


def test_compiled_forest_equals_xgboost_on_real_rows(
    risk: xgb.XGBoostRisk, snap: market.MarketSnapshot, cat: catalog.Catalog
) -> None:
    """Serving rows of the bundled market at two moments plus training rows of a few
    families (NaN features included): margins and probabilities within 1e-6."""
    _, x_now, _ = risk.market_features(snap, cat, NOW)
    later = NOW + timedelta(days=9, hours=13)
    snap2 = market.snapshot_at(market.load_bundled_history(), later, lookback=timedelta(days=3))
    _, x_later, _ = risk.market_features(snap2, cat, later)
    ev, first, _ = inputs.load_prices([inputs.bundled_path(risk_cli.BUNDLED_PRICES)])
    keep = np.flatnonzero([t.startswith(("c5", "t3", "p3")) for t in ev.types])
    pool = np.repeat(keep, 3)
    t = np.tile(np.array([first + 2.0, first + 90.5, first + 400.0]), keep.size)
    static = serving.StaticCache(cat, snap.advisor).table(ev.types)
    x_train = features.feature_matrix(ev, static, pool, t)  # early hours: many NaN features
    x = np.ascontiguousarray(np.concatenate([x_now, x_later, x_train]))
    assert np.isnan(x).any(axis=1).mean() > 0.1
    compiled = forest.compile_booster(risk.booster)
    assert compiled.n_trees == int(risk.artifact["n_trees"])
    want = np.asarray(risk.booster.inplace_predict(x, predict_type="margin"), np.float64)
    for got in (
        compiled.margin(x),  # the numba kernel, one thread
        compiled.margin(x, threads=2),
        compiled.margin(x[:1001]),  # a short last block
        compiled.margin_numpy(x),
    ):
        np.testing.assert_allclose(got.astype(np.float64), want[: got.size], rtol=0, atol=1e-6)
    # the model serves with the kernel, and its probabilities are xgboost's calibrated
    assert risk.scorer == "forest" and risk.forest is not None
    np.testing.assert_allclose(risk.predict_features(x), risk.calibrate(want), rtol=0, atol=1e-6)
    # the rows really exercise the trees: margins spread over several units
    assert float(np.ptp(want)) > 3.0


def _train(params: dict[str, Any], rounds: int, seed: int) -> tuple[xgboost.Booster, F32]:
    """A small booster on synthetic rows with missing values, and other rows to score."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, 9)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2]) > 0.3).astype(
        np.float32
    )
    booster = xgboost.train(
        {"nthread": 1, "seed": seed, **params}, xgboost.DMatrix(x, label=y), rounds
    )
    rows = rng.normal(size=(777, 9)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.2] = np.nan
    return booster, rows


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "binary:logistic", "max_depth": 2, "eta": 0.3},
        {"objective": "binary:logistic", "max_depth": 9, "eta": 0.3, "base_score": 0.2},
        {"objective": "binary:logitraw", "max_depth": 1},
        {"objective": "reg:logistic", "grow_policy": "lossguide", "max_leaves": 11, "max_depth": 0},
    ],
)
def test_compiled_forest_equals_xgboost_on_other_tree_shapes(params: dict[str, Any]) -> None:
    """Any artifact, not only the bundled one: other depths (1, 2, 9), base scores,
    objectives and lossguide trees; margins within 1e-6 of xgboost's, NaN included."""
    booster, rows = _train(params, 40, seed=3)
    compiled = forest.compile_checked(booster)
    assert compiled is not None
    want = np.asarray(booster.inplace_predict(rows, predict_type="margin"), np.float64)
    assert float(np.ptp(want)) > 0.5
    for got in (compiled.margin(rows), compiled.margin(rows, threads=2)):
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(compiled.margin_numpy(rows), want, rtol=0, atol=1e-6)


def test_order_keys_order_like_float32() -> None:
    """The kernel compares integer keys: same order as float32 ``>=`` on every pair of
    special and random values (signed zeros equal, denormals, infinities)."""
    tiny = np.float32(1e-45)
    special = [0.0, -0.0, tiny, -tiny, 1.0, -1.0, np.inf, -np.inf, 3.4e38, -3.4e38, 0.5]
    rng = np.random.default_rng(2)
    v = np.concatenate([np.array(special, np.float32), rng.normal(size=300).astype(np.float32)])
    k = forest.order_key(v)
    assert (np.abs(k) <= 0x7F800000).all()
    np.testing.assert_array_equal(k[:, None] >= k[None, :], v[:, None] >= v[None, :])


def test_unsupported_boosters_are_left_to_xgboost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several outputs, dart and trees deeper than MAX_DEPTH do not compile; the model
    then keeps xgboost's predictor (``compile_checked`` is None)."""
    multi, _ = _train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2}, 3, 1)
    dart, _ = _train({"objective": "binary:logistic", "booster": "dart", "max_depth": 2}, 3, 1)
    deep, _ = _train({"objective": "binary:logistic", "max_depth": 3}, 3, 1)
    assert forest.compile_booster(deep).depth == 3
    monkeypatch.setattr(forest, "MAX_DEPTH", 2)
    for booster in (multi, dart, deep):
        with pytest.raises(ValueError):
            forest.compile_booster(booster)
        assert forest.compile_checked(booster) is None


def test_a_model_whose_trees_do_not_compile_serves_with_xgboost(
    risk: xgb.XGBoostRisk,
    snap: market.MarketSnapshot,
    cat: catalog.Catalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pools = _spot_pools(snap)[:200]
    want = risk.interruption_probability(pools, snap, cat, NOW)
    monkeypatch.setattr(forest, "MAX_DEPTH", 1)
    fallback = xgb.load_bundled()
    assert fallback.scorer == "xgboost" and fallback.forest is None
    got = fallback.interruption_probability(pools, snap, cat, NOW)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_snapshot_events_equal_the_per_pool_conversion(snap: market.MarketSnapshot) -> None:
    """The flat conversion gives the events of ``events_from_series`` on each pool's
    points at or before ``now``, also for out-of-order and future points."""
    hist: dict[tuple[str, str], tuple[market.PricePoint, ...]] = dict(snap.spot_history)
    key_a, key_b = sorted(hist)[:2]
    pts = list(hist[key_a])
    hist[key_a] = tuple(reversed(pts))  # out of order
    hist[key_b] = (
        *hist[key_b],
        market.PricePoint(NOW + timedelta(hours=1), 9.0),  # after now: dropped
    )
    hist[("x9.huge", "us-east-1a")] = (market.PricePoint(NOW + timedelta(hours=2), 1.0),)
    se = serving.snapshot_events(hist, NOW)

    def hours(pp: market.PricePoint) -> float:
        return pp.at.timestamp() / 3600.0

    series = []
    for k in sorted(hist):
        kept = [pp for pp in hist[k] if pp.at <= NOW]
        series.append((k[0], k[1], [hours(pp) for pp in kept], [pp.price for pp in kept]))
    ref = features.events_from_series(series)
    assert se.keys == tuple(sorted(hist))
    assert se.events.types == ref.types and se.events.zones == ref.zones
    np.testing.assert_array_equal(se.events.offsets, ref.offsets)
    np.testing.assert_array_equal(se.events.hours, ref.hours)
    np.testing.assert_array_equal(se.events.prices, ref.prices)
    i_new = se.keys.index(("x9.huge", "us-east-1a"))
    assert np.isnan(se.first_hour[i_new])
    assert se.first_hour[se.keys.index(key_a)] == pytest.approx(min(hours(p) for p in pts))


def test_point_memo_returns_timestamp_and_price_and_stays_bounded(
    snap: market.MarketSnapshot,
) -> None:
    """Hits (the same PricePoints in new tuples, as consecutive backtest hours), partial
    hits (some points new) and whole new markets (operator refreshes) all give exactly
    ``at.timestamp()`` and ``price``; the memo holds about one market, and nothing
    after two markets in a row share no point."""
    pts = [p for k in sorted(snap.spot_history) for p in snap.spot_history[k]]
    memo = serving.PointMemo()
    refreshed = [market.PricePoint(p.at + timedelta(seconds=1), p.price * 2) for p in pts]
    half = [q if i % 2 else p for i, (p, q) in enumerate(zip(pts, refreshed, strict=True))]
    fresh = [market.PricePoint(p.at, p.price) for p in pts]  # equal values, new objects
    sizes = []
    for points in (pts, list(pts), half, pts[::3], refreshed, fresh, fresh, pts):
        secs, prices = memo.lookup(list(points))
        assert secs.tolist() == [p.at.timestamp() for p in points]
        assert prices.tolist() == [p.price for p in points]
        sizes.append(len(memo))
    n = len(pts)
    assert sizes[0] == sizes[1] == n  # stored, then all hits
    assert n < sizes[2] <= 3 * n and sizes[3] == sizes[2]  # the new half added
    assert sizes[4] == n  # no hit: replaced by that market
    assert sizes[5] == sizes[6] == sizes[7] == 0  # no hit twice in a row: nothing kept
    for _ in range(8):  # within 8 calls it stores a market again, then hits
        secs, _ = memo.lookup(list(pts))
        assert secs.tolist() == [p.at.timestamp() for p in pts]
    assert len(memo) == n


def test_snapshot_events_with_the_memo_equal_the_plain_conversion(
    snap: market.MarketSnapshot, risk: xgb.XGBoostRisk, cat: catalog.Catalog
) -> None:
    """Backtest-like hours (one tuple of points per pool, sliced per hour) through one
    model (memo warm) score exactly as a fresh model per hour (memo cold)."""
    memo = serving.PointMemo()
    hist = {k: tuple(v) for k, v in snap.spot_history.items()}
    pools = _spot_pools(snap)
    shared = xgb.load_bundled()
    for cut in (0, 5, 11):
        now = NOW - timedelta(hours=cut)
        sliced = {k: tuple(p for p in v if p.at <= now) for k, v in hist.items()}
        sliced = {k: v for k, v in sliced.items() if v}
        a = serving.snapshot_events(sliced, now, memo)
        b = serving.snapshot_events(sliced, now)
        np.testing.assert_array_equal(a.events.hours, b.events.hours)
        np.testing.assert_array_equal(a.events.prices, b.events.prices)
        np.testing.assert_array_equal(a.events.offsets, b.events.offsets)
        hour = market.MarketSnapshot(snap.region, now, sliced, advisor=snap.advisor)
        asked = [p for p in pools if (p.instance_type, p.zone) in sliced]
        want = xgb.load_bundled().interruption_probability(asked, hour, cat, now)
        assert shared.interruption_probability(asked, hour, cat, now) == want
    assert len(memo) > 0  # hours sharing points keep the memo


def _count_feature_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real: Callable[..., Any] = features.feature_matrix

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "feature_matrix", counting)
    return calls


def test_market_cache_reuses_features_and_never_changes_a_number(
    snap: market.MarketSnapshot, cat: catalog.Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools = _spot_pools(snap)
    fresh = xgb.load_bundled()
    want = fresh.interruption_probability(pools, snap, cat, NOW)

    model_ = xgb.load_bundled()
    calls = _count_feature_builds(monkeypatch)
    rng = np.random.default_rng(5)
    subset = [pools[i] for i in rng.permutation(len(pools))[:300]]
    got_subset = model_.interruption_probability(subset, snap, cat, NOW)
    got_all = model_.interruption_probability(pools, snap, cat, NOW)
    # the operator's MarketCache hands out a new snapshot object sharing the history
    same_market = market.MarketSnapshot(
        region=snap.region,
        observed_at=snap.observed_at,
        spot_history=snap.spot_history,
        advisor=snap.advisor,
        unavailable=frozenset(pools[:3]),
    )
    got_again = model_.interruption_probability(pools, same_market, cat, NOW)
    assert len(calls) == 1  # one feature build for the three calls
    by_pool = dict(zip(pools, want, strict=True))
    assert got_subset == [by_pool[p] for p in subset]
    assert got_all == want
    assert got_again == want

    # another moment, another catalog object or another history: features rebuilt
    later = model_.interruption_probability(pools, snap, cat, NOW + timedelta(hours=1))
    assert len(calls) == 2
    assert later != want  # hour of day and the time-since features moved
    other_cat = cat.restricted_to(cat.types)
    assert model_.interruption_probability(pools, snap, other_cat, NOW) == want
    assert len(calls) == 3
    copy = market.MarketSnapshot(
        region=snap.region,
        observed_at=snap.observed_at,
        spot_history=dict(snap.spot_history),
        advisor=snap.advisor,
    )
    assert model_.interruption_probability(pools, copy, cat, NOW) == want
    assert len(calls) == 4
    model_.clear_cache()
    assert model_.interruption_probability(pools[:10], snap, cat, NOW) == want[:10]
    assert len(calls) == 5


def test_cache_evicts_the_least_recently_used_market() -> None:
    lru: serving.IdentityLRU[str] = serving.IdentityLRU(2)
    a, b, c = object(), object(), object()
    lru.put((a,), "a")
    lru.put((b,), "b")
    assert lru.get((a,)) == "a"  # a is now the most recent
    lru.put((c,), "c")
    assert lru.get((b,)) is None and lru.get((a,)) == "a" and lru.get((c,)) == "c"
    assert lru.get((a,), (1.0,)) is None  # extra key values count
    assert len(lru) == 2


def test_concurrent_calls_on_one_model_agree_with_a_single_caller(
    snap: market.MarketSnapshot, cat: catalog.Catalog
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    priced = _spot_pools(snap)
    absent = [
        model.Pool(t, z, model.Market.SPOT)
        for t, zones in sorted(cat.zones.items())
        for z in sorted(zones)
        if (t, z) not in snap.spot_history
    ][:400]
    rng = np.random.default_rng(11)
    asks = [
        [(priced + absent)[i] for i in rng.permutation(len(priced) + len(absent))[:700]]
        for _ in range(8)
    ]
    want = [xgb.load_bundled().interruption_probability(a, snap, cat, NOW) for a in asks]
    shared = xgb.load_bundled()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda a: shared.interruption_probability(a, snap, cat, NOW), asks))
    assert got == want
