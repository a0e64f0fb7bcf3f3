"""Allocation strategies the backtester compares, all behind ``decide``'s signature.

Every strategy is called as ``strategy.decide(policy, catalog, market, fleet,
risk, now) -> plan.Plan`` with the market as seen at ``now`` (nothing later)
and the fleet it holds; only the plan's launches and terminations are acted on.

The AWS-style baselines behave like an EC2 Fleet of type ``maintain`` with the
named allocation strategy: running instances are kept (EC2 does not move them
when prices change); capacity lost to interruptions is relaunched at the next
decision into the pools the strategy ranks first, among those not known to be
out of capacity. They honour the same policy as spotfleet: requirements and
zones, the on-demand base and percentage (EC2 Fleet's on-demand target),
``maxSpotPricePerUnitHour`` (MaxPrice), ``minPools`` (lowest-price's
InstancePoolsToUseCount: the spot capacity is split over at least that many
pools) and ``maxPoolSharePercent``. When no spot pool can take the missing
capacity they fall back to on-demand, as spotfleet's planner may.

- :class:`OnDemandOnly`: the cheapest on-demand capacity per unit.
- :class:`LowestPrice`: spot pools by price per unit.
- :class:`CapacityOptimized`: spot pools by the risk signal (lowest first),
  price ignored (ties by pool key), as AWS's capacity-optimized ignores price.
- :class:`PriceCapacityOptimized`: AWS's documented behaviour: the lowest-risk
  pools first (the lowest-risk quarter of eligible pools, at least
  ``minPools``), then the lowest price among them.
- :class:`Diversified`: spot capacity spread evenly over every eligible pool.
- :class:`Spotfleet`: the real :func:`spotfleet_engine.planner.decide`.
- :class:`HindsightOracle`: not a runnable strategy but the bound: per
  decision interval it solves, knowing that interval's real prices and
  reclaims, the linear relaxation of the cheapest allowed fleet (see its doc).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import optimize, sparse

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model, planner
from spotfleet_engine import plan as plan_mod
from spotfleet_engine.risk import protocol as risk_protocol


class Strategy(Protocol):
    """What the backtester runs: a name, the risk model it is given, and ``decide``."""

    @property
    def name(self) -> str: ...

    @property
    def risk(self) -> risk_protocol.RiskModel: ...

    def decide(
        self,
        policy: model.Policy,
        catalog: catalog_mod.Catalog,
        market: market_mod.MarketSnapshot,
        fleet: model.Fleet,
        risk: risk_protocol.RiskModel,
        now: datetime,
    ) -> plan_mod.Plan: ...


@dataclass(frozen=True)
class Spotfleet:
    """spotfleet's own planner, unchanged."""

    risk: risk_protocol.RiskModel
    name: str = "spotfleet"
    options: planner.Options = planner.DEFAULT_OPTIONS

    def decide(
        self,
        policy: model.Policy,
        catalog: catalog_mod.Catalog,
        market: market_mod.MarketSnapshot,
        fleet: model.Fleet,
        risk: risk_protocol.RiskModel,
        now: datetime,
    ) -> plan_mod.Plan:
        return planner.decide(policy, catalog, market, fleet, risk, now, options=self.options)


# --------------------------------------------------------------------------
# AWS-style baselines
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """An eligible pool: ``price`` USD per instance-hour, ``units`` per instance, ``risk``."""

    pool: model.Pool
    price: float
    units: float
    risk: float = 0.0

    @property
    def unit_price(self) -> float:
        return self.price / self.units


def _types(policy: model.Policy, catalog: catalog_mod.Catalog) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in sorted(catalog.types):
        it = catalog.types[name]
        units = it.units(policy.unit)
        if name in catalog.on_demand_usd_per_hour and units > 0 and policy.requirements.matches(it):
            out[name] = units
    return out


