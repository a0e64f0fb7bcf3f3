"""Value types: Requirements matching, Policy validation, Fleet helpers, Plan rendering,
and the advisor-band risk model."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from spotfleet_engine import catalog, market, model, plan
from spotfleet_engine.risk import AdvisorBandRisk, RiskModel, advisor

NOW = datetime(2021, 4, 15, tzinfo=UTC)


def it(name: str) -> model.InstanceType:
    return catalog.load_bundled().types[name]


def test_requirements_bounds_and_flags() -> None:
    r = model.Requirements(vcpu_min=2, vcpu_max=8, memory_gib_min=4, memory_per_vcpu_min=3.9)
    assert r.matches(it("m5.large"))  # 2 vCPU, 8 GiB
    assert not r.matches(it("c5.large"))  # 2 vCPU, 4 GiB: 2 GiB/vCPU
    assert not r.matches(it("m5.4xlarge"))  # 16 vCPU
    assert model.Requirements(burstable="only").matches(it("t3.micro"))
    assert not model.Requirements(burstable="only").matches(it("m5.large"))
    assert not model.Requirements(burstable="exclude").matches(it("t3.micro"))
    assert model.Requirements(gpu_min=1).matches(it("p3.2xlarge"))
    assert not model.Requirements(gpu_max=0).matches(it("p3.2xlarge"))
    assert not model.Requirements(architectures=frozenset({"arm64"})).matches(it("m5.large"))
    assert not model.Requirements(current_generation_only=True).matches(it("m1.small"))
    assert not model.Requirements(exclude_bare_metal=True).matches(it("m5.metal"))


def test_requirements_wildcards() -> None:
    fam = model.Requirements(allowed_families=frozenset({"m5*"}))
    assert fam.matches(it("m5.large")) and fam.matches(it("m5a.large"))
    assert fam.matches(it("m5dn.xlarge")) and not fam.matches(it("m6i.large"))
    types = model.Requirements(allowed_types=frozenset({"c5.*", "r5.large"}))
    assert types.matches(it("c5.9xlarge")) and types.matches(it("r5.large"))
    assert not types.matches(it("c5a.large")) and not types.matches(it("r5.xlarge"))
    both = model.Requirements(
        allowed_families=frozenset({"m5*"}), excluded_types=frozenset({"*.metal", "m5a.*"})
    )
    assert both.matches(it("m5.large"))
    assert not both.matches(it("m5.metal")) and not both.matches(it("m5a.large"))
    assert not model.Requirements(excluded_families=frozenset({"t?"})).matches(it("t2.micro"))


def test_policy_problems() -> None:
    ok = model.Policy(region="us-east-1", target=10)
    assert ok.problems() == []
    bad = model.Policy(
        region="us-east-1",
        target=10,
        min_capacity=20,
        on_demand_percentage_above_base=101,
        min_pools=0,
        max_pool_share_pct=0,
        horizon_hours=0,
        budget_per_hour=-1,
    )
    text = "; ".join(bad.problems())
    for name in (
        "minCapacity",
        "onDemandPercentageAboveBase",
        "minPools",
        "maxPoolSharePercent",
        "horizonHours",
        "budgetPerHour",
    ):
        assert name in text


def test_fleet_helpers() -> None:
    a = model.Pool("m5.large", "us-east-1a", model.Market.SPOT)
    b = model.Pool("m5.large", "us-east-1b", model.Market.ON_DEMAND)
    fleet = model.Fleet(
        (
            model.FleetInstance("i-1", a, NOW),
            model.FleetInstance("i-2", b, NOW),
            model.FleetInstance("i-3", a, NOW),
        ),
        replacements_last_hour=2,
    )
    assert fleet.count_by_pool() == {a: 2, b: 1}
    assert [i.instance_id for i in fleet.by_pool()[a]] == ["i-1", "i-3"]
    assert model.Fleet().count_by_pool() == {}


def test_money_and_plan_rendering() -> None:
    assert plan.money(1.2) == "1.20"
    assert plan.money(0.0016) == "0.0016"
    assert plan.money(12.3456789) == "12.345679"
    a = model.Pool("m5.large", "us-east-1a", model.Market.SPOT)
    b = model.Pool("c5.large", "us-east-1b", model.Market.ON_DEMAND)
    p = plan.Plan(
        outcome="Optimal",
        unit=model.CapacityUnit.VCPU,
        target=6,
        targets={a: 2, b: 1},
        launches=(plan.Launch(a, 2), plan.Launch(b, 1)),
        cost_per_hour=0.165,
        expected_cost_per_hour=0.17,
        on_demand_equivalent_per_hour=0.277,
        capacity_by_market={model.Market.SPOT: 4.0, model.Market.ON_DEMAND: 2.0},
    )
    assert p.capacity == 6.0
    assert p.spot_share_pct == pytest.approx(100 * 4 / 6)
    assert p.savings_pct == pytest.approx(100 * (1 - 0.165 / 0.277))
    d = json.loads(json.dumps(p.to_dict()))
    assert d["targets"] == {"c5.large/us-east-1b/on-demand": 1, "m5.large/us-east-1a/spot": 2}
    assert d["costPerHour"] == "0.165"
    assert d["capacityByMarket"] == {"on-demand": 2.0, "spot": 4.0}
    # the hash depends on target counts only, not on their order or on prices
    q = plan.Plan(outcome="Feasible", unit=model.CapacityUnit.VCPU, target=6, targets={b: 1, a: 2})
    assert p.plan_hash() == q.plan_hash()
    r = plan.Plan(outcome="Optimal", unit=model.CapacityUnit.VCPU, target=6, targets={a: 3})
    assert r.plan_hash() != p.plan_hash()
    assert "launch 3" in p.summary()


def test_advisor_band_probabilities() -> None:
    probs = [advisor.band_probability(b, 24.0) for b in range(5)]
    assert probs == sorted(probs) and len(set(probs)) == 5
    assert probs[0] == pytest.approx(1 - (1 - 0.025) ** (24 / 730))
    assert probs[4] == pytest.approx(1 - 0.75 ** (24 / 730))
    # a month-long horizon gives back the band's monthly rate
    assert advisor.band_probability(2, 730.0) == pytest.approx(0.125)
    assert advisor.band_probability(1, 48.0) > advisor.band_probability(1, 24.0)


def test_advisor_band_risk_model() -> None:
    snap = market.snapshot_at(market.load_bundled_history(), NOW, lookback=timedelta(hours=1))
    cat = catalog.load_bundled()
    risk = AdvisorBandRisk(horizon_hours=24.0)
    assert isinstance(risk, RiskModel)
    band = snap.advisor["m5.large"].band
    pools = [
        model.Pool("m5.large", "us-east-1a", model.Market.SPOT),
        model.Pool("m5.large", "us-east-1b", model.Market.SPOT),
        model.Pool("m5.large", "us-east-1a", model.Market.ON_DEMAND),
        model.Pool("m7i.large", "us-east-1a", model.Market.SPOT),  # not in the 2021 advisor
    ]
    got = risk.interruption_probability(pools, snap, cat, NOW)
    assert got[0] == got[1] == pytest.approx(advisor.band_probability(band, 24.0))
    assert got[2] == 0.0
    assert got[3] == pytest.approx(advisor.band_probability(advisor.UNKNOWN_BAND, 24.0))
    assert all(0.0 <= p <= 1.0 and not math.isnan(p) for p in got)
