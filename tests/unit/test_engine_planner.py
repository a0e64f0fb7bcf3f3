"""planner.decide on real prices: the bundled 2021 us-east-1 history at 2021-04-15."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from spotfleet_engine import candidates, catalog, market, model, plan, planner
from spotfleet_engine.risk import advisor

NOW = datetime(2021, 4, 15, tzinfo=UTC)
VCPU = model.CapacityUnit.VCPU


@pytest.fixture(scope="module")
def snap() -> market.MarketSnapshot:
    return market.snapshot_at(market.load_bundled_history(), NOW, lookback=timedelta(days=1))


@pytest.fixture(scope="module")
def cat(snap: market.MarketSnapshot) -> catalog.Catalog:
    return catalog.load_bundled().restricted_to({t for t, _ in snap.spot_history})


RISK = advisor.AdvisorBandRisk()


def decide(
    pol: model.Policy,
    cat: catalog.Catalog,
    snap: market.MarketSnapshot,
    fleet: model.Fleet | None = None,
    **kw: object,
) -> plan.Plan:
    return planner.decide(pol, cat, snap, fleet or model.Fleet(), RISK, NOW, **kw)  # type: ignore[arg-type]


def policy(**kw: object) -> model.Policy:
    base: dict[str, object] = {"region": "us-east-1", "target": 64.0, "unit": VCPU}
    base.update(kw)
    return model.Policy(**base)  # type: ignore[arg-type]


def fleet_of(targets: dict[model.Pool, int], replacements: int = 0) -> model.Fleet:
    instances = []
    for pool, n in sorted(targets.items()):
        for k in range(n):
            instances.append(
                model.FleetInstance(f"i-{pool.key()}-{k}", pool, NOW - timedelta(hours=k + 1))
            )
    return model.Fleet(tuple(instances), replacements)


def price_of(cat: catalog.Catalog, snap: market.MarketSnapshot, pool: model.Pool) -> float:
    if pool.market is model.Market.ON_DEMAND:
        return cat.on_demand_usd_per_hour[pool.instance_type]
    price = snap.spot_price(pool.instance_type, pool.zone)
    assert price is not None
    return price


def units(cat: catalog.Catalog, p: plan.Plan, unit: model.CapacityUnit = VCPU) -> float:
    return sum(cat.types[pool.instance_type].units(unit) * n for pool, n in p.targets.items())


def test_plan_meets_target_at_real_prices(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    p = decide(policy(target=1000, max_pool_share_pct=25, min_pools=4), cat, snap)
    assert p.outcome == "Optimal"
    assert units(cat, p) >= 1000
    assert len(p.targets) >= 4
    cost = sum(price_of(cat, snap, pl) * n for pl, n in p.targets.items())
    assert p.cost_per_hour == pytest.approx(cost)
    od = sum(cat.on_demand_usd_per_hour[pl.instance_type] * n for pl, n in p.targets.items())
    assert p.on_demand_equivalent_per_hour == pytest.approx(od)
    assert 0 < p.savings_pct < 100
    assert sum(la.count for la in p.launches) == sum(p.targets.values())
    assert p.terminations == ()
    # explanation: every chosen pool with price, risk and share; three rejected with reasons
    assert {c.pool for c in p.explanation.chosen} == set(p.targets)
    assert sum(c.share_pct for c in p.explanation.chosen) == pytest.approx(100.0)
    assert all(c.share_pct <= 25.0 + 1e-9 for c in p.explanation.chosen)
    assert len(p.explanation.rejected) == 3
    assert all(r.pool not in p.targets and r.reason for r in p.explanation.rejected)


def test_decide_is_deterministic_and_serialisable(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    pol = policy(target=200, objective="balanced", min_pools=3, on_demand_base=8)
    a, b = decide(pol, cat, snap), decide(pol, cat, snap)
    assert a == b
    assert a.plan_hash() == b.plan_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", a.plan_hash())
    d = json.loads(json.dumps(a.to_dict()))
    assert d["planHash"] == a.plan_hash()
    assert d["outcome"] == a.outcome
    assert sum(d["targets"].values()) == sum(a.targets.values())
    assert re.fullmatch(r"\d+\.\d{2,6}", d["costPerHour"])


def test_unpruned_solve_finds_the_same_objective(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    for pol in (
        policy(target=64, objective="lowestCost", max_pool_share_pct=25, min_pools=4),
        policy(target=300, objective="lowestInterruption", min_pools=3),
        policy(target=500, objective="balanced", on_demand_percentage_above_base=20),
    ):
        pruned = decide(pol, cat, snap)
        full = decide(pol, cat, snap, options=planner.Options(prune=False, presolve=True))
        assert pruned.stats.pools_after_prune < full.stats.pools_after_prune
        assert pruned.expected_cost_per_hour == pytest.approx(full.expected_cost_per_hour, rel=2e-4)


def test_objective_weights_risk(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    cheap = decide(policy(target=400, objective="lowestCost"), cat, snap)
    safe = decide(policy(target=400, objective="lowestInterruption"), cat, snap)

    def mean_risk(p: plan.Plan) -> float:
        return sum(c.risk * c.units for c in p.explanation.chosen) / p.capacity

    assert mean_risk(safe) <= mean_risk(cheap)
    assert safe.cost_per_hour >= cheap.cost_per_hour


def test_target_one_instance(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    p = decide(policy(target=1, unit=model.CapacityUnit.INSTANCES), cat, snap)
    assert p.outcome == "Optimal"
    assert sum(p.targets.values()) == 1
    (pool,) = p.targets
    # the cheapest eligible instance in the whole region (lowestCost: expected cost only)
    best = min(
        snap.spot_price(t, z) or 0.0
        for (t, z) in snap.spot_history
        if t in cat.types and snap.spot_price(t, z)
    )
    assert p.cost_per_hour <= best * 1.5
    assert pool.market is model.Market.SPOT


def test_on_demand_base_equal_to_target(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    p = decide(policy(target=32, on_demand_base=32), cat, snap)
    assert p.outcome == "Optimal"
    assert p.capacity_by_market.get(model.Market.SPOT, 0.0) == 0.0
    assert p.capacity_by_market[model.Market.ON_DEMAND] >= 32
    assert p.savings_pct == pytest.approx(0.0)


def test_on_demand_percentage_above_base(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    p = decide(policy(target=200, on_demand_base=20, on_demand_percentage_above_base=50), cat, snap)
    od = p.capacity_by_market.get(model.Market.ON_DEMAND, 0.0)
    assert od >= 20 + 0.5 * (p.capacity - 20) - 1e-9
    assert p.capacity_by_market[model.Market.SPOT] > 0


def test_single_allowed_type(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    req = model.Requirements(allowed_types=frozenset({"c5.xlarge"}))
    p = decide(policy(target=40, requirements=req, min_pools=2), cat, snap)
    assert p.outcome == "Optimal"
    assert {pool.instance_type for pool in p.targets} == {"c5.xlarge"}
    assert units(cat, p) >= 40
    assert len(p.targets) >= 2


def test_wildcard_families_and_arch(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    # m5* matches m5, m5a, m5ad, m5d, m5dn, m5n; the 2021 history's only arm64 family is a1
    x86 = model.Requirements(
        allowed_families=frozenset({"m5*", "a1"}),
        excluded_types=frozenset({"*.large"}),
        architectures=frozenset({"x86_64"}),
    )
    p = decide(policy(target=64, min_pools=3), cat, snap)
    q = decide(policy(target=64, min_pools=3, requirements=x86), cat, snap)
    assert q.outcome == "Optimal"
    assert q.targets != p.targets
    for pool in q.targets:
        it = cat.types[pool.instance_type]
        assert it.family.startswith("m5") and it.arch == "x86_64"
        assert not pool.instance_type.endswith(".large")
    arm = decide(
        policy(target=64, requirements=model.Requirements(architectures=frozenset({"arm64"}))),
        cat,
        snap,
    )
    assert arm.targets
    assert {cat.types[pool.instance_type].family for pool in arm.targets} == {"a1"}


def test_all_pools_above_max_price_is_infeasible(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    fleet = fleet_of({model.Pool("m5.large", "us-east-1a", model.Market.SPOT): 2})
    p = decide(policy(target=64, max_spot_price_per_unit_hour=0.0001), cat, snap, fleet)
    assert p.outcome == "Infeasible"
    assert p.binding_constraint is not None
    assert "maxSpotPricePerUnitHour" in p.binding_constraint
    assert p.launches == () and p.terminations == ()
    assert p.targets == fleet.count_by_pool()  # infeasible: keep what runs, act on nothing
    assert p.explanation.rejected
    assert "Infeasible" in p.summary()


def test_budget_infeasible_names_cheapest_feasible(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    pol = policy(target=1000, on_demand_base=300, objective="balanced")
    p = decide(pol, cat, snap)
    assert p.outcome == "Optimal"
    too_low = round(p.cost_per_hour * 0.5, 2)
    infeasible = decide(replace(pol, budget_per_hour=too_low), cat, snap)
    assert infeasible.outcome == "Infeasible"
    assert infeasible.binding_constraint is not None
    m = re.fullmatch(
        r"budgetPerHour (\d+\.\d\d) < cheapest feasible (\d+\.\d\d)",
        infeasible.binding_constraint,
    )
    assert m is not None, infeasible.binding_constraint
    assert m.group(1) == f"{too_low:.2f}"
    cheapest = float(m.group(2))
    assert too_low < cheapest <= p.cost_per_hour + 0.005
    # the named figure is the real boundary: a budget just above it is feasible
    ok = decide(replace(pol, budget_per_hour=cheapest + 0.01), cat, snap)
    assert ok.outcome in ("Optimal", "Feasible")
    assert ok.cost_per_hour <= cheapest + 0.01
    # just below it the target cannot be paid for: without capacity.min the plan holds
    # the most the budget allows (half of it cannot even pay the on-demand base: above)
    below = decide(replace(pol, budget_per_hour=cheapest - 0.01), cat, snap)
    assert below.outcome == "Degraded" and below.binding is not None
    assert 300 <= below.capacity < 1000 and below.cost_per_hour <= cheapest - 0.01 + 1e-9


def test_budget_binds_cost_but_stays_feasible(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    req = model.Requirements(burstable="exclude")
    cheap = decide(policy(target=500, requirements=req), cat, snap)
    pol = policy(target=500, objective="lowestInterruption", requirements=req)
    free = decide(pol, cat, snap)
    assert free.cost_per_hour > cheap.cost_per_hour * 1.2  # risk costs money here
    budget = (free.cost_per_hour + cheap.cost_per_hour) / 2
    p = decide(replace(pol, budget_per_hour=budget), cat, snap)
    assert p.outcome == "Optimal"
    assert p.cost_per_hour <= budget + 1e-9
    assert units(cat, p) >= 500
    assert free.expected_cost_per_hour <= p.expected_cost_per_hour
    assert all(not cat.types[pool.instance_type].burstable for pool in p.targets)


def test_min_capacity_degrades_within_budget(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    p = decide(policy(target=1000, min_capacity=100, budget_per_hour=0.30), cat, snap)
    assert p.outcome == "Degraded"
    assert p.binding_constraint is not None and p.binding_constraint.startswith("budgetPerHour")
    assert 100 <= p.capacity < 1000
    assert p.cost_per_hour <= 0.30 + 1e-9


def test_no_matching_pool(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    req = model.Requirements(allowed_types=frozenset({"does-not-exist.*"}))
    p = decide(policy(requirements=req), cat, snap)
    assert p.outcome == "Infeasible"
    assert p.binding_constraint is not None and "instanceRequirements" in p.binding_constraint


def test_invalid_policy_is_reported_not_raised(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    p = decide(policy(on_demand_percentage_above_base=150, min_pools=0), cat, snap)
    assert p.outcome == "Infeasible"
    assert p.binding_constraint is not None
    assert "onDemandPercentageAboveBase" in p.binding_constraint
    assert "minPools" in p.binding_constraint


def test_share_cap_too_tight_for_one_type(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    req = model.Requirements(allowed_types=frozenset({"c5.xlarge"}))
    p = decide(
        policy(target=40, requirements=req, zones=("us-east-1a",), max_pool_share_pct=40), cat, snap
    )
    # one spot pool + one on-demand pool cannot each hold <= 40%
    assert p.outcome == "Infeasible"
    assert p.binding_constraint is not None and "maxPoolSharePercent" in p.binding_constraint


def test_unavailable_pool_is_avoided(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    pol = policy(target=16, unit=model.CapacityUnit.INSTANCES, max_pool_share_pct=100)
    first = decide(pol, cat, snap)
    (best,) = first.targets
    snap2 = market.MarketSnapshot(
        region=snap.region,
        observed_at=snap.observed_at,
        spot_history=snap.spot_history,
        advisor=snap.advisor,
        unavailable=frozenset({best}),
    )
    second = decide(pol, cat, snap2)
    assert best not in second.targets
    assert second.outcome == "Optimal"


def test_running_instances_in_an_unavailable_pool_are_kept_but_not_grown(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    """Out of capacity means no NEW instances there: what already runs is kept (it was
    a bug to terminate a healthy fleet as not-eligible after one capacity error)."""
    pol = policy(target=16, unit=model.CapacityUnit.INSTANCES, max_pool_share_pct=100)
    first = decide(pol, cat, snap)
    (best,) = first.targets
    dry = market.MarketSnapshot(
        region=snap.region,
        observed_at=snap.observed_at,
        spot_history=snap.spot_history,
        advisor=snap.advisor,
        unavailable=frozenset({best}),
    )
    same = decide(pol, cat, dry, fleet_of({best: 16}))
    assert same.terminations == () and same.launches == ()
    assert same.targets == {best: 16}
    bigger = decide(
        policy(target=24, unit=model.CapacityUnit.INSTANCES, max_pool_share_pct=100),
        cat,
        dry,
        fleet_of({best: 16}),
    )
    assert bigger.targets[best] == 16  # kept, never grown
    assert all(a.pool != best for a in bigger.launches)
    assert sum(bigger.targets.values()) >= 24
    assert bigger.terminations == ()


# --------------------------------------------------------------------------
# running fleets: NoChange, hysteresis, churn limit, scale-in, not-eligible
# --------------------------------------------------------------------------


def test_running_optimal_fleet_is_no_change(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    pol = policy(target=128, min_pools=3)
    first = decide(pol, cat, snap)
    again = decide(pol, cat, snap, fleet_of(dict(first.targets)))
    assert again.outcome == "NoChange"
    assert again.targets == first.targets
    assert again.launches == () and again.terminations == ()


def _worse_fleet(
    cat: catalog.Catalog, snap: market.MarketSnapshot, pol: model.Policy, factor: float
) -> tuple[dict[model.Pool, int], plan.Plan]:
    """A feasible running fleet whose expected cost is about ``factor`` x the optimum."""
    best = decide(pol, cat, snap)
    # the same type in the zone with the highest spot price, one pool per chosen pool
    worse: dict[model.Pool, int] = {}
    for pool, n in best.targets.items():
        zones = sorted(
            (snap.spot_price(pool.instance_type, z) or 0.0, z)
            for (t, z) in snap.spot_history
            if t == pool.instance_type
        )
        cand = [z for price, z in zones if price <= price_of(cat, snap, pool) * factor]
        worse[model.Pool(pool.instance_type, cand[-1], pool.market)] = n
    return worse, best


def test_hysteresis_keeps_fleet_when_saving_is_small(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    pol = policy(target=64, min_savings_pct=50.0, max_replacements_per_hour=100)
    worse, _ = _worse_fleet(cat, snap, pol, 1.3)
    p = decide(pol, cat, snap, fleet_of(worse))
    assert not any(t.reason == "rebalance" for t in p.terminations)
    assert all(p.targets.get(pool, 0) >= n for pool, n in worse.items())


def interruption_charge(
    cat: catalog.Catalog, pol: model.Policy, instance_type: str, r: float
) -> float:
    """USD per instance-hour the planner adds for risk ``r`` over the risk model's horizon,
    computed here independently: aversion x hourly hazard x (1 h of on-demand for lost
    work and relaunch + 0.5 h of the missing units at 3 x the cheapest on-demand unit price
    among the types the policy can buy on-demand: matching, priced, offered in one of its
    zones; a type the catalog lists no zones for is bought where it has spot prices, which
    here counts as offered when the policy names no zones)."""

    def buyable(t: str) -> bool:
        offered = cat.zones.get(t, frozenset())
        return not pol.zones or bool(offered & set(pol.zones))

    units = {
        t: it.units(pol.unit)
        for t, it in cat.types.items()
        if t in cat.on_demand_usd_per_hour
        and it.units(pol.unit) > 0
        and pol.requirements.matches(it)
        and buyable(t)
    }
    ref = min(cat.on_demand_usd_per_hour[t] / u for t, u in units.items())
    od = cat.on_demand_usd_per_hour[instance_type]
    hazard = -math.log(1.0 - r) / RISK.horizon_hours
    loss = candidates.LOST_WORK_HOURS * od + (
        candidates.REPLACEMENT_GAP_HOURS
        * candidates.SHORTFALL_MULTIPLE
        * ref
        * units[instance_type]
    )
    return candidates.RISK_AVERSION[pol.objective] * hazard * loss


def expected_cost(
    cat: catalog.Catalog,
    snap: market.MarketSnapshot,
    pol: model.Policy,
    counts: dict[model.Pool, int],
) -> float:
    """The planner's objective for a given set of counts, computed here independently."""
    pools = sorted(counts)
    risks = RISK.interruption_probability(pools, snap, cat, NOW)
    total = 0.0
    for pool, r in zip(pools, risks, strict=True):
        price = price_of(cat, snap, pool)
        total += (price + interruption_charge(cat, pol, pool.instance_type, r)) * counts[pool]
    return total