def eligible(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
    memo: dict[str, Any] | None = None,
) -> tuple[list[Candidate], list[Candidate]]:
    """(spot, on-demand) pools a baseline may launch into now, sorted by key.

    Same rules as the planner: type matches the requirements and has an
    on-demand price, zone allowed, spot price known, not marked unavailable,
    spot price within ``maxSpotPricePerUnitHour x units``. ``memo`` (a dict the
    caller keeps between calls) lets immutable pools and on-demand candidates
    be reused; the result is the same with or without it.
    """
    types = _types(policy, catalog)
    zones_ok = frozenset(policy.zones)
    spot: list[Candidate] = []
    spot_zones: dict[str, frozenset[str]] = {}
    cap = policy.max_spot_price_per_unit_hour
    pools: dict[tuple[str, str], model.Pool] | None = None
    if memo is not None:
        pools = memo.setdefault("pools", {})
    for (t, z), hist in sorted(market.spot_history.items()):
        w = types.get(t)
        if w is None or not hist or (zones_ok and z not in zones_ok):
            continue
        spot_zones[t] = spot_zones.get(t, frozenset()) | {z}
        pool = pools.get((t, z)) if pools is not None else None
        if pool is None:
            pool = model.Pool(t, z, model.Market.SPOT)
            if pools is not None:
                pools[(t, z)] = pool
        price = hist[-1].price
        if pool in market.unavailable or (cap is not None and price > cap * w + 1e-12):
            continue
        spot.append(Candidate(pool, price, w))
    # on-demand pools depend only on (policy, catalog, zones with prices): reuse them
    zkey = tuple(sorted(spot_zones.items()))
    if memo is not None:
        hit = memo.get("od")
        if hit is not None and hit[0] is policy and hit[1] is catalog and hit[2] == zkey:
            return spot, list(hit[3])
    od: list[Candidate] = []
    for t, w in types.items():
        zs = catalog.zones.get(t) or spot_zones.get(t, frozenset())
        for z in sorted(zs):
            if not zones_ok or z in zones_ok:
                od.append(
                    Candidate(
                        model.Pool(t, z, model.Market.ON_DEMAND),
                        catalog.on_demand_usd_per_hour[t],
                        w,
                    )
                )
    if memo is not None:
        memo["od"] = (policy, catalog, zkey, tuple(od))
    return spot, od


def _with_risk(
    cands: list[Candidate],
    risk: risk_protocol.RiskModel,
    market: market_mod.MarketSnapshot,
    catalog: catalog_mod.Catalog,
    now: datetime,
) -> list[Candidate]:
    if not cands:
        return cands
    r = risk.interruption_probability([c.pool for c in cands], market, catalog, now)
    return [Candidate(c.pool, c.price, c.units, float(p)) for c, p in zip(cands, r, strict=True)]


Ranker = Callable[[list[Candidate], model.Policy], list[Candidate]]


