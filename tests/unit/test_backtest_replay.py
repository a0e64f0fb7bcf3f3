"""Replay properties on the real bundled 2021 history: no strategy sees the
future, the oracle is never beaten, and every strategy meets the same reclaims."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spotfleet_engine import backtest, catalog, market, model, strategies
from spotfleet_engine.backtest import interruptions, prices, report
from spotfleet_engine.risk import advisor, xgb

START = datetime(2021, 3, 10, tzinfo=UTC)
CAT = catalog.load_bundled("us-east-1")
ADV = market.load_bundled_advisor("us-east-1")

SMALL = model.Policy(
    region="us-east-1",
    target=24,
    zones=("us-east-1a", "us-east-1b", "us-east-1c"),
    requirements=model.Requirements(
        allowed_families=frozenset({"m5", "m5a", "m5d"}), vcpu_min=2, vcpu_max=8
    ),
    objective="balanced",
    min_pools=2,
    max_pool_share_pct=50,
)
WITH_OD = model.Policy(
    region="us-east-1",
    target=40,
    requirements=model.Requirements(
        allowed_families=frozenset({"c5", "c5a", "c5d"}), vcpu_min=2, vcpu_max=16
    ),
    on_demand_base=8,
    on_demand_percentage_above_base=20,
    min_pools=3,
    max_pool_share_pct=40,
)
# frequent reclaims so the properties are exercised on interrupted fleets
STORMY = interruptions.InterruptionConfig(seed=3, hazard_scale=300.0, drought_hours=3.0)


@functools.lru_cache(maxsize=1)
def _history() -> market.PriceHistory:
    return market.load_bundled_history()


@functools.lru_cache(maxsize=1)
def _xgb() -> xgb.XGBoostRisk:
    return xgb.load_bundled()


def _strategies(risk: object) -> list[strategies.Strategy]:
    r = risk  # type: ignore[assignment]
    return [*strategies.baselines(r), strategies.Spotfleet(r)]  # type: ignore[arg-type]


def _perturbed(hist: market.PriceHistory, cut: int, seed: int) -> market.PriceHistory:
    """Same history up to ``cut``; after it every price is scaled randomly and
    extra price changes are inserted."""
    rng = np.random.default_rng(seed)
    out: dict[tuple[str, str], market.PoolSeries] = {}
    for key, s in hist.series.items():
        t, p = s.times.copy(), s.prices.copy()
        after = t > cut
        p[after] = p[after] * rng.uniform(0.2, 3.0, size=int(after.sum()))
        extra_t = np.asarray([cut + 600, cut + 7200], dtype=np.int64)
        extra_p = rng.uniform(0.001, 2.0, size=2)
        order = np.argsort(np.concatenate((t, extra_t)), kind="stable")
        tt = np.concatenate((t, extra_t))[order]
        pp = np.concatenate((p, extra_p))[order]
        keep = np.concatenate((tt[1:] != tt[:-1], [True]))
        out[key] = market.PoolSeries(times=tt[keep], prices=pp[keep])
    return market.PriceHistory(hist.region, out, hist.start, hist.end)


def test_snapshots_hold_no_price_after_now() -> None:
    grid = prices.decision_grid(START, START + timedelta(hours=30), timedelta(hours=1))
    u = prices.build_universe(SMALL, CAT, _history(), grid)
    for k in range(u.decisions):
        snap = u.snapshot(k, {}, frozenset())
        now = u.time(k)
        assert snap.spot_history, "the market must not be empty"
        for pts in snap.spot_history.values():
            assert pts[-1].at <= now
        # the current price is the one in force at now
        for pool, curve in zip(u.spot, u.curves, strict=True):
            got = snap.spot_price(pool.instance_type, pool.zone)
            assert got == curve.price_at(int(u.grid[k]))


@pytest.mark.parametrize("risk_name", ["advisor", "xgboost"])
def test_no_strategy_sees_future_prices(risk_name: str) -> None:
    risk = advisor.AdvisorBandRisk() if risk_name == "advisor" else _xgb()
    end = START + timedelta(hours=36)
    cut = int((START + timedelta(hours=18, minutes=30)).timestamp())
    kw = {
        "start": START,
        "end": end,
        "advisor": ADV,
        "config": STORMY,
        "record_actions": True,
    }
    a = backtest.run(SMALL, CAT, _history(), _strategies(risk), **kw)  # type: ignore[arg-type]
    b = backtest.run(
        SMALL,
        CAT,
        _perturbed(_history(), cut, seed=1),
        _strategies(risk),
        **kw,  # type: ignore[arg-type]
    )
    n_before = sum(1 for t in a.grid[:-1] if t <= cut)
    assert 0 < n_before < len(a.grid) - 1
    for sa, sb in zip(a.strategies, b.strategies, strict=True):
        assert sa.actions[:n_before] == sb.actions[:n_before], sa.name
        # billing up to the cut only depends on the past too
        assert sa.billed_k[: n_before - 1] == pytest.approx(sb.billed_k[: n_before - 1])
    # the perturbation is real: the clairvoyant oracle's costs after the cut differ
    assert a.oracle is not None and b.oracle is not None
    assert a.oracle.billed_k[n_before:] != pytest.approx(b.oracle.billed_k[n_before:])
    assert any(sa.actions for sa in a.strategies)


@pytest.mark.parametrize(
    ("policy", "config", "stormy"),
    [
        (SMALL, interruptions.InterruptionConfig(seed=0), False),
        (SMALL, STORMY, True),
        (WITH_OD, STORMY, True),
        (
            WITH_OD,
            interruptions.InterruptionConfig(seed=7, hazard_scale=600.0, share_min=1.0),
            True,
        ),
    ],
)
def test_the_oracle_is_never_beaten(
    policy: model.Policy, config: interruptions.InterruptionConfig, stormy: bool
) -> None:
    risk = advisor.AdvisorBandRisk()
    res = backtest.run(
        policy,
        CAT,
        _history(),
        _strategies(risk),
        start=START,
        end=START + timedelta(hours=48),
        advisor=ADV,
        config=config,
    )
    assert res.oracle is not None
    orc = res.oracle.penalised_k(res.scoring, res.ref_unit_od)
    total_interruptions = 0.0
    for s in res.strategies:
        mine = s.penalised_k(res.scoring, res.ref_unit_od)
        assert np.all(orc <= mine + 1e-9), (s.name, float(np.max(orc - mine)))
        assert (
            res.oracle.penalised(res.scoring, res.ref_unit_od)
            <= s.penalised(res.scoring, res.ref_unit_od) + 1e-9
        )
        total_interruptions += s.interruptions
    if stormy:
        assert total_interruptions > 0, "the stormy runs must actually interrupt someone"


def test_same_seed_same_stream_for_every_strategy() -> None:
    hist = _history()
    grid = prices.decision_grid(START, START + timedelta(days=4), timedelta(hours=1))
    u1 = prices.build_universe(SMALL, CAT, hist, grid)
    u2 = prices.build_universe(SMALL, CAT, hist, grid)

    def adv(k: int) -> dict[str, market.AdvisorEntry]:
        return dict(ADV.at(u1.time(k)))

    a = interruptions.simulate(u1, adv, STORMY)
    b = interruptions.simulate(u2, adv, STORMY)
    assert a.reclaims == b.reclaims and len(a.reclaims) > 0
    other_seed = interruptions.InterruptionConfig(seed=4, hazard_scale=300.0, drought_hours=3.0)
    assert interruptions.simulate(u1, adv, other_seed).reclaims != a.reclaims
    # a pool's stream does not depend on which other pools the policy admits
    wide = model.Policy(
        region="us-east-1",
        target=24,
        requirements=model.Requirements(
            allowed_families=frozenset({"m5", "m5a", "m5d", "r5"}), vcpu_min=2, vcpu_max=8
        ),
    )
    uw = prices.build_universe(wide, CAT, hist, grid)
    assert len(uw.spot) > len(u1.spot)
    w = interruptions.simulate(uw, adv, STORMY)
    key = {p.key() for p in u1.spot}
    mine = [(r.at, u1.spot[r.pool].key(), r.share) for r in a.reclaims]
    theirs = [
        (r.at, uw.spot[r.pool].key(), r.share) for r in w.reclaims if uw.spot[r.pool].key() in key
    ]
    assert mine == theirs
    # two identical strategies under different names meet identical reclaims
    risk = advisor.AdvisorBandRisk()
    res = backtest.run(
        SMALL,
        CAT,
        hist,
        [strategies.LowestPrice(risk), strategies.LowestPrice(risk, name="lowest-price-2")],
        start=START,
        end=START + timedelta(days=2),
        advisor=ADV,
        config=STORMY,
        oracle=False,
    )
    x, y = res.strategies
    assert x.interruptions > 0
    assert x.interruptions_k == y.interruptions_k
    assert x.billed_k == y.billed_k and x.shortfall_k == y.shortfall_k


def test_hazard_rate_matches_the_advisor_band_mapping() -> None:
    cfg = interruptions.InterruptionConfig(hazard_scale=50.0, spike_reclaim_probability=0.0)
    # band 0 (<5%): f = 2.5%/month -> -ln(0.975)/730 per instance-hour, / mean share 0.625
    assert interruptions.band_event_rate(0, interruptions.InterruptionConfig()) == pytest.approx(
        -np.log(1 - 0.025) / 730 / 0.625
    )
    grid = prices.decision_grid(START, START + timedelta(days=20), timedelta(hours=1))
    u = prices.build_universe(SMALL, CAT, _history(), grid)

    def adv(k: int) -> dict[str, market.AdvisorEntry]:
        return dict(ADV.at(u.time(k)))

    ev = interruptions.simulate(u, adv, cfg)
    expected = 0.0
    for pool in u.spot:
        entry = adv(0).get(pool.instance_type)
        band = entry.band if entry is not None else interruptions.UNKNOWN_BAND
        expected += interruptions.band_event_rate(band, cfg) * (u.decisions)
    got = ev.counts_by_source().get("hazard", 0)
    assert abs(got - expected) < 5 * np.sqrt(expected), (got, expected)
    # reclaimed pools are dry for drought_hours
    for r in ev.reclaims[:20]:
        k = int(np.searchsorted(u.grid, r.at, side="right"))
        if k < u.decisions and u.grid[k] < r.at + cfg.drought_hours * 3600:
            assert u.spot[r.pool] in ev.unavailable[k]


def test_report_has_every_figure_and_a_sensitivity_table() -> None:
    risk = advisor.AdvisorBandRisk()
    res = backtest.run(
        SMALL,
        CAT,
        _history(),
        _strategies(risk),
        start=START,
        end=START + timedelta(hours=24),
        advisor=ADV,
        config=STORMY,
    )
    doc = report.to_dict(res)
    names = [r["strategy"] for r in doc["strategies"]]
    assert names == [
        "on-demand",
        "lowest-price",
        "capacity-optimized",
        "price-capacity-optimized",
        "diversified",
        "spotfleet",
        "oracle",
    ]
    od = doc["strategies"][0]
    assert od["savings_pct"] == 0.0 and od["interruptions"] == 0
    for r in doc["strategies"]:
        assert r["penalised_cost"] >= r["cost"] - 1e-6
    # regret: relative to the best baseline (not spotfleet, not the oracle) and the oracle
    by = {r["strategy"]: r for r in doc["strategies"]}
    baselines = [n for n in names if n not in ("spotfleet", "oracle")]
    best = min(baselines, key=lambda n: by[n]["penalised_cost"])
    assert by[best]["regret_to_best_baseline_pct"] == 0.0
    assert all(by[n]["regret_to_best_baseline_pct"] >= 0 for n in baselines)
    assert by["oracle"]["regret_to_oracle_pct"] == 0.0
    for r in doc["strategies"]:
        assert r["regret_to_oracle_pct"] >= -1e-9  # the oracle is never beaten
        want = 100 * (r["penalised_cost"] / by[best]["penalised_cost"] - 1)
        cents = 100 * 0.01 / by[best]["penalised_cost"]  # both costs are rounded to cents
        assert abs(r["regret_to_best_baseline_pct"] - want) <= cents * (1 + want / 100) + 1e-3
    assert len(doc["sensitivity"]) == 9
    assert all(len(s["ranking"]) == 6 for s in doc["sensitivity"])
    assert len(doc["timeline"]["t"]) == 24


class _Recorder:
    """lowest-price, remembering which advisor each decision was shown."""

    def __init__(self) -> None:
        self.inner = strategies.LowestPrice(advisor.AdvisorBandRisk())
        self.risk = self.inner.risk
        self.name = "recorder"
        self.seen: list[tuple[datetime, int]] = []

    def decide(self, policy, catalog, market, fleet, risk, now):  # type: ignore[no-untyped-def]
        self.seen.append((now, len(market.advisor)))
        return self.inner.decide(policy, catalog, market, fleet, risk, now)


def test_no_decision_sees_an_advisor_snapshot_dated_after_it() -> None:
    """A snapshot dated mid-window is in force from its day on; before it none is
    (the replay used to hand the earliest snapshot to every earlier hour), and the
    report says which was in force when."""
    day = datetime(2021, 3, 11, tzinfo=UTC)
    one = market.AdvisorHistory("us-east-1", ((day.date(), ADV.snapshots[0][1]),))
    rec = _Recorder()
    res = backtest.run(
        SMALL,
        CAT,
        _history(),
        [rec],  # type: ignore[list-item]
        start=START,
        end=START + timedelta(hours=48),
        advisor=one,
        config=interruptions.InterruptionConfig(seed=0),
        oracle=False,
    )
    assert len(rec.seen) == 48
    for now, n in rec.seen:
        assert (n > 0) == (now >= day), now
    assert report.advisor_in_force(res) == [
        {
            "snapshot": None,
            "from": START.isoformat(),
            "to": day.isoformat(),
            "decisions": 24,
        },
        {
            "snapshot": "2021-03-11",
            "from": day.isoformat(),
            "to": (START + timedelta(hours=48)).isoformat(),
            "decisions": 24,
        },
    ]
    notes = report.to_dict(res)["notes"]
    assert notes[0].startswith("no advisor snapshot") and notes[1].startswith(
        "advisor snapshot 2021-03-11"
    )
