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
capacity it stays missing, as with EC2 Fleet and spotfleet's planner: on-demand
never goes beyond the policy's base and percentage (until 2026-11-27 they fell
back to on-demand, which the policy does not allow and the hindsight bound,
held to the policy, need not beat). :class:`OnDemandOnly` is the exception by
design: the all-on-demand reference every saving is measured from.

- :class:`OnDemandOnly`: the cheapest on-demand capacity per unit.
- :class:`LowestPrice`: spot pools by price per unit.
- :class:`CapacityOptimized`: spot pools by the risk signal (lowest first),
  price ignored (ties by pool key), as AWS's capacity-optimized ignores price.
- :class:`PriceCapacityOptimized`: AWS's documented behaviour: the lowest-risk
  pools first (the lowest-risk quarter of eligible pools, at least
  ``minPools``), then the lowest price among them.
- :class:`Diversified`: spot capacity spread evenly over every eligible pool.
- :class:`Spotfleet`: the real :func:`spotfleet_engine.planner.decide`.

Which pools a baseline may use is :mod:`spotfleet_engine.candidates`, the
planner's own rule; the hindsight bound they are all measured against is
:mod:`spotfleet_engine.backtest.oracle`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from spotfleet_engine import candidates as cand_mod
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


class Candidate(NamedTuple):
    """An eligible pool: ``price`` USD per instance-hour, ``units`` per instance, ``risk``."""

    pool: model.Pool
    price: float
    units: float
    risk: float = 0.0

    @property
    def unit_price(self) -> float:
        return self.price / self.units


def eligible(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
) -> tuple[list[Candidate], list[Candidate]]:
    """(spot, on-demand) pools a baseline may launch into now, sorted by key: the
    planner's eligible candidates (:func:`spotfleet_engine.candidates.build`)."""
    c = cand_mod.build(policy, catalog, market, None, market.observed_at)
    spot: list[Candidate] = []
    od: list[Candidate] = []
    rows = zip(c.pools, c.price.tolist(), c.w.tolist(), c.is_od.tolist(), c.why_out, strict=True)
    for pool, price, units, is_od, why in rows:
        if why is None:
            (od if is_od else spot).append(Candidate(pool, price, units))
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
    types = cand_mod.eligible_types(policy, catalog)
    target = policy.target
    units_of: dict[model.Pool, float] = {}
    counts = fleet.count_by_pool()
    for pool, n in counts.items():
        units_of[pool] = n * types.get(pool.instance_type, 0.0)
    running = sum(units_of.values())
    od_running = sum(u for p, u in units_of.items() if p.market is model.Market.ON_DEMAND)
    od_need_total = target if all_on_demand else cand_mod.OnDemandSplit.of(policy).required(target)
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
            fill(spot, left, share_cap)
    # what spot cannot take stays missing: the policy's on-demand share holds here too

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
        spot, od = eligible(policy, catalog, market)
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
