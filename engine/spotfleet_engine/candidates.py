"""Candidate pools of one policy: eligibility, enumeration, expected cost, pruning.

The one implementation of "which pools may this policy use" for the planner,
the AWS-style baselines (:mod:`spotfleet_engine.strategies`) and the backtest
(:mod:`spotfleet_engine.backtest.prices`):

- a type is a candidate when it matches the policy's instance requirements,
  has an on-demand price and provides more than 0 units (:func:`eligible_types`);
- a zone is allowed when the policy lists no zones or lists it (:func:`zone_allowed`);
- spot pools are those the market prices now; on-demand pools are one per zone
  the catalog offers the type in or, when it lists none, per zone with a spot
  price for it (:func:`on_demand_pools`);
- a candidate is *eligible* unless its spot price is above
  ``maxSpotPricePerUnitHour x units`` or the market marks it out of capacity
  (:func:`build`; ``Candidates.why_out`` says why not; a pool out of capacity
  keeps what already runs in it, :meth:`Candidates.keep_running`).

Expected cost per instance-hour (:func:`expected_cost`) is
``c_i = p_i + A x h_i x L_i`` with the hourly hazard ``h_i = -ln(1 - r_i) / H``
of the risk model's probability ``r_i`` over its horizon ``H``, the cost of one
interruption ``L_i = LOST_WORK_HOURS x od_i + REPLACEMENT_GAP_HOURS x
SHORTFALL_MULTIPLE x u x w_i`` (``u``: the cheapest on-demand USD per unit-hour
among the candidates) and ``A`` the objective's :data:`RISK_AVERSION`.

The on-demand split (:class:`OnDemandSplit`) is the one formula for how much
capacity must be on-demand: ``b + q (C - b)`` with ``b = min(onDemandBase,
target)`` and ``q = onDemandPercentageAboveBase / 100``.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import milp, model
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
#: ``Candidates.why_out`` of a pool the market marks out of capacity.
UNAVAILABLE = "marked unavailable (insufficient capacity)"

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------
# eligibility
# --------------------------------------------------------------------------


def eligible_types(policy: model.Policy, catalog: catalog_mod.Catalog) -> Mapping[str, float]:
    """Types the policy may use -> units per instance, in name order: the type matches
    the instance requirements, has an on-demand price and provides more than 0 units
    (computed once per catalog, unit and requirements)."""
    unit, req = policy.unit, policy.requirements

    def compute() -> Mapping[str, float]:
        out: dict[str, float] = {}
        prices = catalog.on_demand_usd_per_hour
        for name in sorted(catalog.types):
            it = catalog.types[name]
            units = it.units(unit)
            if name in prices and units > 0 and req.matches(it):
                out[name] = units
        return MappingProxyType(out)

    return catalog.derived(("eligible_types", unit, req), compute)


def zone_allowed(zones: Collection[str], zone: str) -> bool:
    """True when the policy's ``zones`` are empty (any zone) or list ``zone``."""
    return not zones or zone in zones


def on_demand_pools(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    types: Iterable[str],
    spot_zones: Mapping[str, Collection[str]],
) -> list[model.Pool]:
    """On-demand pools of ``types`` (in the order given, zones sorted): one per zone
    the catalog offers the type in or, when it lists none, per zone in
    ``spot_zones[type]`` (where it has a spot price); only the policy's zones."""
    out: list[model.Pool] = []
    zones = policy.zones
    for t in types:
        if catalog.on_demand_pools(t):
            out.extend(_offered(catalog, t, zones))
        else:
            pools = (
                model.Pool(t, z, model.Market.ON_DEMAND) for z in sorted(spot_zones.get(t, ()))
            )
            out.extend(p for p in pools if zone_allowed(zones, p.zone))
    return out


def _offered(
    catalog: catalog_mod.Catalog, t: str, zones: tuple[str, ...]
) -> tuple[model.Pool, ...]:
    """The catalog's on-demand pools of ``t`` in ``zones`` (computed once per catalog)."""
    return catalog.derived(
        ("on_demand_pools", t, zones),
        lambda: tuple(p for p in catalog.on_demand_pools(t) if zone_allowed(zones, p.zone)),
    )


@dataclass(frozen=True)
class OnDemandSplit:
    """How much capacity must be on-demand: ``base`` units (``min(onDemandBase,
    target)``) plus ``fraction`` (``onDemandPercentageAboveBase / 100``) of what is
    above the base."""

    base: float
    fraction: float

    @classmethod
    def of(cls, policy: model.Policy) -> OnDemandSplit:
        return cls(
            min(policy.on_demand_base, policy.target),
            policy.on_demand_percentage_above_base / 100.0,
        )

    @property
    def constant(self) -> float:
        """The part independent of capacity: ``base x (1 - fraction)`` units."""
        return self.base * (1.0 - self.fraction)

    @property
    def wanted(self) -> bool:
        """True when the policy asks for any on-demand capacity."""
        return self.base > 0 or self.fraction > 0

    def required(self, capacity: float) -> float:
        """On-demand units a plan of ``capacity`` units must hold:
        ``b + q (C - b)``, written ``b (1 - q) + q C``."""
        return self.constant + self.fraction * capacity