def _maintain(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
    fleet: model.Fleet,
    spot: list[Candidate],
    od: list[Candidate],
    *,
    spread: bool = False,
    all_on_demand: bool = False,
) -> plan_mod.Plan:
    """Keep what runs, top up to the target in ``spot`` order (already ranked),
    scale in what exceeds it; see the module doc."""
    types = _types(policy, catalog)
    target = policy.target
    units_of: dict[model.Pool, float] = {}
    counts = fleet.count_by_pool()
    for pool, n in counts.items():
        units_of[pool] = n * types.get(pool.instance_type, 0.0)
    running = sum(units_of.values())
    od_running = sum(u for p, u in units_of.items() if p.market is model.Market.ON_DEMAND)
    b = min(policy.on_demand_base, target)
    q = policy.on_demand_percentage_above_base / 100.0
    od_need_total = target if all_on_demand else b + q * (target - b)
    share_cap = policy.max_pool_share_pct / 100.0 * target
    spot_total = max(target - od_need_total, 0.0)
    per_pool = share_cap
    if policy.min_pools > 1 and spot_total > 0:
        per_pool = min(share_cap, spot_total / policy.min_pools)

    launches: dict[model.Pool, int] = {}

    def room(c: Candidate, limit: float) -> int:
        have = units_of.get(c.pool, 0.0)
        return max(math.floor((limit - have) / c.units + 1e-9), 0)

    def add(c: Candidate, n: int) -> float:
        launches[c.pool] = launches.get(c.pool, 0) + n
        units_of[c.pool] = units_of.get(c.pool, 0.0) + n * c.units
        return n * c.units

    def fill(cands: Sequence[Candidate], need: float, limit: float) -> float:
        if spread:
            progress = True
            while need > 1e-9 and progress:
                progress = False
                for c in cands:
                    if need <= 1e-9:
                        break
                    if room(c, limit) >= 1:
                        need -= add(c, 1)
                        progress = True
            return need
        for c in cands:
            if need <= 1e-9:
                break
            n = min(room(c, limit), math.ceil(need / c.units - 1e-9))
            if n > 0:
                need -= add(c, n)
        return need

    od_sorted = sorted(od, key=lambda c: (c.unit_price, c.pool))
    od_need = od_need_total - od_running
    if od_need > 1e-9:
        running += od_need - fill(od_sorted, od_need, share_cap)
    need = target - running
    if need > 1e-9 and not all_on_demand:
        left = fill(spot, need, per_pool)
        if left > 1e-9 and per_pool < share_cap:
            left = fill(spot, left, share_cap)
        need = left
    if need > 1e-9:
        need = fill(od_sorted, need, share_cap)

    # scale in: newest spot instances first while capacity stays >= target
    terminations: list[plan_mod.Terminate] = []
    total = sum(units_of.values())
    smallest = min(
        (types.get(p.instance_type, 0.0) for p in counts if p.market is model.Market.SPOT),
        default=math.inf,
    )
    if not launches and total - smallest >= target - 1e-9:
        for inst in sorted(
            fleet.instances, key=lambda i: (i.launched_at, i.instance_id), reverse=True
        ):
            w = types.get(inst.pool.instance_type, 0.0)
            if inst.pool.market is model.Market.SPOT and total - w >= target - 1e-9:
                terminations.append(plan_mod.Terminate(inst.instance_id, inst.pool, "scale-in"))
                total -= w
                units_of[inst.pool] -= w
    targets = {p: counts.get(p, 0) + launches.get(p, 0) for p in set(counts) | set(launches)}
    for t in terminations:
        targets[t.pool] -= 1
    targets = {p: n for p, n in targets.items() if n > 0}
    price = {c.pool: c.price for c in (*spot, *od)}
    cost = 0.0
    for p, n in targets.items():
        pr = price.get(p)
        if pr is None and p.market is model.Market.SPOT:
            pr = market.spot_price(p.instance_type, p.zone)
        if pr is None:
            pr = catalog.on_demand_usd_per_hour.get(p.instance_type, 0.0)
        cost += n * pr
    od_eq = sum(
        n * catalog.on_demand_usd_per_hour.get(p.instance_type, 0.0) for p, n in targets.items()
    )
    by_market: dict[model.Market, float] = {}
    for p, n in targets.items():
        by_market[p.market] = by_market.get(p.market, 0.0) + n * types.get(p.instance_type, 0.0)
    acts = tuple(plan_mod.Launch(p, n) for p, n in sorted(launches.items()))
    outcome: plan_mod.Outcome = "NoChange" if not acts and not terminations else "Feasible"
    if sum(by_market.values()) < target - 1e-9:
        outcome = "Degraded"
    return plan_mod.Plan(
        outcome=outcome,
        unit=policy.unit,
        target=target,
        targets=targets,
        launches=acts,
        terminations=tuple(terminations),
        cost_per_hour=cost,
        expected_cost_per_hour=cost,
        on_demand_equivalent_per_hour=od_eq,
        capacity_by_market=by_market,
    )


