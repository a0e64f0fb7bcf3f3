"""The risk model end to end on a small real subset: time split, training, artifact
round-trip, determinism, the bundled artifact, and the RiskModel protocol."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spotfleet_cli import inputs
from spotfleet_cli.commands import risk as risk_cli
from spotfleet_engine import catalog, market, model
from spotfleet_engine.risk import dataset, features, metrics, protocol, train, xgb

H = 24.0


def _hours(day: str) -> float:
    return inputs.hours_of(day)


SPLIT = train.Split(
    train_end=_hours("2021-05-01"),
    val_start=_hours("2021-05-01"),
    val_end=_hours("2021-05-10"),
    test_start=_hours("2021-05-10"),
    horizon_h=H,
)


@pytest.fixture(scope="module")
def small_rows() -> dataset.Rows:
    """All zones of a few families (about 120 pools) of the real 2021 history."""
    ev, first, last = inputs.load_prices([inputs.bundled_path(risk_cli.BUNDLED_PRICES)])
    keep = [
        i for i, t in enumerate(ev.types) if t.split(".")[0] in ("c5", "m5", "r5", "c5a", "m5a")
    ]
    sub = features.events_from_series(
        [
            (
                ev.types[i],
                ev.zones[i],
                ev.hours[ev.offsets[i] : ev.offsets[i + 1]],
                ev.prices[ev.offsets[i] : ev.offsets[i + 1]],
            )
            for i in keep
        ]
    )
    adv = inputs.load_advisor_snapshots([inputs.bundled_path(risk_cli.BUNDLED_ADVISOR)])
    return dataset.build_rows(sub, catalog.load_bundled(), adv, first + 168, last, last)


def test_time_split_keeps_every_label_window_inside_its_part(small_rows: dataset.Rows) -> None:
    tr, va, te = SPLIT.parts(small_rows)
    assert tr.t.size and va.t.size and te.t.size
    assert (tr.t + H <= SPLIT.train_end).all()
    assert (va.t >= SPLIT.val_start).all() and (va.t + H <= SPLIT.val_end).all()
    assert (te.t >= SPLIT.test_start).all()
    # strictly ordered: all training before validation before test
    assert tr.t.max() < va.t.min() and va.t.max() < te.t.min()
    # the rows between the parts (labels that would cross a boundary) are dropped
    dropped = small_rows.t.size - tr.t.size - va.t.size - te.t.size
    assert dropped > 0


def _train_small(rows: dataset.Rows) -> dict[str, object]:
    art, _val, _test = train.train_model(
        rows,
        SPLIT,
        {"kind": "price_spike", "horizon_hours": H, "threshold": 0.05},
        [{"role": "prices", "file": "subset", "sha256": "-"}],
        rounds=25,
        seed=3,
        nthread=2,
    )
    return art


def test_training_is_deterministic_and_the_artifact_round_trips(
    small_rows: dataset.Rows,
) -> None:
    art1 = _train_small(small_rows)
    art2 = _train_small(small_rows)
    assert json.dumps(art1, sort_keys=True) == json.dumps(art2, sort_keys=True)
    m = art1["metrics"]
    assert isinstance(m, dict)
    for key in (
        "auc",
        "average_precision",
        "ece",
        "best_baseline",
        "best_baseline_average_precision",
    ):
        assert key in m
    assert m["auc"] > 0.8  # a real signal even on a small subset
    text = json.dumps(art1)
    loaded = xgb.load(text)
    _, _, te = SPLIT.parts(small_rows)
    direct = xgb.XGBoostRisk(art1).predict_features(te.x)
    np.testing.assert_array_equal(loaded.predict_features(te.x), direct)
    assert ((direct >= 0) & (direct <= 1)).all()
    # the recorded test metrics are what the loaded model scores on the test rows
    assert metrics.average_precision(te.y, direct) == pytest.approx(m["average_precision"])


def test_the_bundled_artifact_is_complete_and_small() -> None:
    model_ = xgb.load_bundled()
    art = model_.artifact
    assert art["features"] == list(features.FEATURE_NAMES)
    assert art["training_window"]["train_end"] == _hours("2021-05-01")
    assert art["training_window"]["test_start"] == _hours("2021-05-10")
    for key in (
        "auc",
        "average_precision",
        "ece",
        "best_baseline",
        "best_baseline_average_precision",
    ):
        assert key in art["metrics"]
    shas = {d["file"]: d["sha256"] for d in art["data"]}
    path = inputs.bundled_path(risk_cli.BUNDLED_PRICES)
    assert shas[path.name] == risk_cli.sha256_of(path)
    size = inputs.bundled_path(xgb.BUNDLED_ARTIFACT).stat().st_size
    assert size < 3_000_000


def test_protocol_scores_match_the_training_features() -> None:
    """Serving (MarketSnapshot -> probabilities) computes the same features as training."""
    risk = xgb.load_bundled()
    assert isinstance(risk, protocol.RiskModel)
    now = datetime(2021, 5, 12, 6, tzinfo=UTC)
    hist = market.load_bundled_history()
    snap = market.snapshot_at(hist, now, lookback=timedelta(days=40))
    cat = catalog.load_bundled()
    pools = [model.Pool(t, z, model.Market.SPOT) for t, z in sorted(snap.spot_history)]
    pools.append(model.Pool("m5.large", "us-east-1a", model.Market.ON_DEMAND))
    probs = risk.interruption_probability(pools, snap, cat, now)
    assert len(probs) == len(pools)
    assert probs[-1] == 0.0
    assert all(0.0 <= p <= 1.0 for p in probs)
    # the same pools through the training path
    ev, _first, _last = inputs.load_prices([inputs.bundled_path(risk_cli.BUNDLED_PRICES)])
    adv = inputs.load_advisor_snapshots([inputs.bundled_path(risk_cli.BUNDLED_ADVISOR)])
    t = now.timestamp() / 3600.0
    static = dataset.static_for(ev, cat, dataset.advisor_in_force(adv, t))
    pool_idx = np.arange(ev.n_pools, dtype=np.int64)
    x = features.feature_matrix(ev, static, pool_idx, np.full(ev.n_pools, t))
    expected = dict(
        zip(zip(ev.types, ev.zones, strict=True), risk.predict_features(x), strict=True)
    )
    got = dict(zip([(p.instance_type, p.zone) for p in pools[:-1]], probs[:-1], strict=True))
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), atol=1e-6)
    # a calibrated model of a rare event: mean probability near the base rate
    assert 0.001 < float(np.mean(probs[:-1])) < 0.05


def test_metrics_agree_with_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.02).astype(float)
    p = np.clip(0.02 + 0.1 * y * rng.random(5000) + 0.01 * rng.standard_normal(5000), 0, 1)
    p = np.round(p, 3)  # ties
    assert metrics.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert metrics.average_precision(y, p) == pytest.approx(average_precision_score(y, p))
    assert metrics.brier(y, p) == pytest.approx(brier_score_loss(y, p))


def test_planner_decide_uses_the_model() -> None:
    from spotfleet_engine import planner

    risk = xgb.load_bundled()
    now = datetime(2021, 5, 12, 6, tzinfo=UTC)
    snap = market.snapshot_at(market.load_bundled_history(), now)
    cat = catalog.load_bundled().restricted_to({t for t, _ in snap.spot_history})
    pol = model.Policy(region="us-east-1", target=64.0, unit=model.CapacityUnit.VCPU, min_pools=3)
    result = planner.decide(pol, cat, snap, model.Fleet(), risk, now)
    assert result.targets, result
    spot = [p for p in result.targets if p.market is model.Market.SPOT]
    assert len(spot) >= 3
    probs = risk.interruption_probability(spot, snap, cat, now)
    assert all(0.0 <= p < 0.5 for p in probs)


def test_pools_without_enough_history_get_the_advisor_band_probability() -> None:
    """Spot pools absent from the snapshot, or whose history starts less than
    ``min_history_hours`` before now, are scored by their advisor band."""
    from spotfleet_engine.risk import advisor

    risk = xgb.load_bundled()
    now = datetime(2021, 5, 12, 6, tzinfo=UTC)
    hist = market.load_bundled_history()
    snap = market.snapshot_at(hist, now, lookback=timedelta(days=7))
    cat = catalog.load_bundled("us-east-1")
    priced = {(p.instance_type, p.zone) for p, _ in snap.spot_pools()}
    unpriced = sorted(
        model.Pool(t, z, model.Market.SPOT)
        for t, zones in cat.zones.items()
        for z in zones
        if (t, z) not in priced
    )
    assert len(unpriced) > 1000
    unlisted = model.Pool("zz9.fictional", "us-east-1a", model.Market.SPOT)
    probs = risk.interruption_probability([*unpriced, unlisted], snap, cat, now)

    def band_p(itype: str) -> float:
        entry = snap.advisor.get(itype)
        band = entry.band if entry is not None else advisor.UNKNOWN_BAND
        return advisor.band_probability(band, risk.horizon_hours)

    assert probs == [band_p(p.instance_type) for p in [*unpriced, unlisted]]
    assert probs[-1] == advisor.band_probability(advisor.UNKNOWN_BAND, 24.0)
    # the same as the advisor-band model for those pools
    assert probs == advisor.AdvisorBandRisk().interruption_probability(
        [*unpriced, unlisted], snap, cat, now
    )
    # every catalog spot pool: the mean is near the base rate now (was 0.22 when the
    # unpriced pools were scored from static features alone)
    every = sorted(
        model.Pool(t, z, model.Market.SPOT) for t, zones in cat.zones.items() for z in zones
    )
    mean_all = float(np.mean(risk.interruption_probability(every, snap, cat, now)))
    assert 0.001 < mean_all < 0.02

    # histories cut to their last 12 h (new pools, or a source that omits the price in
    # force at the window start): prices known for < 24 h -> all advisor bands; with
    # min_history_hours=0 the model scores them (different numbers)
    cut = now - timedelta(hours=12)
    short_hist = {
        k: kept
        for k, h in snap.spot_history.items()
        if (kept := tuple(pp for pp in h if pp.at > cut))
    }
    assert len(short_hist) > 100
    short = market.MarketSnapshot("us-east-1", now, short_hist, advisor=snap.advisor)
    pools = [p for p, _ in short.spot_pools()]
    short_probs = risk.interruption_probability(pools, short, cat, now)
    assert short_probs == [band_p(p.instance_type) for p in pools]
    eager = xgb.XGBoostRisk(risk.artifact, min_history_hours=0.0)
    eager_probs = eager.interruption_probability(pools, short, cat, now)
    assert eager_probs != short_probs
    # a 7-day snapshot: every priced pool has a week of history -> the model
    week = [p for p, _ in snap.spot_pools()]
    week_probs = risk.interruption_probability(week, snap, cat, now)
    assert sum(p != band_p(q.instance_type) for p, q in zip(week_probs, week, strict=True)) > (
        0.99 * len(week)
    )