# --------------------------------------------------------------------------
# enumeration and expected cost
# --------------------------------------------------------------------------


@dataclass
class Candidates:
    """Candidate pools (those matching requirements and zones) as parallel arrays.

    Spot pools come first (``is_od`` False), sorted by pool, then on-demand pools by
    type and zone. ``w`` units per instance, ``price`` USD per instance-hour (spot:
    the current market price), ``od`` the type's on-demand USD per instance-hour,
    ``risk`` interruption probability over the risk model's horizon (0 on-demand),
    ``cost`` expected USD per instance-hour (:func:`expected_cost`) at the objective's
    risk aversion, ``money`` the same at aversion 1 (what the pool is expected to cost
    in USD, interruptions at their expected cost: voluntary moves are judged on it), ``why_out``
    None for an eligible pool, else why not. ``max_count`` (index -> instances)
    caps pools out of capacity that keep what already runs in them.
    """

    pools: list[model.Pool]
    w: F64
    price: F64
    od: F64
    is_od: B
    risk: F64
    cost: F64
    money: F64
    why_out: list[str | None]
    max_count: dict[int, int] = field(default_factory=dict)

    def eligible(self) -> I64:
        """Indices of the eligible pools, ascending."""
        return np.asarray([i for i, why in enumerate(self.why_out) if why is None], dtype=np.int64)

    def keep_running(self, i: int, running: int) -> None:
        """A pool out of capacity that already runs ``running`` instances stays
        eligible for those (no new ones)."""
        if self.why_out[i] == UNAVAILABLE:
            self.why_out[i] = None
            self.max_count[i] = running


@dataclass(frozen=True, eq=False)
class _OnDemandPart:
    """The on-demand candidates of a policy: pools, USD per instance-hour, units."""

    pools: tuple[model.Pool, ...]
    price: F64
    w: F64


def _on_demand_part(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    types: Mapping[str, float],
    spot_zones: Mapping[str, list[str]],
) -> _OnDemandPart:
    """:func:`on_demand_pools` of ``types`` with prices and units, computed once per
    catalog for the policy's unit, requirements, zones and the spot zones of the
    types the catalog offers nowhere (the only part that depends on the market)."""
    fallback = tuple(
        (t, tuple(spot_zones.get(t, ()))) for t in types if not catalog.on_demand_pools(t)
    )

    def compute() -> _OnDemandPart:
        pools = tuple(on_demand_pools(policy, catalog, types, spot_zones))
        prices = catalog.on_demand_usd_per_hour
        return _OnDemandPart(
            pools,
            np.asarray([prices[p.instance_type] for p in pools], dtype=np.float64),
            np.asarray([types[p.instance_type] for p in pools], dtype=np.float64),
        )

    key = ("on_demand_part", policy.unit, policy.requirements, policy.zones, fallback)
    return catalog.derived(key, compute)


def build(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
    risk: risk_protocol.RiskModel | None,
    now: datetime,
) -> Candidates:
    """The policy's candidate pools at ``now`` with eligibility, risk and expected cost.

    ``risk`` None asks no risk model: every risk is 0 and the cost is the price (for
    callers that rank by price, or ask a risk model about fewer pools themselves).
    Raises ValueError when the risk model returns the wrong shape."""
    types = eligible_types(policy, catalog)
    od_prices = catalog.on_demand_usd_per_hour
    spot: list[model.Pool] = []
    spot_price: list[float] = []
    spot_w: list[float] = []
    spot_od: list[float] = []
    spot_zones: dict[str, list[str]] = {}
    for pool, p in market.spot_pools():
        wt = types.get(pool.instance_type)
        if wt is None or not zone_allowed(policy.zones, pool.zone):
            continue
        spot.append(pool)
        spot_price.append(p)
        spot_w.append(wt)
        spot_od.append(od_prices[pool.instance_type])
        spot_zones.setdefault(pool.instance_type, []).append(pool.zone)
    odp = _on_demand_part(policy, catalog, types, spot_zones)
    n_spot = len(spot)
    pools = spot + list(odp.pools)
    n = len(pools)
    w = np.concatenate((np.asarray(spot_w, dtype=np.float64), odp.w))
    od = np.concatenate((np.asarray(spot_od, dtype=np.float64), odp.price))
    price = np.concatenate((np.asarray(spot_price, dtype=np.float64), odp.price))
    is_od = np.zeros(n, dtype=np.bool_)
    is_od[n_spot:] = True
    r = np.zeros(n, dtype=np.float64)
    if risk is None:
        cost = price.copy()
        money = cost
    else:
        # the protocol gives on-demand pools 0.0: ask only about the spot ones
        r_spot = np.asarray(
            risk.interruption_probability(spot, market, catalog, now), dtype=np.float64
        )
        if r_spot.shape != (n_spot,):
            raise ValueError(f"risk model {risk.name!r} returned {r_spot.shape} for {n_spot} pools")
        if market.penalties:  # recent interruptions seen: 1 - (1 - r)(1 - penalty)
            extra = np.asarray([market.penalties.get(p, 0.0) for p in spot], dtype=np.float64)
            r_spot = 1.0 - (1.0 - np.clip(r_spot, 0.0, 1.0)) * (1.0 - np.clip(extra, 0.0, 1.0))
        r[:n_spot] = np.clip(r_spot, 0.0, 1.0)
        ref = reference_unit_od(od, w, is_od)
        hours = float(risk.horizon_hours)
        cost = expected_cost(price, r, od, w, ref, hours, policy.objective)
        money = expected_cost(price, r, od, w, ref, hours, "lowestCost")
    why: list[str | None] = [None] * n
    maxp = policy.max_spot_price_per_unit_hour
    if maxp is not None:
        unit = policy.unit.value
        for i in np.flatnonzero(~is_od & (price > maxp * w + 1e-12)).tolist():
            why[i] = (
                f"spot ${price[i] / w[i]:.6f}/{unit}-h above maxSpotPricePerUnitHour ${maxp:.6f}"
            )
    if market.unavailable:
        for i, pl in enumerate(pools):
            if pl in market.unavailable and why[i] is None:
                why[i] = UNAVAILABLE
    return Candidates(pools, w, price, od, is_od, r, cost, money, why)