@dataclass(frozen=True)
class _Baseline:
    risk: risk_protocol.RiskModel
    name: str = "baseline"
    #: reuse of the on-demand candidates between calls (pure values; see ``eligible``)
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def rank(self, spot: list[Candidate], policy: model.Policy) -> list[Candidate]:
        raise NotImplementedError

    uses_risk = False
    spread = False
    all_on_demand = False

    def decide(
        self,
        policy: model.Policy,
        catalog: catalog_mod.Catalog,
        market: market_mod.MarketSnapshot,
        fleet: model.Fleet,
        risk: risk_protocol.RiskModel,
        now: datetime,
    ) -> plan_mod.Plan:
        spot, od = eligible(policy, catalog, market, self._memo)
        if self.uses_risk:
            spot = _with_risk(spot, risk, market, catalog, now)
        return _maintain(
            policy,
            catalog,
            market,
            fleet,
            self.rank(spot, policy),
            od,
            spread=self.spread,
            all_on_demand=self.all_on_demand,
        )


@dataclass(frozen=True)
class OnDemandOnly(_Baseline):
    name: str = "on-demand"
    all_on_demand = True

    def rank(self, spot: list[Candidate], policy: model.Policy) -> list[Candidate]:
        return []


@dataclass(frozen=True)
class LowestPrice(_Baseline):
    name: str = "lowest-price"

    def rank(self, spot: list[Candidate], policy: model.Policy) -> list[Candidate]:
        return sorted(spot, key=lambda c: (c.unit_price, c.pool))


@dataclass(frozen=True)
class CapacityOptimized(_Baseline):
    name: str = "capacity-optimized"
    uses_risk = True

    def rank(self, spot: list[Candidate], policy: model.Policy) -> list[Candidate]:
        return sorted(spot, key=lambda c: (c.risk, c.pool))


@dataclass(frozen=True)
class PriceCapacityOptimized(_Baseline):
    name: str = "price-capacity-optimized"
    uses_risk = True

    def rank(self, spot: list[Candidate], policy: model.Policy) -> list[Candidate]:
        by_risk = sorted(spot, key=lambda c: (c.risk, c.pool))
        m = max(policy.min_pools, math.ceil(len(by_risk) / 4))
        head = sorted(by_risk[:m], key=lambda c: (c.unit_price, c.pool))
        tail = sorted(by_risk[m:], key=lambda c: (c.risk, c.unit_price, c.pool))
        return head + tail


@dataclass(frozen=True)
class Diversified(_Baseline):
    name: str = "diversified"
    spread = True

    def rank(self, spot: list[Candidate], policy: model.Policy) -> list[Candidate]:
        return sorted(spot, key=lambda c: c.pool)


def baselines(risk: risk_protocol.RiskModel) -> list[Strategy]:
    """The five AWS-style baselines, in report order, sharing ``risk``."""
    return [
        OnDemandOnly(risk),
        LowestPrice(risk),
        CapacityOptimized(risk),
        PriceCapacityOptimized(risk),
        Diversified(risk),
    ]


# --------------------------------------------------------------------------
# The hindsight bound
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class OracleInterval:
    """The oracle's answer for one interval: ``cost`` penalised USD (a lower
    bound of any strategy's penalised cost in that interval), ``shortfall_unit_h``
    capacity it leaves unmet, ``interrupted`` instances it accepts to lose."""

    cost: float
    billed: float
    shortfall_unit_h: float
    interrupted: float
    units: dict[model.Pool, float]


