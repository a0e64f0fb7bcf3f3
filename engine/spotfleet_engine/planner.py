"""``decide``: the cheapest safe fleet for a policy, as a :class:`~spotfleet_engine.plan.Plan`.

Pure and deterministic: no I/O, no clock (``now`` is an argument), no globals;
the same inputs give the same Plan.

Model. Every pool ``i`` (type x zone x market) has a weight ``w_i`` (units of
the policy's capacity unit per instance), a price ``p_i`` (spot: the market's
current price; on-demand: the catalog price; USD per instance-hour), a risk
``r_i`` (the risk model's interruption probability over its horizon ``H``)
and an expected cost per instance-hour (:func:`expected_cost`)

    c_i = p_i + A x h_i x L_i

- ``h_i = -ln(1 - r_i) / H``: the hourly interruption hazard that gives
  probability ``r_i`` over ``H`` hours (constant hazard); charging ``r_i``
  itself every hour would count the whole horizon's risk once per hour.
- ``L_i = LOST_WORK_HOURS x od_i + REPLACEMENT_GAP_HOURS x SHORTFALL_MULTIPLE
  x u x w_i``: what one interruption costs: the work lost since the last
  checkpoint plus relaunch and warm-up (one hour of the type's on-demand
  price ``od_i``), and the capacity missing until the replacement runs
  (half an hour, valued at three times ``u``, the policy's cheapest on-demand
  price per unit-hour). See :data:`LOST_WORK_HOURS`.
- ``A`` (:data:`RISK_AVERSION`): how much more than its expected cost the
  objective counts an interruption (lowestCost 1: risk-neutral).

The MILP chooses integer counts ``x_i`` minimising ``sum c_i x_i`` subject to

- capacity ``C = sum w_i x_i >= target``;
- on-demand capacity ``>= b + q (C - b)`` with ``b = min(onDemandBase, target)``
  and ``q = onDemandPercentageAboveBase / 100``, and at most one (largest
  eligible) on-demand instance above that, so spot is not displaced;
- per pool ``w_i x_i <= share x C`` (``maxPoolSharePercent`` of planned capacity);
- at least ``minPools`` distinct pools hold capacity;
- ``sum p_i x_i <= budgetPerHour``;
- spot pools priced above ``maxSpotPricePerUnitHour x w_i`` are not eligible;
  pools the market marks unavailable (out of capacity) get no new instances, but
  instances already running in them are kept (at most their current count).

Pruning (exact by exchange, see :func:`_prune`): pools are grouped by
(market, weight); within a group any pool that at least ``k`` others beat on
both expected cost and price is dropped, where ``k = floor(100 / share) + 1``
(``+ minPools`` instead of ``+ 1`` when the share cap does not already force
``minPools`` pools) bounds how many pools of one group an optimal plan needs.

Hysteresis: running instances in still-eligible pools are kept (after scale-in,
which removes the most expensive-per-unit and riskiest first while capacity
stays >= target and on-demand stays >= its requirement). Running capacity moves
only when ``rebalanceEnabled``, the churn budget
``maxReplacementsPerHour - fleet.replacements_last_hour`` allows it, and the
best plan within that budget saves more than ``minSavingsPercent`` of the
kept plan's expected cost over the horizon after paying
:data:`SWITCH_HOURS` hours of price per replaced instance. Instances in pools
that are no longer eligible are always replaced (reason ``not-eligible``).
Running instances are costed at the market price of their pool.

Fast paths (exact, ``Options.fast_path``): a running fleet that meets every
constraint on its own is the kept plan without a MILP, and the churn-limited
MILP is skipped when the fresh optimum proves no move can pass
``minSavingsPercent`` (see :func:`_kept_if_feasible`, :func:`_move_bound`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, sparse

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model
from spotfleet_engine import plan as plan_mod
from spotfleet_engine.risk import protocol as risk_protocol

#: Hours of the interrupted type's on-demand price one interruption costs directly:
#: the work done since the last checkpoint (half an hourly checkpoint interval on
#: average) plus relaunch, boot and warm-up of the replacement (about half an hour).
LOST_WORK_HOURS = 1.0
#: Hours the interrupted capacity is missing until its replacement runs: half of an
#: hourly decision interval (reclaims arrive uniformly within it).
REPLACEMENT_GAP_HOURS = 0.5
#: Missing capacity is worth this multiple of the policy's cheapest on-demand price per
#: unit-hour: it is worth more than it costs to buy (else nobody would run it).
SHORTFALL_MULTIPLE = 3.0
#: Multiple of an interruption's expected cost each objective counts (lowestCost: 1,
#: risk-neutral).
RISK_AVERSION: Mapping[str, float] = {
    "lowestCost": 1.0,
    "balanced": 10.0,
    "lowestInterruption": 1000.0,
}
#: Hours of the old pool's price one replacement costs (old and new overlap while draining).
SWITCH_HOURS = 1.0
#: Relative MIP gap HiGHS must prove before a plan is called optimal.
MIP_REL_GAP = 1e-4

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Options:
    """Solver knobs. ``prune=False`` solves the MILP over every eligible pool
    (the benchmark's reference); ``node_limit`` bounds branch and bound
    deterministically (no time limits: they would make plans depend on speed).
    HiGHS presolve is off by default: on the pruned models it costs more than
    it saves (measured by ``bench/decide.py``)."""

    prune: bool = True
    node_limit: int = 20_000
    presolve: bool = False
    #: skip the anchored MILP when the running fleet is feasible on its own, and the
    #: churn-limited MILP when no move can pass minSavingsPercent (exact; ``False``
    #: always solves all three, for tests and benchmarks)
    fast_path: bool = True


DEFAULT_OPTIONS = Options()


@dataclass
class _Pools:
    """Candidate pools (those matching requirements and zones) as parallel arrays."""

    pools: list[model.Pool]
    w: F64  # units per instance
    price: F64  # USD per instance-hour
    od: F64  # on-demand USD per instance-hour of the type
    is_od: npt.NDArray[np.bool_]
    risk: F64
    cost: F64  # expected USD per hour, see module doc
    why_out: list[str | None]  # None: eligible; else why not
    #: candidate index -> most instances the plan may hold there (pools out of
    #: capacity keep what already runs in them but get no new instances)
    max_count: dict[int, int] = field(default_factory=dict)


@dataclass
class _Solution:
    status: str  # "optimal" | "feasible" | "infeasible"
    x: dict[int, int]  # candidate index -> count (>0 only)
    objective: float


def _enumerate(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
    risk: risk_protocol.RiskModel,
    now: datetime,
) -> _Pools:
    req = policy.requirements
    zones_ok = frozenset(policy.zones)
    od_prices = catalog.on_demand_usd_per_hour
    ok_types: dict[str, float] = {}  # type -> units per instance
    for name in sorted(catalog.types):
        it = catalog.types[name]
        units = it.units(policy.unit)
        if name in od_prices and units > 0 and req.matches(it):
            ok_types[name] = units
    spot_zones: dict[str, list[str]] = {}
    pools: list[model.Pool] = []
    prices: list[float] = []
    weights: list[float] = []
    ods: list[float] = []
    on_demand = model.Market.ON_DEMAND
    unit = policy.unit
    for pool, spot_price in market.spot_pools():
        wt = ok_types.get(pool.instance_type)
        if wt is None or (zones_ok and pool.zone not in zones_ok):
            continue
        pools.append(pool)
        prices.append(spot_price)
        weights.append(wt)
        ods.append(od_prices[pool.instance_type])
        spot_zones.setdefault(pool.instance_type, []).append(pool.zone)
    n_spot = len(pools)
    for t, wt in ok_types.items():
        odp = od_prices[t]
        od_pools = catalog.on_demand_pools(t) or tuple(
            model.Pool(t, z, on_demand) for z in sorted(spot_zones.get(t, ()))
        )
        for pool in od_pools:
            if not zones_ok or pool.zone in zones_ok:
                pools.append(pool)
                prices.append(odp)
                weights.append(wt)
                ods.append(odp)
    n = len(pools)
    w = np.asarray(weights, dtype=np.float64)
    od = np.asarray(ods, dtype=np.float64)
    is_od = np.zeros(n, dtype=np.bool_)
    is_od[n_spot:] = True
    price = np.asarray(prices, dtype=np.float64)
    # the protocol gives on-demand pools 0.0: ask only about the spot ones
    r_spot = np.asarray(
        risk.interruption_probability(pools[:n_spot], market, catalog, now), dtype=np.float64
    )
    if r_spot.shape != (n_spot,):
        raise ValueError(f"risk model {risk.name!r} returned {r_spot.shape} for {n_spot} pools")
    r = np.zeros(n, dtype=np.float64)
    r[:n_spot] = np.clip(r_spot, 0.0, 1.0)
    od_units = w[is_od] if is_od.any() else w
    ref_unit_od = float(np.min((od[is_od] if is_od.any() else od) / od_units)) if n else 0.0
    cost = expected_cost(price, r, od, w, ref_unit_od, float(risk.horizon_hours), policy.objective)
    why: list[str | None] = [None] * n
    maxp = policy.max_spot_price_per_unit_hour
    if maxp is not None:
        for i in np.flatnonzero(~is_od & (price > maxp * w + 1e-12)).tolist():
            why[i] = (
                f"spot ${price[i] / w[i]:.6f}/{unit.value}-h above "
                f"maxSpotPricePerUnitHour ${maxp:.6f}"
            )
    if market.unavailable:
        for i, p in enumerate(pools):
            if p in market.unavailable and why[i] is None:
                why[i] = UNAVAILABLE
    return _Pools(pools, w, price, od, is_od, r, cost, why)


UNAVAILABLE = "marked unavailable (insufficient capacity)"


def hourly_hazard(r: F64, horizon_hours: float) -> F64:
    """Per-instance interruption hazard per hour from probabilities ``r`` over
    ``horizon_hours`` (constant hazard: ``-ln(1 - r) / H``; r = 1 is capped)."""
    h: F64 = -np.log1p(-np.minimum(r, 1.0 - 1e-9)) / max(horizon_hours, 1e-9)
    return h


def interruption_cost(od: F64, w: F64, ref_unit_od: float) -> F64:
    """USD one interruption of an instance costs (see the module doc): lost work and
    relaunch (``LOST_WORK_HOURS`` of ``od``) plus the missing ``w`` units for
    ``REPLACEMENT_GAP_HOURS`` at ``SHORTFALL_MULTIPLE`` x ``ref_unit_od`` per unit-hour."""
    out: F64 = LOST_WORK_HOURS * od + REPLACEMENT_GAP_HOURS * SHORTFALL_MULTIPLE * ref_unit_od * w
    return out


def expected_cost(
    price: F64,
    r: F64,
    od: F64,
    w: F64,
    ref_unit_od: float,
    horizon_hours: float,
    objective: str,
) -> F64:
    """Expected USD per instance-hour: price + aversion x hazard x interruption cost.
    Pools with ``r == 0`` (on-demand) cost their price."""
    extra = RISK_AVERSION[objective] * hourly_hazard(r, horizon_hours)
    out: F64 = price + extra * interruption_cost(od, w, ref_unit_od)
    return out


def _od_bounds(policy: model.Policy, c: _Pools, elig: I64) -> tuple[float, float, float]:
    """(b, q, slack): on-demand capacity must lie in [b(1-q) + qC, b(1-q) + qC + slack]."""
    b = min(policy.on_demand_base, policy.target)
    q = policy.on_demand_percentage_above_base / 100.0
    od_w = c.w[elig][c.is_od[elig]]
    slack = float(od_w.max()) if (b > 0 or q > 0) and od_w.size else 0.0
    return b, q, slack


def _min_pools_implied(policy: model.Policy) -> bool:
    """True when the share cap alone forces ``minPools`` pools: each pool holds at
    most ``share x C``, so at least ``ceil(100 / share)`` pools hold capacity."""
    return math.ceil(100.0 / policy.max_pool_share_pct - 1e-9) >= policy.min_pools


def _prune(policy: model.Policy, c: _Pools, elig: I64, keep_always: set[int]) -> I64:
    """Keep, per (market, weight) group, the pools fewer than ``k`` others beat.

    Exchange argument: pools of one group are interchangeable for capacity,
    the on-demand split and the share cap, so an optimal plan that uses a pool
    beaten (cost and price both <=) by ``k`` unused pools of its group can move
    its instances to one of them. Moving instances between two partly filled
    pools of a group never raises the cost, so some optimal plan has at most
    ``floor(100/share)`` capped pools + 1 partial pool per group, plus up to
    ``minPools - 1`` more when the pool count (not implied by the share cap)
    binds: ``k = floor(100/share) + 1`` or ``+ minPools``. Running pools are
    always kept.
    """
    k = math.floor(100.0 / policy.max_pool_share_pct + 1e-9) + (
        1 if _min_pools_implied(policy) else policy.min_pools
    )
    use_price = policy.budget_per_hour is not None
    w = np.round(c.w[elig], 6)
    order = np.lexsort((elig, c.price[elig], c.cost[elig], w, c.is_od[elig]))
    if not use_price:
        # rank within (market, weight) group = position - group start
        gw, go = w[order], c.is_od[elig][order]
        new_group = np.ones(len(order), dtype=np.bool_)
        new_group[1:] = (gw[1:] != gw[:-1]) | (go[1:] != go[:-1])
        starts = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
        keep = (np.arange(len(order)) - starts) < k
        chosen = set(elig[order[keep]].tolist()) | keep_always
        return np.asarray(sorted(chosen), dtype=np.int64)
    kept: list[int] = []
    group: tuple[bool, float] | None = None
    seen_prices: list[float] = []
    for o in order:
        i = int(elig[o])
        g = (bool(c.is_od[i]), float(w[o]))
        if g != group:
            group, seen_prices = g, []
        p = float(c.price[i])
        if use_price:
            beaten = bisect.bisect_right(seen_prices, p)
            bisect.insort(seen_prices, p)
        else:
            beaten = len(seen_prices)
            seen_prices.append(p)
        if beaten < k or i in keep_always:
            kept.append(i)
    return np.asarray(sorted(kept), dtype=np.int64)


def _solve(
    policy: model.Policy,
    c: _Pools,
    sub: I64,
    od_bounds: tuple[float, float, float],
    *,
    options: Options,
    anchors: Mapping[int, int] | None = None,
    capacity_floor: float | None = None,
    minimise_price: bool = False,
    **kw: Any,
) -> _Solution:
    """Solve the MILP over ``sub`` (see :func:`_solve_once` for the arguments).

    HiGHS handles general integers with infinite bounds badly (seconds spent
    in root propagation), so capacity is first bounded by ``cap_max`` =
    1.5 x (target + pools needed x largest size), which bounds every count
    through the share cap. The bound is then proven slack: every plan with
    more capacity costs at least ``cap_max x`` the cheapest cost per unit; if
    that is not above the solution's cost, ``cap_max`` grows and the solve
    repeats (finally without a bound). Degraded mode is solved unbounded.
    """
    if len(sub) == 0 or capacity_floor is not None:
        return _solve_once(
            policy,
            c,
            sub,
            od_bounds,
            options=options,
            anchors=anchors,
            capacity_floor=capacity_floor,
            minimise_price=minimise_price,
            cap_max=math.inf,
            **kw,
        )
    w = c.w[sub]
    per_unit = float(np.min((c.price[sub] if minimise_price else c.cost[sub]) / w))
    anchored = sum(float(c.w[i]) * n for i, n in (anchors or {}).items())
    needed = max(policy.min_pools, math.ceil(100.0 / policy.max_pool_share_pct - 1e-9))
    cap_max = 1.5 * (max(policy.target, anchored) + needed * float(np.max(w)))
    for _ in range(3):
        sol = _solve_once(
            policy,
            c,
            sub,
            od_bounds,
            options=options,
            anchors=anchors,
            minimise_price=minimise_price,
            cap_max=cap_max,
            **kw,
        )
        if sol.status != "infeasible" and cap_max * per_unit >= sol.objective:
            return sol
        cap_max *= 4.0
    return _solve_once(
        policy,
        c,
        sub,
        od_bounds,
        options=options,
        anchors=anchors,
        minimise_price=minimise_price,
        cap_max=math.inf,
        **kw,
    )


def _solve_once(
    policy: model.Policy,
    c: _Pools,
    sub: I64,
    od_bounds: tuple[float, float, float],
    *,
    options: Options,
    cap_max: float,
    anchors: Mapping[int, int] | None = None,
    churn: int | None = None,
    capacity_floor: float | None = None,
    with_budget: bool = True,
    with_share: bool = True,
    with_min_pools: bool = True,
    with_od: bool = True,
    minimise_price: bool = False,
) -> _Solution:
    """Solve the MILP over candidate indices ``sub``.

    ``anchors`` (candidate index -> count) are lower bounds on running pools;
    with ``churn`` set, up to ``churn`` anchored instances may be given up.
    ``capacity_floor`` switches to degraded mode: capacity >= floor, maximise
    min(capacity, target) first, then minimise cost. ``minimise_price`` uses
    the price instead of the expected cost as the objective (diagnosis).
    """
    n = len(sub)
    if n == 0:  # nothing to plan with: only an empty plan can be valid
        need = policy.target if capacity_floor is None else capacity_floor
        return _Solution("optimal", {}, 0.0) if need <= 0 else _Solution("infeasible", {}, math.inf)
    target = policy.target
    w = c.w[sub]
    cost = c.price[sub] if minimise_price else c.cost[sub]
    anchors = anchors or {}
    pos = {int(i): j for j, i in enumerate(sub)}
    anchor_pos = sorted((pos[i], cnt) for i, cnt in anchors.items() if cnt > 0)
    use_share = with_share and policy.max_pool_share_pct < 100.0
    use_min_pools = (
        with_min_pools and policy.min_pools > 1 and not (use_share and _min_pools_implied(policy))
    )
    n_y = n if use_min_pools else 0
    n_d = len(anchor_pos) if churn is not None else 0
    n_z = 1 if capacity_floor is not None else 0
    ix_c = n
    ix_y = n + 1
    ix_d = ix_y + n_y
    ix_z = ix_d + n_d
    nv = ix_z + n_z

    obj = np.zeros(nv)
    obj[:n] = cost
    lb = np.zeros(nv)
    ub = np.full(nv, np.inf)
    integrality = np.ones(nv, dtype=np.int64)
    integrality[ix_c] = 0
    lb[ix_c] = target if capacity_floor is None else capacity_floor
    if n_y:
        ub[ix_y:ix_d] = 1.0
    if math.isfinite(cap_max):
        ub[ix_c] = cap_max
        share = policy.max_pool_share_pct / 100.0 if use_share else 1.0
        ub[:n] = np.floor(share * cap_max / w + 1e-9)
    if capacity_floor is not None:
        integrality[ix_z] = 0
        ub[ix_z] = target
        big = 2.0 * float(np.max(cost / w)) + 1.0
        obj[ix_z] = -big
    for i, most in c.max_count.items():
        if i in pos:
            ub[pos[i]] = min(ub[pos[i]], float(most))
    if churn is None:
        for j, cnt in anchor_pos:
            lb[j] = cnt
            ub[j] = max(ub[j], cnt)

    rows: list[I64] = []
    cols: list[I64] = []
    vals: list[F64] = []
    r_lo: list[float] = []
    r_hi: list[float] = []
    nrow = 0

    def add(cidx: I64, v: F64, lo: float, hi: float) -> None:
        nonlocal nrow
        rows.append(np.full(len(cidx), nrow, dtype=np.int64))
        cols.append(cidx.astype(np.int64))
        vals.append(v.astype(np.float64))
        r_lo.append(lo)
        r_hi.append(hi)
        nrow += 1

    ar = np.arange(n, dtype=np.int64)
    # capacity definition: sum w x - C = 0
    add(np.append(ar, ix_c), np.append(w, -1.0), 0.0, 0.0)
    if use_share:
        s = policy.max_pool_share_pct / 100.0
        rows.append(np.repeat(np.arange(nrow, nrow + n, dtype=np.int64), 2))
        cols.append(np.column_stack((ar, np.full(n, ix_c))).ravel())
        vals.append(np.column_stack((w, np.full(n, -s))).ravel())
        r_lo.extend([-np.inf] * n)
        r_hi.extend([0.0] * n)
        nrow += n
    b, q, slack = od_bounds
    if with_od:
        odm = c.is_od[sub]
        oi = ar[odm]
        base = b * (1.0 - q)
        add(np.append(oi, ix_c), np.append(w[odm], -q), base, base + slack)
    if use_min_pools:
        rows.append(np.repeat(np.arange(nrow, nrow + n, dtype=np.int64), 2))
        cols.append(np.column_stack((ar, ix_y + ar)).ravel())
        vals.append(np.tile(np.array([1.0, -1.0]), n))
        r_lo.extend([0.0] * n)
        r_hi.extend([np.inf] * n)
        nrow += n
        add(ix_y + ar, np.ones(n), float(policy.min_pools), np.inf)
    if with_budget and policy.budget_per_hour is not None:
        add(ar, c.price[sub], -np.inf, policy.budget_per_hour)
    if n_d:
        assert churn is not None
        for k, (j, cnt) in enumerate(anchor_pos):
            add(np.array([j, ix_d + k]), np.array([1.0, 1.0]), float(cnt), np.inf)
            ub[ix_d + k] = cnt
        add(ix_d + np.arange(n_d, dtype=np.int64), np.ones(n_d), -np.inf, float(churn))
    if n_z:
        add(np.array([ix_z, ix_c]), np.array([1.0, -1.0]), -np.inf, 0.0)

    a = sparse.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nrow, nv)
    )
    res = optimize.milp(
        obj,
        integrality=integrality,
        bounds=optimize.Bounds(lb, ub),
        constraints=optimize.LinearConstraint(a, np.asarray(r_lo), np.asarray(r_hi)),
        options={
            "mip_rel_gap": MIP_REL_GAP,
            "node_limit": options.node_limit,
            "presolve": options.presolve,
        },
    )
    if res.x is None:
        return _Solution("infeasible", {}, math.inf)
    xs = np.rint(res.x[:n]).astype(np.int64)
    x = {int(sub[j]): int(xs[j]) for j in np.flatnonzero(xs)}
    status = "optimal" if res.status == 0 else "feasible"
    return _Solution(status, x, float(cost[xs > 0] @ xs[xs > 0]))


# --------------------------------------------------------------------------
# decide
# --------------------------------------------------------------------------


def decide(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
    fleet: model.Fleet,
    risk: risk_protocol.RiskModel,
    now: datetime,
    *,
    options: Options = DEFAULT_OPTIONS,
) -> plan_mod.Plan:
    """The plan for ``policy`` given the market and the running ``fleet`` at ``now``.

    Never raises for an impossible policy: returns outcome ``Infeasible`` with
    ``binding_constraint`` naming what cannot be met (see :mod:`plan`).
    """
    problems = policy.problems()
    if problems:
        return _infeasible(policy, fleet, "policy invalid: " + "; ".join(problems))
    c = _enumerate(policy, catalog, market, risk, now)
    index = {p: i for i, p in enumerate(c.pools)} if fleet.instances else {}
    stats_total = len(c.pools)

    # running fleet: eligible instances are kept candidates; the rest are replaced
    by_pool = fleet.by_pool()
    running: dict[int, list[model.FleetInstance]] = {}
    not_eligible: list[model.FleetInstance] = []
    for pool in sorted(by_pool):
        i = index.get(pool)
        if i is not None and c.why_out[i] == UNAVAILABLE:
            # out of capacity means no NEW instances: what runs there stays eligible
            c.why_out[i] = None
            c.max_count[i] = len(by_pool[pool])
        if i is None or c.why_out[i] is not None:
            not_eligible.extend(by_pool[pool])
        else:
            running[i] = _newest_first(by_pool[pool])
    elig = np.asarray([i for i, why in enumerate(c.why_out) if why is None], dtype=np.int64)
    od_b = _od_bounds(policy, c, elig)

    scaled = _scale_in(policy, c, running, od_b)
    kept = {i: len(v) for i, v in scaled.items() if v}

    sub = _prune(policy, c, elig, set(running)) if options.prune else elig
    stats = plan_mod.PlanStats(stats_total, len(elig), len(sub))
    pruned = set(elig.tolist()) - set(sub.tolist())

    fresh = _solve(policy, c, sub, od_b, options=options)
    notes: list[str] = []
    floor: float | None = None
    binding: str | None = None
    outcome: plan_mod.Outcome = "Optimal" if fresh.status == "optimal" else "Feasible"
    if fresh.status == "infeasible":
        binding = _diagnose(policy, c, elig, sub, od_b, options)
        if policy.min_capacity is not None and policy.min_capacity < policy.target:
            floor = policy.min_capacity
            fresh = _solve(policy, c, sub, od_b, options=options, capacity_floor=floor)
        if fresh.status == "infeasible":
            return _infeasible(policy, fleet, binding, c, stats)
        outcome = "Degraded"

    chosen = fresh
    fast = options.fast_path and floor is None
    if kept:
        # fast path 1: a running fleet that meets every constraint is its own anchored optimum
        anchored = (_kept_if_feasible(policy, c, kept, od_b) if fast else None) or _solve(
            policy, c, sub, od_b, options=options, anchors=kept, capacity_floor=floor
        )
        budget = max(0, policy.max_replacements_per_hour - fleet.replacements_last_hour)
        moved: _Solution | None = None
        # fast path 2: no move can beat minSavingsPercent, so the churn-limited MILP is skipped
        may_move = policy.rebalance_enabled and budget > 0 and fast
        bound = _move_bound(policy, c, kept, anchored, fresh) if may_move else None
        if bound is not None:
            if bound < anchored.objective - 1e-12:
                notes.append(
                    f"kept running capacity: moving could save at most "
                    f"{_pct(anchored.objective, bound):.2f}%, not more than "
                    f"minSavingsPercent {policy.min_savings_pct:g} after switching costs"
                )
        elif policy.rebalance_enabled and budget > 0:
            moved = _solve(
                policy,
                c,
                sub,
                od_b,
                options=options,
                anchors=kept,
                churn=budget,
                capacity_floor=floor,
            )
            if moved.status == "infeasible":
                moved = None
        if anchored.status == "infeasible":
            if moved is None:
                return _infeasible(
                    policy,
                    fleet,
                    "maxReplacementsPerHour: the running fleet cannot meet the policy without "
                    f"replacing more than the {budget} replacements left this hour"
                    + ("" if policy.rebalance_enabled else " (rebalance disabled)"),
                    c,
                    stats,
                )
            chosen = moved
            notes.append("running capacity moved: keeping it would violate the policy")
        elif (
            floor is None and moved is not None and _worth_moving(policy, c, kept, anchored, moved)
        ):
            chosen = moved
            notes.append(
                f"rebalance saves {_pct(anchored.objective, moved.objective):.1f}% "
                f"> minSavingsPercent {policy.min_savings_pct:g}"
            )
        else:
            chosen = anchored
            if floor is None and moved is not None and moved.objective < anchored.objective - 1e-12:
                notes.append(
                    f"kept running capacity: moving saves "
                    f"{_pct(anchored.objective, moved.objective):.2f}%, not more than "
                    f"minSavingsPercent {policy.min_savings_pct:g} after switching costs"
                )
        if outcome != "Degraded" and chosen.objective > fresh.objective * (1 + MIP_REL_GAP) + 1e-9:
            outcome = "Feasible"
    return _build(
        policy, c, chosen.x, running, scaled, not_eligible, outcome, binding, stats, notes, pruned
    )


def _kept_if_feasible(
    policy: model.Policy, c: _Pools, kept: Mapping[int, int], od_b: tuple[float, float, float]
) -> _Solution | None:
    """``kept`` as the anchored solution when it meets every constraint on its own
    (capacity, share cap, on-demand split, pool count, budget), else None.

    Exact: the anchored MILP bounds each running pool below by its count, and every
    pool costs more than 0 per hour, so when the running fleet is feasible adding
    anything only costs more and the optimum is the running fleet itself."""
    idx = np.asarray(sorted(i for i, n in kept.items() if n > 0), dtype=np.int64)
    if idx.size == 0:
        return None
    cnt = np.asarray([kept[int(i)] for i in idx], dtype=np.float64)
    units = c.w[idx] * cnt
    cap = float(units.sum())
    if cap < policy.target - 1e-9 or bool(np.any(c.cost[idx] <= 0.0)):
        return None
    if policy.max_pool_share_pct < 100.0 and bool(
        np.any(units > policy.max_pool_share_pct / 100.0 * cap + 1e-9)
    ):
        return None
    b, q, slack = od_b
    od_cap = float(units[c.is_od[idx]].sum())
    lo = b * (1.0 - q) + q * cap
    if od_cap < lo - 1e-9 or od_cap > lo + slack + 1e-9:
        return None
    if policy.min_pools > 1 and idx.size < policy.min_pools:
        return None
    if policy.budget_per_hour is not None and float(c.price[idx] @ cnt) > (
        policy.budget_per_hour + 1e-9
    ):
        return None
    xs = cnt.astype(np.int64)
    return _Solution(
        "optimal", {int(i): int(n) for i, n in zip(idx, xs, strict=True)}, float(c.cost[idx] @ xs)
    )


def _move_bound(
    policy: model.Policy,
    c: _Pools,
    kept: Mapping[int, int],
    anchored: _Solution,
    fresh: _Solution,
) -> float | None:
    """A lower bound of every plan's objective when it proves that no move can be worth
    it (:func:`_worth_moving` would say no to any churn-limited plan), else None.

    ``fresh`` solved to optimality within MIP_REL_GAP bounds every plan below by
    ``fresh.objective x (1 - MIP_REL_GAP)``; a move replaces at least one running
    instance, paying at least SWITCH_HOURS of the cheapest running pool's price."""
    if anchored.status != "optimal" or fresh.status != "optimal" or not kept:
        return None
    lower = fresh.objective * (1.0 - MIP_REL_GAP)
    switch = SWITCH_HOURS * min(float(c.price[i]) for i in kept)
    best = (anchored.objective - lower) * policy.horizon_hours - switch
    if best > policy.min_savings_pct / 100.0 * anchored.objective * policy.horizon_hours:
        return None
    return lower


def _pct(old: float, new: float) -> float:
    return 100.0 * (old - new) / old if old > 0 else 0.0


def _worth_moving(
    policy: model.Policy, c: _Pools, kept: Mapping[int, int], anchored: _Solution, moved: _Solution
) -> bool:
    """True when ``moved`` saves more than minSavingsPercent of ``anchored`` over the horizon,
    after paying SWITCH_HOURS of price per replaced instance."""
    replaced = [(i, cnt - moved.x.get(i, 0)) for i, cnt in kept.items() if moved.x.get(i, 0) < cnt]
    if not replaced:
        return False
    switch = SWITCH_HOURS * sum(float(c.price[i]) * n for i, n in replaced)
    saving = (anchored.objective - moved.objective) * policy.horizon_hours - switch
    return saving > policy.min_savings_pct / 100.0 * anchored.objective * policy.horizon_hours


def _newest_first(instances: Sequence[model.FleetInstance]) -> list[model.FleetInstance]:
    return sorted(instances, key=lambda inst: (inst.launched_at, inst.instance_id), reverse=True)


def _scale_in(
    policy: model.Policy,
    c: _Pools,
    running: Mapping[int, list[model.FleetInstance]],
    od_b: tuple[float, float, float],
) -> dict[int, list[model.FleetInstance]]:
    """Running instances left after scale-in (capacity above target only).

    Removes the most expensive per unit first (ties: riskiest, then newest),
    one instance at a time, while capacity stays >= target, on-demand capacity
    stays >= what the base and percentage require of the remaining capacity,
    no pool exceeds the share cap and the pool count stays >= minPools (so
    scale-in never forces a launch elsewhere).
    """
    left = {i: list(v) for i, v in running.items()}
    units = {i: float(c.w[i]) * len(v) for i, v in left.items()}
    cap = sum(units.values())
    od_cap = sum(u for i, u in units.items() if c.is_od[i])
    if cap <= policy.target:
        return left
    if policy.target <= 0:  # the empty plan meets every constraint
        return {i: [] for i in left}
    b, q, _ = od_b
    share = policy.max_pool_share_pct / 100.0
    order = sorted(
        left,
        key=lambda i: (-float(c.cost[i] / c.w[i]), -float(c.risk[i]), c.pools[i]),
    )
    for i in order:
        w = float(c.w[i])
        while left[i] and cap - w >= policy.target - 1e-9:
            new_cap = cap - w
            new_od = od_cap - w if c.is_od[i] else od_cap
            if new_od < b * (1 - q) + q * new_cap - 1e-9:
                break
            units[i] -= w
            pools_left = sum(1 for u in units.values() if u > 1e-9)
            too_big = max(units.values()) > share * new_cap + 1e-9
            if too_big or (pools_left < policy.min_pools and units[i] <= 1e-9):
                units[i] += w
                break
            left[i].pop(0)
            cap, od_cap = new_cap, new_od
    return left


def _diagnose(
    policy: model.Policy,
    c: _Pools,
    elig: I64,
    sub: I64,
    od_b: tuple[float, float, float],
    options: Options,
) -> str:
    """Name the constraint that makes the policy infeasible, with figures."""
    unit = policy.unit.value
    matching = len(c.pools)
    if matching == 0:
        return "instanceRequirements/zones: no pool matches (no priced type in the allowed zones)"
    if elig.size == 0:
        reasons = sorted({why.split(" ")[0] for why in c.why_out if why})
        return "no eligible pool: every matching pool is excluded (" + ", ".join(reasons) + ")"
    relaxed = _solve(policy, c, elig, od_b, options=options, with_budget=False, minimise_price=True)
    if relaxed.status != "infeasible" and policy.budget_per_hour is not None:
        cheapest = float(sum(c.price[i] * n for i, n in relaxed.x.items()))
        return f"budgetPerHour {policy.budget_per_hour:.2f} < cheapest feasible {cheapest:.2f}"
    n_pools = int(elig.size)
    if policy.min_pools > n_pools:
        return f"minPools {policy.min_pools} > {n_pools} eligible pools"
    free = _solve(
        policy,
        c,
        sub,
        od_b,
        options=options,
        with_budget=False,
        with_share=False,
        with_min_pools=False,
    )
    if free.status != "infeasible":
        if (
            _solve(
                policy, c, sub, od_b, options=options, with_budget=False, with_min_pools=False
            ).status
            == "infeasible"
        ):
            return (
                f"maxPoolSharePercent {policy.max_pool_share_pct:g} cannot be met with the "
                f"{n_pools} eligible pools"
            )
        return f"minPools {policy.min_pools} cannot be met with the {n_pools} eligible pools"
    spot = elig[~c.is_od[elig]]
    odp = elig[c.is_od[elig]]
    b, q, _ = od_b
    if (b > 0 or q > 0) and odp.size == 0:
        return (
            f"onDemandBase {policy.on_demand_base:g} {unit} / onDemandPercentageAboveBase "
            f"{policy.on_demand_percentage_above_base:g}: no eligible on-demand pool"
        )
    if q < 1 and spot.size == 0:
        why = ""
        if policy.max_spot_price_per_unit_hour is not None:
            why = f" (maxSpotPricePerUnitHour {policy.max_spot_price_per_unit_hour:g})"
        return f"spot capacity above the on-demand part needs spot pools: none eligible{why}"
    return (
        f"onDemandBase/onDemandPercentageAboveBase: the {unit} split cannot be met with "
        "the eligible instance sizes"
    )


def _infeasible(
    policy: model.Policy,
    fleet: model.Fleet,
    reason: str,
    c: _Pools | None = None,
    stats: plan_mod.PlanStats | None = None,
) -> plan_mod.Plan:
    counts = fleet.count_by_pool()
    rejected: tuple[plan_mod.RejectedPool, ...] = ()
    if c is not None:
        rejected = _rejected(policy, c, {}, reason_default=reason)
    return plan_mod.Plan(
        outcome="Infeasible",
        unit=policy.unit,
        target=policy.target,
        targets=dict(sorted(counts.items())),
        binding_constraint=reason,
        explanation=plan_mod.Explanation(rejected=rejected, notes=(reason,)),
        stats=stats or plan_mod.PlanStats(),
    )


def _rejected(
    policy: model.Policy,
    c: _Pools,
    x: Mapping[int, int],
    *,
    reason_default: str | None = None,
    pruned: set[int] | None = None,
) -> tuple[plan_mod.RejectedPool, ...]:
    """The three cheapest-per-unit candidate pools not in the plan, with why."""
    if not c.pools:
        return ()
    per_unit = c.cost / c.w
    order = np.lexsort((np.arange(len(c.pools)), per_unit))
    chosen_max = max((float(per_unit[i]) for i in x), default=math.inf)
    unit = policy.unit.value
    out: list[plan_mod.RejectedPool] = []
    for o in order:
        i = int(o)
        if i in x:
            continue
        why = c.why_out[i]
        if why is None:
            if reason_default is not None:
                why = reason_default
            elif pruned is not None and i in pruned:
                why = (
                    f"pruned: enough pools of the same size and market are cheaper "
                    f"(expected ${per_unit[i]:.6f}/{unit}-h)"
                )
            elif per_unit[i] > chosen_max + 1e-12:
                why = (
                    f"expected ${per_unit[i]:.6f}/{unit}-h, above every chosen pool "
                    f"(max ${chosen_max:.6f})"
                )
            else:
                why = (
                    f"cheaper per {unit} (${per_unit[i]:.6f}/{unit}-h) but its size "
                    f"({c.w[i]:g} {unit}) does not lower the plan's total under the "
                    "capacity, share and pool-count constraints"
                )
        out.append(plan_mod.RejectedPool(c.pools[i], float(c.price[i]), float(c.risk[i]), why))
        if len(out) == 3:
            break
    return tuple(out)


def _build(
    policy: model.Policy,
    c: _Pools,
    x: Mapping[int, int],
    running: Mapping[int, list[model.FleetInstance]],
    scaled: Mapping[int, list[model.FleetInstance]],
    not_eligible: list[model.FleetInstance],
    outcome: plan_mod.Outcome,
    binding: str | None,
    stats: plan_mod.PlanStats,
    notes: list[str],
    pruned: set[int],
) -> plan_mod.Plan:
    launches: list[plan_mod.Launch] = []
    terms: list[plan_mod.Terminate] = []
    for inst in sorted(not_eligible, key=lambda s: (s.pool, s.instance_id)):
        terms.append(plan_mod.Terminate(inst.instance_id, inst.pool, "not-eligible"))
    for i in sorted(set(x) | set(running), key=lambda i: c.pools[i]):
        want = x.get(i, 0)
        have = running.get(i, [])
        if want > len(have):
            launches.append(plan_mod.Launch(c.pools[i], want - len(have)))
        elif want < len(have):
            after_scale_in = len(scaled.get(i, []))
            # instances are newest first; scale-in removed the first len(have)-after ones
            for k, inst in enumerate(have[: len(have) - want]):
                reason: plan_mod.TerminateReason = (
                    "scale-in" if k < len(have) - after_scale_in else "rebalance"
                )
                terms.append(plan_mod.Terminate(inst.instance_id, inst.pool, reason))
    cap = {m: 0.0 for m in model.Market}
    cost = exp = od_eq = 0.0
    for i, n in x.items():
        cap[c.pools[i].market] += float(c.w[i]) * n
        cost += float(c.price[i]) * n
        exp += float(c.cost[i]) * n
        od_eq += float(c.od[i]) * n
    total = sum(cap.values())
    chosen = tuple(
        plan_mod.ChosenPool(
            pool=c.pools[i],
            count=n,
            price=float(c.price[i]),
            risk=float(c.risk[i]),
            units=float(c.w[i]) * n,
            share_pct=100.0 * float(c.w[i]) * n / total if total else 0.0,
        )
        for i, n in sorted(x.items(), key=lambda kv: c.pools[kv[0]])
    )
    if not launches and not terms:
        outcome = "NoChange" if outcome != "Degraded" else outcome
    return plan_mod.Plan(
        outcome=outcome,
        unit=policy.unit,
        target=policy.target,
        targets={c.pools[i]: n for i, n in sorted(x.items(), key=lambda kv: c.pools[kv[0]])},
        launches=tuple(launches),
        terminations=tuple(terms),
        cost_per_hour=cost,
        expected_cost_per_hour=exp,
        on_demand_equivalent_per_hour=od_eq,
        capacity_by_market={m: v for m, v in cap.items() if v > 0},
        explanation=plan_mod.Explanation(
            chosen=chosen, rejected=_rejected(policy, c, x, pruned=pruned), notes=tuple(notes)
        ),
        binding_constraint=binding,
        stats=stats,
    )