def reference_unit_od(od: F64, w: F64, is_od: B) -> float:
    """Cheapest on-demand USD per unit-hour among the on-demand candidates (all
    candidates when there are none; 0 when there are no candidates at all)."""
    if not len(od):
        return 0.0
    if is_od.any():
        return float(np.min(od[is_od] / w[is_od]))
    return float(np.min(od / w))


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


def on_demand_slack(split: OnDemandSplit, on_demand_units: F64) -> float:
    """How far on-demand capacity may exceed what the split requires: the largest
    on-demand instance the policy may buy (``on_demand_units``: units per instance of
    its on-demand pools), so rounding up to whole instances never displaces spot;
    0 when no on-demand capacity is wanted. The planner and the oracle use it."""
    return float(on_demand_units.max()) if split.wanted and on_demand_units.size else 0.0


# --------------------------------------------------------------------------
# pruning
# --------------------------------------------------------------------------


def pools_per_group(policy: model.Policy, w: F64) -> I64:
    """Most pools of one (market, size ``w``) group some optimal plan needs (per ``w``).

    A pool holds at most ``m = floor(share x C / w)`` whole instances, so a group
    of ``n`` instances needs ``ceil(n / m)`` pools once its instances are moved into
    its cheapest pools (moving instances within a group never raises the cost).
    With ``n <= C / w`` and ``a = share x C / w``: ``n / m <= a / (share x floor(a))
    < (1 + 1/n0) / share``, where ``n0 = floor(share x C_min / w)`` (at least 1)
    and ``C_min`` the least capacity a plan may have (``minCapacity``, else the
    target). Plus up to ``minPools - 1`` pools that only the pool count needs,
    when the share cap does not already force ``minPools``."""
    share = policy.max_pool_share_pct / 100.0
    least = policy.target if policy.min_capacity is None else policy.min_capacity
    n0 = np.maximum(np.floor(share * least / w + 1e-9), 1.0)
    k = np.ceil((1.0 + 1.0 / n0) / share - 1e-9).astype(np.int64)
    implied = milp.min_pools_implied(policy.max_pool_share_pct, policy.min_pools)
    out: I64 = k + (0 if implied else policy.min_pools - 1)
    return out


def prune(policy: model.Policy, c: Candidates, elig: I64, keep_always: set[int]) -> I64:
    """Keep, per (market, weight) group, the pools fewer than ``k`` others beat, ``k``
    being :func:`pools_per_group` of the group.

    Exchange argument: pools of one group are interchangeable for capacity, the
    on-demand split, the share cap and the pool count, so an optimal plan that
    uses a pool beaten (cost and price both <=) by ``k`` others, of which at most
    ``k - 1`` are used, can move all its instances to an unused one. Running pools
    are always kept. Beaten on price counts only when a budget makes price matter.
    """
    w = np.round(c.w[elig], 6)
    order = np.lexsort((elig, c.price[elig], c.cost[elig], w, c.is_od[elig]))
    k = pools_per_group(policy, c.w[elig][order])
    if policy.budget_per_hour is None:
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
    for j, o in enumerate(order):
        i = int(elig[o])
        g = (bool(c.is_od[i]), float(w[o]))
        if g != group:
            group, seen_prices = g, []
        p = float(c.price[i])
        beaten = bisect.bisect_right(seen_prices, p)
        bisect.insort(seen_prices, p)
        if beaten < k[j] or i in keep_always:
            kept.append(i)
    return np.asarray(sorted(kept), dtype=np.int64)