@dataclass(frozen=True)
class HindsightOracle:
    """Per interval, the linear relaxation of the cheapest fleet given the
    interval's real prices and reclaims; summed, a bound no strategy can beat.

    Variables are units per pool (fractional), ``s`` unmet capacity and
    ``Z = sum(units) + s``. Cost per unit: on-demand ``od x dt / w``; spot
    ``min(real bill over the interval, min over its reclaims at t of
    (bill until t + penalty))/w``; unmet capacity ``shortfall_rate x dt``.
    Constraints: ``Z >= target``; per pool ``units <= share x Z + w`` (one
    instance of slack); on-demand units ``>= (1-q) b + q target - s``.
    Every strategy's fleet at the start of an interval (what it holds after its
    decision, plus ``s = max(0, target - capacity)``) satisfies these, and its
    real penalised cost in the interval is at least the objective there:
    each instance pays its full bill or is reclaimed and pays the bill until
    then plus the penalty, and unmet capacity costs the shortfall rate. The
    relaxation drops ``minPools``, the budget, churn limits, integrality and
    the drought rule (a clairvoyant could have launched before the pool ran
    dry) and may use any candidate pool regardless of ``maxSpotPrice``: it
    only gets cheaper. Shortfall caused by reclaims is not charged to the
    oracle, which again only lowers it.
    """

    name: str = "oracle"

    def interval(
        self,
        policy: model.Policy,
        dt_h: float,
        spot_pools: Sequence[model.Pool],
        spot_bill: Sequence[float],
        spot_reclaim_bill: Sequence[float | None],
        od_pools: Sequence[model.Pool],
        od_price: Callable[[str], float],
        weight: Callable[[str], float],
        penalty_od_hours: float,
        shortfall_rate: float,
        *,
        exact_lp: bool = False,
    ) -> OracleInterval:
        """Solve one interval. ``spot_bill[i]`` is the real bill of one instance
        of ``spot_pools[i]`` over the interval; ``spot_reclaim_bill[i]`` the bill
        until its first reclaim in the interval (None when none).

        On-demand pools of one type cost the same, so they are merged into one
        variable per type whose cap is the sum of the zones' caps (exact). The
        LP is solved by a greedy fill for a fixed ``Z`` (exact for this
        structure) and a search over ``Z`` (the value is convex in ``Z``);
        ``exact_lp=True`` solves it with HiGHS instead (the tests compare both).
        """
        target = policy.target
        share = policy.max_pool_share_pct / 100.0
        b = min(policy.on_demand_base, target)
        q = policy.on_demand_percentage_above_base / 100.0
        need_od = (1.0 - q) * b + q * target
        od_types: dict[str, int] = {}
        for p in od_pools:
            od_types[p.instance_type] = od_types.get(p.instance_type, 0) + 1
        names: list[model.Pool] = [
            *spot_pools,
            *(model.Pool(t, "*", model.Market.ON_DEMAND) for t in sorted(od_types)),
        ]
        ns = len(spot_pools)
        n = len(names)
        w = np.empty(n, dtype=np.float64)
        cost = np.empty(n, dtype=np.float64)
        slope = np.empty(n, dtype=np.float64)
        intercept = np.empty(n, dtype=np.float64)
        restricted = np.zeros(n, dtype=np.bool_)
        interrupted_branch = np.zeros(n, dtype=np.bool_)
        for i, p in enumerate(spot_pools):
            w[i] = weight(p.instance_type)
            c = spot_bill[i]
            alt = spot_reclaim_bill[i]
            if alt is not None:
                alt_total = alt + penalty_od_hours * od_price(p.instance_type)
                if alt_total < c:
                    c = alt_total
                    interrupted_branch[i] = True
            cost[i] = c / w[i]
            slope[i], intercept[i] = share, w[i]
        for j, t in enumerate(sorted(od_types)):
            i = ns + j
            m = od_types[t]
            w[i] = weight(t)
            cost[i] = od_price(t) * dt_h / w[i]
            slope[i], intercept[i] = m * share, m * w[i]
            restricted[i] = True
        s_cost = shortfall_rate * dt_h
        if exact_lp:
            x, s, value = _oracle_lp(cost, slope, intercept, restricted, s_cost, target, need_od)
        else:
            x, s, value = _oracle_greedy(
                cost, slope, intercept, restricted, s_cost, target, need_od
            )
        units: dict[model.Pool, float] = {}
        for i in range(n):
            if x[i] > 1e-12:
                units[names[i]] = float(x[i])
        inter = float(np.sum(x[interrupted_branch] / w[interrupted_branch]))
        penalty = float(
            sum(
                x[i] / w[i] * penalty_od_hours * od_price(spot_pools[i].instance_type)
                for i in np.flatnonzero(interrupted_branch).tolist()
            )
        )
        return OracleInterval(
            cost=value,
            billed=value - s_cost * s - penalty,
            shortfall_unit_h=s * dt_h,
            interrupted=inter,
            units=units,
        )


F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


