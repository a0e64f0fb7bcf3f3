"""Billing is exact on a hand-computed tiny history (per second, real price path)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spotfleet_engine import backtest, catalog, market, model, plan, strategies
from spotfleet_engine.backtest import interruptions, prices, report, traces
from spotfleet_engine.risk import advisor

T0 = datetime(2021, 1, 1, tzinfo=UTC)
NO_RECLAIMS = interruptions.InterruptionConfig(hazard_scale=0.0, spike_reclaim_probability=0.0)


def _rows(points: list[tuple[int, float]]) -> list[dict[str, str]]:
    return [
        {
            "timestamp": (T0 + timedelta(seconds=s)).isoformat(),
            "availability_zone": "us-east-1a",
            "instance_type": "m5.large",
            "product_description": "Linux/UNIX",
            "spot_price": f"{p:.4f}",
        }
        for s, p in points
    ]


# 00:00 0.10, 00:30 0.20, 01:15 0.05 (USD/h)
HISTORY = prices.history_from_rows(_rows([(0, 0.10), (1800, 0.20), (4500, 0.05)]))
POLICY = model.Policy(
    region="us-east-1",
    target=4,  # vCPU: two m5.large
    zones=("us-east-1a",),
    requirements=model.Requirements(allowed_types=frozenset({"m5.large"})),
)
CAT = catalog.load_bundled("us-east-1")
ADV = market.load_bundled_advisor("us-east-1")
OD = CAT.on_demand_usd_per_hour["m5.large"]


def _run(end_h: float, config: interruptions.InterruptionConfig, trace=()):  # type: ignore[no-untyped-def]
    return backtest.run(
        POLICY,
        CAT,
        HISTORY,
        [strategies.LowestPrice(advisor.AdvisorBandRisk())],
        start=T0,
        end=T0 + timedelta(hours=end_h),
        advisor=ADV,
        config=config,
        traces=trace,
    )


def test_billing_per_second_matches_hand_computation() -> None:
    res = _run(2.0, NO_RECLAIMS)
    s = res.by_name("lowest-price")
    per_instance_h1 = 0.5 * 0.10 + 0.5 * 0.20  # 00:00-01:00
    per_instance_h2 = 0.25 * 0.20 + 0.75 * 0.05  # 01:00-02:00
    assert s.billed_k == pytest.approx([2 * per_instance_h1, 2 * per_instance_h2], abs=1e-12)
    assert s.billed == pytest.approx(2 * (per_instance_h1 + per_instance_h2), abs=1e-12)
    assert s.on_demand_equivalent == pytest.approx(2 * 2 * OD, abs=1e-12)
    assert s.interruptions == 0 and s.shortfall_unit_h == 0 and s.replacements == 0
    assert s.penalised(res.scoring, res.ref_unit_od) == pytest.approx(s.billed)


def test_reclaim_billing_shortfall_and_penalty_by_hand() -> None:
    # a real-availability trace for the pool: outage from 01:30 to 01:45, taking
    # every instance (share 1); relaunch at the 02:00 decision
    tr = traces.AvailabilityTrace("test", "m5.large", "us-east-1a", 10 * 3600, ((5400, 6300),))
    cfg = interruptions.InterruptionConfig(
        hazard_scale=0.0, spike_reclaim_probability=0.0, share_min=1.0, share_max=1.0
    )
    res = _run(3.0, cfg, (tr,))
    s = res.by_name("lowest-price")
    until_reclaim = 0.5 * 0.10 + 0.75 * 0.20 + 0.25 * 0.05
    after_relaunch = 1.0 * 0.05
    assert s.billed == pytest.approx(2 * (until_reclaim + after_relaunch), abs=1e-12)
    assert s.interruptions == 2
    assert s.replacements == 2
    assert s.shortfall_unit_h == pytest.approx(4 * 0.5)  # 4 vCPU missing 01:30-02:00
    assert s.on_demand_equivalent == pytest.approx(2 * OD * (1.5 + 1.0))
    assert res.ref_unit_od == pytest.approx(OD / 2)
    expected = s.billed + 1.0 * 2 * OD + 3.0 * (OD / 2) * 2.0
    assert s.penalised(res.scoring, res.ref_unit_od) == pytest.approx(expected)
    assert res.reclaims_by_source == {"trace": 1}


@dataclass(frozen=True)
class _Stubborn:
    """Always tops up in the one spot pool, ignoring what the market says is dry."""

    risk: advisor.AdvisorBandRisk = field(default_factory=advisor.AdvisorBandRisk)
    name: str = "stubborn"

    def decide(self, policy, catalog, market, fleet, risk, now):  # type: ignore[no-untyped-def]
        pool = model.Pool("m5.large", "us-east-1a", model.Market.SPOT)
        missing = 2 - len(fleet.instances)
        launches = (plan.Launch(pool, missing),) if missing > 0 else ()
        return plan.Plan("Feasible", policy.unit, policy.target, {pool: 2}, launches=launches)


def test_launch_into_a_dry_pool_fails_until_capacity_returns() -> None:
    # outage 00:30-01:30 covers the 01:00 decision: the relaunch fails then, succeeds at 02:00
    tr = traces.AvailabilityTrace("test", "m5.large", "us-east-1a", 10 * 3600, ((1800, 5400),))
    cfg = interruptions.InterruptionConfig(
        hazard_scale=0.0, spike_reclaim_probability=0.0, share_min=1.0, share_max=1.0
    )
    res = backtest.run(
        POLICY,
        CAT,
        HISTORY,
        [_Stubborn(), strategies.LowestPrice(advisor.AdvisorBandRisk())],
        start=T0,
        end=T0 + timedelta(hours=3),
        advisor=ADV,
        config=cfg,
        traces=(tr,),
    )
    s = res.by_name("stubborn")
    assert s.failed_launches == 2
    assert s.shortfall_unit_h == pytest.approx(4 * 1.5)  # 00:30-02:00
    assert s.billed == pytest.approx(2 * (0.5 * 0.10 + 1.0 * 0.05), abs=1e-12)
    # the baseline sees the pool is dry at 01:00 and launches nothing there; the policy
    # allows no on-demand, so (like EC2 Fleet and spotfleet) the capacity stays missing
    # until 02:00, when it relaunches into the pool (it fell back to on-demand once)
    lp = res.by_name("lowest-price")
    assert lp.failed_launches == 0
    assert lp.shortfall_unit_h == pytest.approx(4 * 1.5)  # 00:30-02:00
    assert lp.billed == pytest.approx(2 * (0.5 * 0.10 + 1.0 * 0.05), abs=1e-12)
    assert lp.on_demand_equivalent == pytest.approx(2 * OD * 1.5, abs=1e-12)


def test_history_from_rows_rejects_mixed_regions_and_empty_input() -> None:
    rows = _rows([(0, 0.1)])
    other = dict(rows[0], availability_zone="us-west-2a")
    with pytest.raises(ValueError, match="more than one region"):
        prices.history_from_rows([rows[0], other])
    with pytest.raises(ValueError, match="no usable"):
        prices.history_from_rows([])


def test_history_from_rows_drops_unusable_prices_and_counts_them() -> None:
    rows = _rows([(0, 0.10), (1800, 0.20), (4500, 0.05)])
    junk = ["-1.0", "0", "0.0000", "nan", "inf", "n/a", ""]
    bad = [
        dict(rows[0], timestamp=(T0 + timedelta(seconds=60 * k)).isoformat(), spot_price=p)
        for k, p in enumerate(junk, start=1)
    ]
    hist = prices.history_from_rows(rows + bad)
    s = hist.series[("m5.large", "us-east-1a")]
    assert s.prices.tolist() == [0.10, 0.20, 0.05]  # only the usable rows
    assert hist.rejected_rows == {"zero or negative": 3, "not finite": 2, "not a number": 2}
    with pytest.raises(ValueError, match=r"no usable spot price rows \(7 price rows"):
        prices.history_from_rows(bad)
    assert market.load_bundled_history().rejected_rows == {}  # the bundled file is clean


def test_a_sentinel_price_cannot_make_a_bill_negative() -> None:
    """A ``-1.0`` row (a feed's "no data") between real prices was taken as the price
    in force: the oracle bought it and its bill went negative. It is dropped (the
    previous price stays in force), counted, and the report says so."""
    points = [(0, 0.10), (1800, 0.20), (3600, -1.0), (3 * 3600, 0.05)]
    hist = prices.history_from_rows(_rows(points))
    res = backtest.run(
        POLICY,
        CAT,
        hist,
        [strategies.LowestPrice(advisor.AdvisorBandRisk())],
        start=T0,
        end=T0 + timedelta(hours=4),
        advisor=ADV,
        config=NO_RECLAIMS,
    )
    assert res.oracle is not None
    assert min(res.oracle.billed_k) >= 0.0 and min(res.by_name("lowest-price").billed_k) >= 0.0
    # 0.10 for 30 min, 0.20 until 03:00 (the sentinel is gone), then 0.05: two instances
    expected = 2 * (0.5 * 0.10 + 2.5 * 0.20 + 1.0 * 0.05)
    assert res.by_name("lowest-price").billed == pytest.approx(expected, abs=1e-12)
    assert res.rejected_price_rows == {"zero or negative": 1}
    doc = report.to_dict(res)
    assert doc["rejected_price_rows"] == {"zero or negative": 1}
    assert any("dropped 1 price row" in line for line in doc["notes"])
    bad = market.PriceHistory(
        hist.region,
        {("m5.large", "us-east-1a"): market.PoolSeries(
            np.asarray([int(T0.timestamp())], dtype=np.int64), np.asarray([-1.0]))},
        hist.start,
        hist.end,
    )  # fmt: skip
    with pytest.raises(ValueError, match="not positive and finite"):
        prices.build_universe(
            POLICY, CAT, bad, prices.decision_grid(T0, T0 + timedelta(hours=1), timedelta(hours=1))
        )