def test_rebalance_when_saving_beats_threshold(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    pol = policy(target=64, min_savings_pct=1.0, max_replacements_per_hour=1000)
    worse, best = _worse_fleet(cat, snap, pol, 3.0)
    assert worse != dict(best.targets)
    current = expected_cost(cat, snap, pol, worse)
    assert current > best.expected_cost_per_hour * 1.05
    p = decide(pol, cat, snap, fleet_of(worse))
    moved = [t for t in p.terminations if t.reason == "rebalance"]
    assert moved
    assert p.outcome == "Optimal"
    assert p.expected_cost_per_hour == pytest.approx(best.expected_cost_per_hour, rel=1e-3)
    assert p.expected_cost_per_hour == pytest.approx(expected_cost(cat, snap, pol, dict(p.targets)))
    assert any("rebalance saves" in n for n in p.explanation.notes)


class PoolRisk:
    """A risk model giving the pools in ``risks`` their probability over 24 h, others 0."""

    name = "pool-risk"
    horizon_hours = 24.0

    def __init__(self, risks: dict[model.Pool, float]) -> None:
        self.risks = risks

    def interruption_probability(
        self,
        pools: Sequence[model.Pool],
        market: market.MarketSnapshot,
        catalog: catalog.Catalog,
        now: datetime,
    ) -> list[float]:
        return [self.risks.get(p, 0.0) for p in pools]


def test_a_move_for_risk_alone_that_does_not_save_usd_is_not_taken(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    """``balanced`` counts an interruption 10 times its expected cost, so a move out of a
    somewhat risky pool into one of about the same price can pass minSavingsPercent on
    the objective while the USD it is expected to save (interruptions at their expected
    cost) does not cover the switch. Such a move is not taken (before: it was; the
    backtest's moves out of m4.10xlarge pools whose price then came back paid nothing)."""
    here = model.Pool("c5.large", "us-east-1c", model.Market.SPOT)  # $0.0370 at NOW
    there = model.Pool("c5.large", "us-east-1d", model.Market.SPOT)  # $0.0367
    p_here, p_there = price_of(cat, snap, here), price_of(cat, snap, there)
    d = p_here - p_there
    assert 0.0 <= d < 0.02 * p_here
    pol = policy(
        target=64,
        requirements=model.Requirements(allowed_types=frozenset({"c5.large"})),
        zones=("us-east-1c", "us-east-1d"),
        max_pool_share_pct=100.0,
        objective="balanced",
    )
    neutral = replace(pol, objective="lowestCost")
    # USD per instance-hour of risk: hazard x interruption cost, linear in the hazard
    per_hazard = interruption_charge(cat, neutral, "c5.large", 0.5) / (-math.log(0.5) / 24.0)

    def risk_for(charge: float) -> PoolRisk:
        """The risk model whose risky pool costs ``charge`` USD per hour in expectation."""
        return PoolRisk({here: 1.0 - math.exp(-charge / per_hazard * 24.0)})

    h, share = pol.horizon_hours, pol.min_savings_pct / 100.0
    # per replaced instance over the horizon, switching = 1 h of its price:
    # objective test: (d + 10 x) h - p > share (p + 10 x) h; USD test: (d + x) h - p > 0
    lo = (p_here + share * p_here * h - d * h) / (10.0 * h * (1.0 - share))
    hi = p_here / h - d
    assert lo < hi
    fleet = fleet_of({here: 32})
    kept = planner.decide(pol, cat, snap, fleet, risk_for((lo + hi) / 2), NOW)
    assert not any(t.reason == "rebalance" for t in kept.terminations)
    assert kept.targets == {here: 32}
    assert any("in expected USD" in n for n in kept.explanation.notes)
    moved = planner.decide(pol, cat, snap, fleet, risk_for(2.0 * hi), NOW)
    gone = [t for t in moved.terminations if t.reason == "rebalance"]
    assert len(gone) == pol.max_replacements_per_hour
    assert moved.targets.get(there, 0) == len(gone)
    assert any("rebalance saves" in n for n in moved.explanation.notes)


def test_churn_limit_caps_replacements(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    pol = policy(
        target=64, unit=model.CapacityUnit.VCPU, min_savings_pct=0.5, max_replacements_per_hour=5
    )
    worse, _ = _worse_fleet(cat, snap, pol, 3.0)
    p = decide(pol, cat, snap, fleet_of(worse, replacements=2))
    moved = [t for t in p.terminations if t.reason == "rebalance"]
    assert len(moved) <= 3
    used_up = decide(pol, cat, snap, fleet_of(worse, replacements=5))
    assert not any(t.reason == "rebalance" for t in used_up.terminations)
    disabled = decide(
        policy(target=64, rebalance_enabled=False, min_savings_pct=0.5), cat, snap, fleet_of(worse)
    )
    assert not any(t.reason == "rebalance" for t in disabled.terminations)


def test_a_move_the_churn_limit_spreads_over_hours_starts_this_hour(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    """A move needing more replacements than one hour allows takes this hour's part:
    minSavingsPercent is judged against the replaced instances' cost, not the whole
    fleet's (before: each hour's part was held to the whole fleet's cost, failed it
    every hour and the fleet never moved; found by the backtest, gp-64vcpu on m4.large)."""
    pol0 = policy(target=64, min_savings_pct=10.0, max_replacements_per_hour=1000)
    worse, best = _worse_fleet(cat, snap, pol0, 1.6)
    n_running = sum(worse.values())
    limit = max(1, n_running // 3)
    pol = replace(pol0, max_replacements_per_hour=limit)
    current = expected_cost(cat, snap, pol, worse)
    full_saving = 1.0 - best.expected_cost_per_hour / current
    assert full_saving > 0.10 + 0.05  # the whole move passes minSavingsPercent ...
    p = decide(pol, cat, snap, fleet_of(worse))
    moved = [t for t in p.terminations if t.reason == "rebalance"]
    assert len(moved) == limit  # ... so this hour's part goes, at the churn limit
    after = expected_cost(cat, snap, pol, dict(p.targets))
    step_saving = 1.0 - after / current
    assert 0.0 < step_saving < 0.10  # below the threshold as a share of the fleet ...
    assert any("of the replaced instances' cost" in n for n in p.explanation.notes)
    unlimited = decide(pol0, cat, snap, fleet_of(worse))
    assert unlimited.expected_cost_per_hour <= p.expected_cost_per_hour + 1e-12
    strict = decide(replace(pol, min_savings_pct=90.0), cat, snap, fleet_of(worse))
    assert not any(t.reason == "rebalance" for t in strict.terminations)  # ... not of them


def test_scale_in_terminates_most_expensive_first_and_keeps_base(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    cheap = model.Pool("c5.large", "us-east-1a", model.Market.SPOT)
    dear = model.Pool("c5.large", "us-east-1a", model.Market.ON_DEMAND)
    fleet = fleet_of({cheap: 10, dear: 10})
    pol = policy(
        target=20,
        on_demand_base=8,
        requirements=model.Requirements(allowed_types=frozenset({"c5.large"})),
        zones=("us-east-1a",),
    )
    p = decide(pol, cat, snap, fleet)
    assert {t.reason for t in p.terminations} == {"scale-in"}
    assert p.launches == ()
    # 40 vCPU running, 20 wanted: on-demand (dearer per vCPU) goes first but only
    # down to the 8-vCPU base (4 instances), then spot
    assert p.targets == {cheap: 6, dear: 4}
    removed = {t.instance_id for t in p.terminations}

    def newest(pool: model.Pool, n: int) -> set[str]:
        mine = [i for i in fleet.instances if i.pool == pool]
        return {i.instance_id for i in sorted(mine, key=lambda i: i.launched_at)[-n:]}

    assert removed == newest(dear, 6) | newest(cheap, 4)


def test_not_eligible_instances_are_replaced(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    old = model.Pool("m4.large", "us-east-1a", model.Market.SPOT)
    pol = policy(
        target=8,
        requirements=model.Requirements(excluded_families=frozenset({"m4"})),
        max_replacements_per_hour=0,
    )
    p = decide(pol, cat, snap, fleet_of({old: 4}))
    assert [t.reason for t in p.terminations] == ["not-eligible"] * 4
    assert old not in p.targets
    assert units(cat, p) >= 8
    assert p.launches


def test_plan_summary_mentions_outcome_and_cost(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    p = decide(policy(target=64), cat, snap)
    text = p.summary()
    assert text.startswith("Optimal: 64/64 vcpu")
    assert f"${p.cost_per_hour:.4f}/h" in text


def test_target_zero_scales_everything_in(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    a = model.Pool("c5.large", "us-east-1a", model.Market.SPOT)
    b = model.Pool("c5.large", "us-east-1b", model.Market.ON_DEMAND)
    fleet = fleet_of({a: 3, b: 2})
    p = decide(
        policy(target=0, on_demand_base=4, max_pool_share_pct=50, min_pools=2), cat, snap, fleet
    )
    assert p.targets == {}
    assert sorted(t.instance_id for t in p.terminations) == sorted(
        i.instance_id for i in fleet.instances
    )
    assert {t.reason for t in p.terminations} == {"scale-in"}
    assert p.cost_per_hour == 0.0 and p.savings_pct == 0.0


def test_scale_in_under_a_share_cap_and_min_pools_reaches_the_target(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    """The issue: a fleet at 200 vCPU sent to 32 with minPools 4 and a 30 % share cap
    stopped at 174 (greedy removal breaks the share cap one instance at a time). The
    cheapest subset of what runs that meets every rule is found in one plan, and every
    termination is scale-in (no churn budget spent, nothing launched)."""
    rules = {"min_pools": 4, "max_pool_share_pct": 30.0}
    big = decide(policy(target=200.0, **rules), cat, snap)
    assert big.capacity >= 200
    fleet = fleet_of(dict(big.targets))
    small = decide(policy(target=32.0, max_replacements_per_hour=0, **rules), cat, snap, fleet)
    biggest = max(cat.types[p.instance_type].vcpus for p in big.targets)
    assert 32 <= small.capacity < 32 + biggest
    assert not small.launches
    assert small.terminations and {t.reason for t in small.terminations} == {"scale-in"}
    assert len(small.targets) >= 4
    assert (
        max(n * cat.types[p.instance_type].vcpus for p, n in small.targets.items())
        <= 0.30 * small.capacity + 1e-9
    )