def _fill(
    cost: F64, cap: F64, restricted: B, s_cost: float, s_cap: float, z: float, need: float
) -> tuple[F64, float, float]:
    """Cheapest fractional fill of ``z`` units with ``>= need`` from restricted
    items (``restricted`` pools and ``s``); returns (units, s, value) or value inf."""
    n = len(cost)
    c_all = np.concatenate((cost, [s_cost]))
    cap_all = np.concatenate((np.minimum(cap, z), [min(s_cap, z)]))
    res_all = np.concatenate((restricted, [True]))
    take = np.zeros(n + 1, dtype=np.float64)
    left = need
    for i in np.argsort(c_all, kind="stable"):
        if left <= 1e-12:
            break
        if res_all[i]:
            got = min(cap_all[i], left)
            take[i] += got
            left -= got
    if left > 1e-9:
        return take[:n], float(take[n]), math.inf
    left = z - float(take.sum())
    for i in np.argsort(c_all, kind="stable"):
        if left <= 1e-12:
            break
        got = min(cap_all[i] - take[i], left)
        if got > 0:
            take[i] += got
            left -= got
    if left > 1e-9:
        return take[:n], float(take[n]), math.inf
    return take[:n], float(take[n]), float(c_all @ take)


def _oracle_greedy(
    cost: F64, slope: F64, intercept: F64, restricted: B, s_cost: float, target: float, need: float
) -> tuple[F64, float, float]:
    def at(z: float) -> tuple[F64, float, float]:
        return _fill(cost, slope * z + intercept, restricted, s_cost, target, z, need)

    best = at(target)
    step = 1e-6 * max(target, 1.0)
    if at(target + step)[2] < best[2] - 1e-12:
        cmin = float(min(cost.min(initial=math.inf), s_cost))
        hi = best[2] / cmin if cmin > 0 and math.isfinite(best[2]) else 100.0 * target
        lo = target
        hi = max(hi, target + step)
        g = (math.sqrt(5.0) - 1.0) / 2.0
        a, bb = lo, hi
        c1, c2 = bb - g * (bb - a), a + g * (bb - a)
        f1, f2 = at(c1)[2], at(c2)[2]
        for _ in range(100):
            if f1 <= f2:
                bb, c2, f2 = c2, c1, f1
                c1 = bb - g * (bb - a)
                f1 = at(c1)[2]
            else:
                a, c1, f1 = c1, c2, f2
                c2 = a + g * (bb - a)
                f2 = at(c2)[2]
            if bb - a < 1e-9 * hi:
                break
        cand = at(0.5 * (a + bb))
        if cand[2] < best[2]:
            best = cand
    return best


def _oracle_lp(
    cost: F64, slope: F64, intercept: F64, restricted: B, s_cost: float, target: float, need: float
) -> tuple[F64, float, float]:
    """The same LP solved by HiGHS (variables: units..., s, Z)."""
    n = len(cost)
    c = np.concatenate((cost, [s_cost, 0.0]))
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rhs: list[float] = []
    for i in range(n):  # u_i - slope_i Z <= intercept_i
        rows += [i, i]
        cols += [i, n + 1]
        vals += [1.0, -float(slope[i])]
        rhs.append(float(intercept[i]))
    r = n
    idx = [i for i in range(n) if restricted[i]]
    rows += [r] * (len(idx) + 1)
    cols += [*idx, n]
    vals += [-1.0] * (len(idx) + 1)
    rhs.append(-need)
    a_ub = sparse.csr_matrix((vals, (rows, cols)), shape=(n + 1, n + 2))
    a_eq = sparse.csr_matrix(np.concatenate((np.ones(n + 1), [-1.0]))[None, :])
    bounds = [(0.0, None)] * n + [(0.0, target), (target, None)]
    res = optimize.linprog(
        c,
        A_ub=a_ub,
        b_ub=np.asarray(rhs),
        A_eq=a_eq,
        b_eq=np.zeros(1),
        bounds=bounds,
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"oracle LP failed: {res.message}")
    x = np.asarray(res.x, dtype=np.float64)
    return x[:n], float(x[n]), float(res.fun)
