"""Property tests: every constraint holds in every Plan, for random policies, catalogs and fleets.

The checker below recomputes everything from the inputs (catalog, market,
policy), independently of the planner's internals.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from spotfleet_engine import catalog, market, model, plan, planner
from spotfleet_engine.risk import advisor
from tests.unit.test_engine_planner import interruption_charge

NOW = datetime(2021, 4, 15, tzinfo=UTC)
RISK = advisor.AdvisorBandRisk()
EPS = 1e-6
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def worlds(draw: st.DrawFn) -> tuple[catalog.Catalog, market.MarketSnapshot]:
    n_types = draw(st.integers(2, 6))
    zones = [f"zz-1{c}" for c in "abc"[: draw(st.integers(2, 3))]]
    types: dict[str, model.InstanceType] = {}
    od: dict[str, float] = {}
    offered: dict[str, frozenset[str]] = {}
    hist: dict[tuple[str, str], tuple[market.PricePoint, ...]] = {}
    adv: dict[str, market.AdvisorEntry] = {}
    for k in range(n_types):
        family = draw(st.sampled_from(["m5", "c5", "r5", "t3", "m6g"]))
        name = f"{family}.s{k}"
        vcpus = draw(st.sampled_from([1, 2, 4, 8, 16]))
        types[name] = model.InstanceType(
            name=name,
            family=family,
            vcpus=vcpus,
            memory_gib=vcpus * draw(st.sampled_from([1.0, 2.0, 4.0, 8.0])),
            arch="arm64" if family == "m6g" else "x86_64",
            burstable=family == "t3",
        )
        od[name] = round(vcpus * draw(st.floats(0.02, 0.06)), 4)
        offered[name] = frozenset(draw(st.sets(st.sampled_from(zones), min_size=1)))
        for z in sorted(offered[name]):
            if draw(st.booleans()) or draw(st.booleans()):
                price = round(od[name] * draw(st.floats(0.1, 1.1)), 4)
                hist[(name, z)] = (market.PricePoint(NOW - timedelta(hours=1), price),)
        if draw(st.booleans()):
            adv[name] = market.AdvisorEntry(band=draw(st.integers(0, 4)), savings_pct=60.0)
    pools = [model.Pool(t, z, model.Market.SPOT) for (t, z) in hist]
    unavailable = frozenset(draw(st.sets(st.sampled_from(pools), max_size=2)) if pools else ())
    cat = catalog.Catalog("zz-1", types, od, offered)
    snap = market.MarketSnapshot("zz-1", NOW, hist, adv, unavailable=unavailable)
    return cat, snap


@st.composite
def policies(draw: st.DrawFn, cat: catalog.Catalog) -> model.Policy:
    unit = draw(st.sampled_from(list(model.CapacityUnit)))
    target = float(draw(st.one_of(st.integers(1, 60), st.just(0))))
    names = sorted(cat.types)
    req = model.Requirements(
        vcpu_max=draw(st.sampled_from([None, 8, 16])),
        burstable=draw(st.sampled_from(["include", "exclude"])),
        excluded_types=frozenset(draw(st.sets(st.sampled_from(names), max_size=1))),
    )
    zones = draw(st.sampled_from([(), (), (), ("zz-1a",), ("zz-1a", "zz-1b")]))
    return model.Policy(
        region="zz-1",
        target=target,
        unit=unit,
        zones=zones,
        min_capacity=draw(st.sampled_from([None, 0.0, target / 2])),
        on_demand_base=float(draw(st.integers(0, int(target) + 2))) if draw(st.booleans()) else 0.0,
        on_demand_percentage_above_base=float(draw(st.sampled_from([0, 0, 10, 50, 100]))),
        requirements=req,
        objective=draw(st.sampled_from(list(model.OBJECTIVES))),
        max_spot_price_per_unit_hour=draw(st.sampled_from([None, None, 0.01, 0.02, 0.05])),
        budget_per_hour=draw(st.sampled_from([None, None, 0.5, 2.0])),
        min_pools=draw(st.sampled_from([1, 1, 2, 3, 4])),
        max_pool_share_pct=float(draw(st.sampled_from([100, 100, 60, 40, 25]))),
        rebalance_enabled=draw(st.booleans()),
        min_savings_pct=float(draw(st.sampled_from([0, 5, 20]))),
        max_replacements_per_hour=draw(st.integers(0, 6)),
    )


@st.composite
def fleets(draw: st.DrawFn, cat: catalog.Catalog, snap: market.MarketSnapshot) -> model.Fleet:
    pools = [model.Pool(t, z, model.Market.SPOT) for (t, z) in sorted(snap.spot_history)]
    pools += [
        model.Pool(t, z, model.Market.ON_DEMAND) for t in sorted(cat.types) for z in cat.zones[t]
    ]
    chosen = draw(st.dictionaries(st.sampled_from(pools), st.integers(1, 5), max_size=4))
    instances = tuple(
        model.FleetInstance(f"i-{pool.key()}-{k}", pool, NOW - timedelta(minutes=7 * k + 1))
        for pool, n in sorted(chosen.items())
        for k in range(n)
    )
    return model.Fleet(instances, draw(st.integers(0, 6)))


def price_of(cat: catalog.Catalog, snap: market.MarketSnapshot, pool: model.Pool) -> float:
    if pool.market is model.Market.ON_DEMAND:
        return cat.on_demand_usd_per_hour[pool.instance_type]
    p = snap.spot_price(pool.instance_type, pool.zone)
    assert p is not None
    return p


def expected_cost(
    cat: catalog.Catalog,
    snap: market.MarketSnapshot,
    pol: model.Policy,
    counts: Mapping[model.Pool, int],
) -> float:
    pools = sorted(counts)
    risks = RISK.interruption_probability(pools, snap, cat, NOW)
    return sum(
        (price_of(cat, snap, p) + interruption_charge(cat, pol, p.instance_type, r)) * counts[p]
        for p, r in zip(pools, risks, strict=True)
    )


def violations(
    cat: catalog.Catalog,
    snap: market.MarketSnapshot,
    pol: model.Policy,
    counts: Mapping[model.Pool, int],
    floor: float | None = None,
    running: Mapping[model.Pool, int] | None = None,
) -> list[str]:
    """Every policy constraint ``counts`` breaks (empty: a valid plan)."""
    out: list[str] = []
    counts = {p: n for p, n in counts.items() if n > 0}
    cap = od_cap = cost = 0.0
    for pool, n in counts.items():
        it = cat.types.get(pool.instance_type)
        if it is None or not pol.requirements.matches(it):
            out.append(f"{pool.key()} does not match requirements")
            continue
        if pol.zones and pool.zone not in pol.zones:
            out.append(f"{pool.key()} outside zones")
        if pool in snap.unavailable and n > (running or {}).get(pool, 0):
            # out of capacity: no NEW instances (what already runs there may stay)
            out.append(f"{pool.key()} unavailable")
        if pool.market is model.Market.SPOT:
            price = snap.spot_price(pool.instance_type, pool.zone)
            if price is None:
                out.append(f"{pool.key()} has no spot price")
                continue
            maxp = pol.max_spot_price_per_unit_hour
            if maxp is not None and price > maxp * it.units(pol.unit) + 1e-12:
                out.append(f"{pool.key()} above max price")
        elif pool.zone not in cat.zones.get(pool.instance_type, frozenset()):
            out.append(f"{pool.key()} not offered on-demand there")
        u = it.units(pol.unit) * n
        cap += u
        od_cap += u if pool.market is model.Market.ON_DEMAND else 0.0
        cost += price_of(cat, snap, pool) * n
    need = pol.target if floor is None else floor
    if cap < need - EPS:
        out.append(f"capacity {cap} < {need}")
    b = min(pol.on_demand_base, pol.target, cap)  # a degraded plan may hold less than the base
    q = pol.on_demand_percentage_above_base / 100.0
    if od_cap < b + q * (cap - b) - EPS:
        out.append(f"on-demand {od_cap} < base/percentage {b + q * (cap - b)}")
    for pool, n in counts.items():
        it = cat.types.get(pool.instance_type)
        if it and it.units(pol.unit) * n > pol.max_pool_share_pct / 100.0 * cap + EPS:
            out.append(f"{pool.key()} share above {pol.max_pool_share_pct}%")
    if counts and len(counts) < pol.min_pools:
        out.append(f"{len(counts)} pools < minPools {pol.min_pools}")
    if pol.budget_per_hour is not None and cost > pol.budget_per_hour + EPS:
        out.append(f"cost {cost} > budget {pol.budget_per_hour}")
    return out


def check_actions(fleet: model.Fleet, pol: model.Policy, p: plan.Plan) -> None:
    counts = fleet.count_by_pool()
    ids = {i.instance_id: i for i in fleet.instances}
    seen: set[str] = set()
    for t in p.terminations:
        assert t.instance_id in ids and t.instance_id not in seen
        assert ids[t.instance_id].pool == t.pool
        seen.add(t.instance_id)
        counts[t.pool] -= 1
    for a in p.launches:
        assert a.count > 0
        counts[a.pool] = counts.get(a.pool, 0) + a.count
    assert {k: v for k, v in counts.items() if v} == dict(p.targets)
    rebalanced = sum(1 for t in p.terminations if t.reason == "rebalance")
    if not pol.rebalance_enabled:
        assert rebalanced == 0
    assert rebalanced <= max(0, pol.max_replacements_per_hour - fleet.replacements_last_hour)


@given(data=st.data())
@SETTINGS
def test_every_constraint_holds_in_every_plan(data: st.DataObject) -> None:
    cat, snap = data.draw(worlds())
    pol = data.draw(policies(cat))
    fleet = data.draw(fleets(cat, snap))
    p = planner.decide(pol, cat, snap, fleet, RISK, NOW)
    assert p == planner.decide(pol, cat, snap, fleet, RISK, NOW)  # deterministic
    event(f"outcome {p.outcome}")
    event(f"rebalanced {any(t.reason == 'rebalance' for t in p.terminations)}")
    # the typed kind and the text are set together, and always when the target is not met
    assert (p.binding is None) == (p.binding_constraint is None)
    if p.outcome in ("Degraded", "Infeasible"):
        event(f"binding {p.binding}")
        assert p.binding is not None
    if p.outcome == "Infeasible":
        assert p.binding_constraint
        assert p.launches == () and p.terminations == ()
        assert dict(p.targets) == fleet.count_by_pool()
        return
    floor = planner.degraded_floor(pol, p.binding) if p.outcome == "Degraded" else None
    assert violations(cat, snap, pol, p.targets, floor, fleet.count_by_pool()) == []
    check_actions(fleet, pol, p)
    cap = sum(cat.types[pl.instance_type].units(pol.unit) * n for pl, n in p.targets.items())
    assert math.isclose(p.capacity, cap, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(
        p.expected_cost_per_hour, expected_cost(cat, snap, pol, p.targets), rel_tol=1e-9
    )


@given(data=st.data())
@SETTINGS
def test_pruning_keeps_the_optimum(data: st.DataObject) -> None:
    cat, snap = data.draw(worlds())
    pol = data.draw(policies(cat))
    pruned = planner.decide(pol, cat, snap, model.Fleet(), RISK, NOW)
    full = planner.decide(
        pol, cat, snap, model.Fleet(), RISK, NOW, options=planner.Options(prune=False)
    )
    assert pruned.outcome == full.outcome
    smaller = pruned.stats.pools_after_prune < full.stats.pools_after_prune
    event(f"outcome {full.outcome}, pruned {smaller}")
    if full.outcome in ("Optimal", "NoChange"):
        assert pruned.expected_cost_per_hour <= full.expected_cost_per_hour * (1 + 2e-4) + 1e-9


@given(data=st.data())
@SETTINGS
def test_hysteresis_never_moves_for_a_small_saving(data: st.DataObject) -> None:
    """A valid running fleet is only moved when the new plan saves more than
    minSavingsPercent of the expected cost of the instances it replaces (before
    switching costs, which only make the test stricter)."""
    cat, snap = data.draw(worlds())
    pol = replace(
        data.draw(policies(cat)),
        rebalance_enabled=True,
        max_replacements_per_hour=data.draw(st.integers(1, 12)),
        min_savings_pct=float(data.draw(st.sampled_from([0, 2, 10, 30]))),
        budget_per_hour=None,
        max_spot_price_per_unit_hour=None,
    )
    first = planner.decide(pol, cat, snap, model.Fleet(), RISK, NOW)
    event(f"first plan {first.outcome}")
    if first.outcome not in ("Optimal", "Feasible") or not first.targets:
        return
    fleet = model.Fleet(
        tuple(
            model.FleetInstance(f"i-{pool.key()}-{k}", pool, NOW - timedelta(hours=k + 1))
            for pool, n in sorted(first.targets.items())
            for k in range(n)
        ),
        data.draw(st.integers(0, 3)),
    )
    # the market moves: every spot price is scaled by its own factor
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    factors = {key: rng.uniform(0.2, 1.5) for key in sorted(snap.spot_history)}
    moved = {
        key: (market.PricePoint(NOW, round(h[-1].price * factors[key], 4)),)
        for key, h in snap.spot_history.items()
    }
    snap2 = replace(snap, spot_history=moved)
    if violations(cat, snap2, pol, first.targets):
        return  # the old plan is no longer valid: moving is forced, not a saving
    p = planner.decide(pol, cat, snap2, fleet, RISK, NOW)
    assert p.outcome != "Infeasible"
    assert violations(cat, snap2, pol, p.targets) == []
    check_actions(fleet, pol, p)
    rebalanced = [t for t in p.terminations if t.reason == "rebalance"]
    event(f"hysteresis: rebalanced {bool(rebalanced)}")
    if rebalanced:
        before = expected_cost(cat, snap2, pol, first.targets)
        gone = Counter(t.pool for t in rebalanced)
        threshold = pol.min_savings_pct / 100.0 * expected_cost(cat, snap2, pol, gone)
        assert before - p.expected_cost_per_hour > threshold - 1e-12
    else:
        assert all(t.reason == "scale-in" for t in p.terminations)


@given(data=st.data())
@SETTINGS
def test_fast_path_gives_the_plan_of_the_three_milps(data: st.DataObject) -> None:
    """``Options(fast_path=True)`` (the default) skips the anchored MILP when the running
    fleet is feasible on its own and the churn-limited MILP when no move can pass
    minSavingsPercent; the plan (targets, launches, terminations, outcome) must be the
    one solving all three gives, for random fleets and for a fleet that ran the last
    plan while the market moved."""
    cat, snap = data.draw(worlds())
    pol = data.draw(policies(cat))
    full = planner.Options(fast_path=False)
    if data.draw(st.booleans()):
        fleet = data.draw(fleets(cat, snap))
    else:
        first = planner.decide(pol, cat, snap, model.Fleet(), RISK, NOW)
        fleet = model.Fleet(
            tuple(
                model.FleetInstance(f"i-{pool.key()}-{k}", pool, NOW - timedelta(hours=k + 1))
                for pool, n in sorted(first.targets.items())
                for k in range(n)
            ),
            data.draw(st.integers(0, 3)),
        )
        rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
        snap = replace(
            snap,
            spot_history={
                key: (market.PricePoint(NOW, round(h[-1].price * rng.uniform(0.5, 1.2), 4)),)
                for key, h in sorted(snap.spot_history.items())
            },
        )
    fast = planner.decide(pol, cat, snap, fleet, RISK, NOW)
    slow = planner.decide(pol, cat, snap, fleet, RISK, NOW, options=full)
    event(f"fast path: {fast.outcome}, fleet {bool(fleet.instances)}")
    assert fast.outcome == slow.outcome
    assert fast.targets == slow.targets
    assert fast.launches == slow.launches
    assert fast.terminations == slow.terminations
    assert fast.binding_constraint == slow.binding_constraint
    assert fast.binding == slow.binding


@given(data=st.data())
@SETTINGS
def test_a_plan_carried_out_is_what_the_next_decision_says(data: st.DataObject) -> None:
    """The operator skips the decision after a plan that launches a whole fleet went
    through in full (``Plan.carried_out``): for the fleet it leads to, on the same
    market, ``decide`` must answer the same targets, outcome, costs, capacity, binding
    and chosen pools, with no actions; only a hysteresis note may be added (with tied
    optima the kept fleet is explained). With instances running before, it says
    nothing (found here: a kept instance the next decision scales in)."""
    cat, snap = data.draw(worlds())
    pol = data.draw(policies(cat))
    fleet = data.draw(fleets(cat, snap)) if data.draw(st.booleans()) else model.Fleet()
    first = planner.decide(pol, cat, snap, fleet, RISK, NOW)
    done = first.carried_out()
    if fleet.instances:
        assert done is None
        return
    if done is None:
        assert (
            not first.launches
            or first.terminations
            or first.outcome not in ("Optimal", "Feasible")
            or first.on_demand_fallback > 0
            or first.capacity < pol.target
        )
        event("not a plan that launches a whole fleet and meets its target")
        return
    after = model.Fleet(
        tuple(
            model.FleetInstance(f"i-new-{a.pool.key()}-{k}", a.pool, NOW)
            for a in first.launches
            for k in range(a.count)
        )
    )
    assert dict(Counter(i.pool for i in after.instances)) == dict(first.targets)
    again = planner.decide(pol, cat, snap, after, RISK, NOW)
    event(f"carried out: {again.outcome}")
    assert again.launches == again.terminations == ()
    assert (
        (again.outcome, again.targets)
        == (done.outcome, done.targets)
        == ("NoChange", first.targets)
    )
    assert again.cost_per_hour == pytest.approx(done.cost_per_hour, rel=1e-12)
    assert again.expected_cost_per_hour == pytest.approx(done.expected_cost_per_hour, rel=1e-12)
    assert again.capacity_by_market == done.capacity_by_market
    assert (again.binding, again.binding_constraint) == (done.binding, done.binding_constraint)
    assert again.explanation.chosen == done.explanation.chosen
    assert set(done.explanation.notes) <= set(again.explanation.notes)
    assert all(
        n.startswith("kept running capacity")
        for n in set(again.explanation.notes) - set(done.explanation.notes)
    )


def one_vcpu_world(
    on_demand: dict[str, float],
    zones: dict[str, frozenset[str]],
    spot: dict[tuple[str, str], float],
) -> tuple[catalog.Catalog, market.MarketSnapshot]:
    """A hand-built world of 1-vCPU m5 types: on-demand prices, offered zones, spot prices."""
    types = {
        n: model.InstanceType(name=n, family="m5", vcpus=1, memory_gib=1.0, arch="x86_64")
        for n in on_demand
    }
    hist = {k: (market.PricePoint(NOW - timedelta(hours=1), p),) for k, p in spot.items()}
    return catalog.Catalog("zz-1", types, on_demand, zones), market.MarketSnapshot(
        "zz-1", NOW, hist
    )


def test_pruning_keeps_enough_pools_when_the_share_cap_rounds_down() -> None:
    """The share cap holds whole instances: at 60 % of 3 vCPU a 1-vCPU pool takes 1
    instance, not 1.8, so the plan needs 3 pools of one (market, size) group. Pruning
    once kept floor(100/60) + 1 = 2 per group and the plan paid for 4 vCPU in 2 pools
    (found by ``test_pruning_keeps_the_optimum``)."""
    names = [f"m5.s{k}" for k in range(6)]
    cat, snap = one_vcpu_world(
        {n: 0.0312 for n in names},
        {n: frozenset({"zz-1a"}) for n in names},
        {("m5.s0", "zz-1a"): 0.0312, ("m5.s1", "zz-1a"): 0.0312, ("m5.s5", "zz-1a"): 0.0312},
    )
    pol = model.Policy(region="zz-1", target=3.0, max_pool_share_pct=60.0)
    pruned = planner.decide(pol, cat, snap, model.Fleet(), RISK, NOW)
    full = planner.decide(
        pol, cat, snap, model.Fleet(), RISK, NOW, options=planner.Options(prune=False)
    )
    assert full.outcome == pruned.outcome == "Optimal"
    assert sum(full.targets.values()) == 3 and len(full.targets) == 3
    assert pruned.targets == full.targets
    assert pruned.expected_cost_per_hour == pytest.approx(full.expected_cost_per_hour)


def test_the_interruption_charge_prices_missing_units_at_the_policys_own_zones() -> None:
    """``u`` (the cheapest on-demand USD per unit-hour) counts only types the policy can
    buy: a cheaper type offered only outside the policy's zones does not lower it (the
    backtest's shortfall rate counts the same types; found by
    ``test_every_constraint_holds_in_every_plan``, whose checker had ignored zones)."""
    cat, snap = one_vcpu_world(
        {"m5.s0": 0.0312, "m5.s3": 0.0234},
        {"m5.s0": frozenset({"zz-1a", "zz-1b"}), "m5.s3": frozenset({"zz-1b"})},
        {("m5.s0", "zz-1a"): 0.0312},
    )
    pol = model.Policy(region="zz-1", target=1.0, zones=("zz-1a",))
    p = planner.decide(pol, cat, snap, model.Fleet(), RISK, NOW)
    spot = model.Pool("m5.s0", "zz-1a", model.Market.SPOT)
    assert p.targets == {spot: 1}
    (r,) = RISK.interruption_probability([spot], snap, cat, NOW)
    hazard = -math.log(1.0 - r) / RISK.horizon_hours
    u = 0.0312  # m5.s0 per vCPU; m5.s3 (0.0234) is offered in zz-1b only
    charge = hazard * (1.0 * 0.0312 + 0.5 * 3.0 * u * 1.0)  # lowestCost: aversion 1
    assert p.expected_cost_per_hour == pytest.approx(0.0312 + charge, rel=1e-12)
    assert interruption_charge(cat, pol, "m5.s0", r) == pytest.approx(charge, rel=1e-12)
