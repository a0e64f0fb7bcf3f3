"""The typed binding kind (``Plan.binding``): every kind on a policy built to hit it,
on the real bundled 2021 us-east-1 market at 2021-04-15."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from spotfleet_engine import catalog, explain, market, model

# the real market of 2021-04-15 and the helpers the planner's tests use
from tests.unit.test_engine_planner import NOW, cat, decide, policy, snap

__all__ = ["cat", "snap"]  # pytest fixtures

Binding = explain.Binding
C5 = model.Requirements(allowed_types=frozenset({"c5.xlarge"}))
SPOT_1A = model.Pool("c5.xlarge", "us-east-1a", model.Market.SPOT)
OD_1A = model.Pool("c5.xlarge", "us-east-1a", model.Market.ON_DEMAND)


def fleet_of(pool: model.Pool, n: int, replacements: int = 0) -> model.Fleet:
    return model.Fleet(
        tuple(model.FleetInstance(f"i-{k}", pool, NOW - timedelta(hours=k + 1)) for k in range(n)),
        replacements,
    )


def dry(snap: market.MarketSnapshot, *pools: model.Pool) -> market.MarketSnapshot:
    return replace(snap, unavailable=frozenset(pools))


def test_a_plan_that_meets_the_policy_has_no_binding(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    p = decide(policy(min_pools=2), cat, snap)
    assert p.outcome == "Optimal"
    assert p.binding is None and p.binding_constraint is None
    assert p.to_dict()["binding"] is None


def test_invalid_policy(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    p = decide(policy(on_demand_percentage_above_base=150), cat, snap)
    assert (p.outcome, p.binding) == ("Infeasible", Binding.INVALID_POLICY)
    assert p.binding_constraint is not None
    assert p.binding_constraint.startswith("policy invalid:")
    assert p.to_dict()["binding"] == "InvalidPolicy"


def test_no_eligible_pools(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    req = model.Requirements(allowed_types=frozenset({"does-not-exist.*"}))
    p = decide(policy(requirements=req), cat, snap)
    assert (p.outcome, p.binding) == ("Infeasible", Binding.NO_ELIGIBLE_POOLS)
    # a zone the catalog and the market do not know matches nothing either
    q = decide(policy(zones=("us-east-1z",)), cat, snap)
    assert (q.outcome, q.binding) == ("Infeasible", Binding.NO_ELIGIBLE_POOLS)


def test_max_price(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    p = decide(policy(max_spot_price_per_unit_hour=0.0001), cat, snap)
    assert (p.outcome, p.binding) == ("Infeasible", Binding.MAX_PRICE)
    assert p.binding_constraint is not None
    assert "maxSpotPricePerUnitHour" in p.binding_constraint
    # the same policy without the cap is feasible: the cap is what binds
    assert decide(policy(), cat, snap).binding is None


def test_budget_infeasible_and_degraded(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    # no capacity.min: the budget is a ceiling, the plan holds the most it allows
    p = decide(policy(target=1000, budget_per_hour=0.30), cat, snap)
    assert (p.outcome, p.binding) == ("Degraded", Binding.BUDGET)
    assert 0 < p.capacity < 1000 and p.cost_per_hour <= 0.30 + 1e-9
    # ... and more budget holds more
    more = decide(policy(target=1000, budget_per_hour=0.60), cat, snap)
    assert more.capacity > p.capacity and more.cost_per_hour <= 0.60 + 1e-9
    # a floor the budget cannot pay for is infeasible
    floor = decide(policy(target=1000, budget_per_hour=0.30, min_capacity=900), cat, snap)
    assert (floor.outcome, floor.binding) == ("Infeasible", Binding.BUDGET)
    degraded = decide(policy(target=1000, budget_per_hour=0.30, min_capacity=100), cat, snap)
    assert (degraded.outcome, degraded.binding) == ("Degraded", Binding.BUDGET)
    assert degraded.binding_constraint is not None
    assert degraded.binding_constraint.startswith("budgetPerHour")


def test_diversification_min_pools_and_share(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    # one type in one zone: a spot and an on-demand pool, so 3 pools cannot be used
    few = decide(policy(target=40, requirements=C5, zones=("us-east-1a",), min_pools=3), cat, snap)
    assert (few.outcome, few.binding) == ("Infeasible", Binding.DIVERSIFICATION)
    assert few.binding_constraint == "minPools 3 > 2 eligible pools"
    # ... nor can each of the two hold at most 40 %
    share = decide(
        policy(target=40, requirements=C5, zones=("us-east-1a",), max_pool_share_pct=40),
        cat,
        snap,
    )
    assert (share.outcome, share.binding) == ("Infeasible", Binding.DIVERSIFICATION)
    assert share.binding_constraint is not None
    assert share.binding_constraint.startswith("maxPoolSharePercent")


def test_on_demand(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    pol = policy(target=40, requirements=C5, zones=("us-east-1a",), on_demand_base=8)
    assert decide(pol, cat, snap).outcome == "Optimal"
    # the only on-demand pool is out of capacity: the base cannot be bought
    p = decide(pol, cat, dry(snap, OD_1A))
    assert (p.outcome, p.binding) == ("Infeasible", Binding.ON_DEMAND)
    assert p.binding_constraint is not None
    assert "no eligible on-demand pool" in p.binding_constraint


def test_capacity_every_pool_out_of_capacity(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    pol = policy(target=40, requirements=C5, zones=("us-east-1a",))
    p = decide(pol, cat, dry(snap, SPOT_1A, OD_1A))
    assert (p.outcome, p.binding) == ("Infeasible", Binding.CAPACITY)


def test_capacity_running_pool_out_of_capacity_cannot_grow(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    """16 instances run in a spot pool now out of capacity, the policy wants 24 and
    has no other pool: it may keep the 16 (no new ones), so capacity binds."""
    pol = policy(
        target=24, unit=model.CapacityUnit.INSTANCES, requirements=C5, zones=("us-east-1a",)
    )
    market_now = dry(snap, SPOT_1A, OD_1A)
    fleet = fleet_of(SPOT_1A, 16)
    p = decide(pol, cat, market_now, fleet)
    assert (p.outcome, p.binding) == ("Infeasible", Binding.CAPACITY)
    assert p.binding_constraint is not None
    assert p.binding_constraint.startswith("insufficient capacity")
    degraded = decide(replace(pol, min_capacity=8), cat, market_now, fleet)
    assert (degraded.outcome, degraded.binding) == ("Degraded", Binding.CAPACITY)
    assert degraded.targets == {SPOT_1A: 16}
    assert degraded.launches == () and degraded.terminations == ()


def test_on_demand_stands_in_for_spot_out_of_capacity_and_moves_back_within_churn(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    """No on-demand is asked for, and the only spot pool is out of capacity: the plan
    holds the target on-demand (nothing binds; ``on_demand_fallback`` says how much).
    When spot returns, the on-demand instances move back at most
    maxReplacementsPerHour at a time; with none left this hour they are kept."""
    pol = policy(target=40, requirements=C5, zones=("us-east-1a",))
    p = decide(pol, cat, dry(snap, SPOT_1A))
    assert p.outcome == "Optimal" and p.binding is None
    assert p.targets == {OD_1A: 10} and p.on_demand_fallback == 40
    assert decide(pol, cat, snap).on_demand_fallback == 0  # spot there: no fallback
    running = fleet_of(OD_1A, 10)
    back = decide(replace(pol, max_replacements_per_hour=3), cat, snap, running)
    assert [t.reason for t in back.terminations] == ["rebalance"] * 3
    assert back.targets == {OD_1A: 7, SPOT_1A: 3} and back.on_demand_fallback == 28
    kept = decide(replace(pol, max_replacements_per_hour=0), cat, snap, running)
    assert kept.outcome == "NoChange" and kept.targets == {OD_1A: 10}


def test_churn(cat: catalog.Catalog, snap: market.MarketSnapshot) -> None:
    """16 on-demand c5.xlarge run ($0.17/h each); the budget fits spot but not them, and
    no replacement is left this hour: neither keeping nor moving is valid."""
    fleet = fleet_of(OD_1A, 16)
    od_cost = 16 * cat.on_demand_usd_per_hour["c5.xlarge"]
    pol = policy(requirements=C5, budget_per_hour=od_cost / 2, max_replacements_per_hour=0)
    assert decide(pol, cat, snap).outcome == "Optimal"  # a fresh fleet fits the budget
    p = decide(pol, cat, snap, fleet)
    assert (p.outcome, p.binding) == ("Infeasible", Binding.CHURN)
    assert p.binding_constraint is not None
    assert p.binding_constraint.startswith("maxReplacementsPerHour")
    assert p.targets == {OD_1A: 16} and p.launches == () and p.terminations == ()
    # with replacements left the fleet moves instead, and nothing binds
    moved = decide(replace(pol, max_replacements_per_hour=16), cat, snap, fleet)
    assert moved.outcome in ("Optimal", "Feasible") and moved.binding is None
    assert any(t.reason == "rebalance" for t in moved.terminations)


def test_every_kind_is_tested_here() -> None:
    """The tests above cover every member: a new member needs a test here."""
    assert {b.value for b in Binding} == {
        "Capacity",
        "Budget",
        "NoEligiblePools",
        "MaxPrice",
        "Diversification",
        "OnDemand",
        "Churn",
        "InvalidPolicy",
    }


def test_a_recently_interrupted_pool_is_penalised_by_its_penalty(
    cat: catalog.Catalog, snap: market.MarketSnapshot
) -> None:
    """``MarketSnapshot.penalties`` adds to the risk of a spot pool: a heavy penalty on
    the pool the plan relies on most moves capacity out of it; a light one less so."""
    zones = ("us-east-1a", "us-east-1b", "us-east-1c")
    pol = policy(target=40, requirements=C5, zones=zones, objective="balanced")
    base = decide(pol, cat, snap)
    spot = {p: n for p, n in base.targets.items() if p.market is model.Market.SPOT}
    top = max(spot, key=lambda p: spot[p])
    heavy = decide(pol, cat, replace(snap, penalties={top: 0.95}))
    assert heavy.targets.get(top, 0) < spot[top], (base.targets, heavy.targets)
    assert heavy.expected_cost_per_hour >= base.expected_cost_per_hour - 1e-9
    none = decide(pol, cat, replace(snap, penalties={}))
    assert none.targets == base.targets
