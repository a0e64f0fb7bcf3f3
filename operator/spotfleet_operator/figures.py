"""What a policy's fleet amounts to, for the status and the metrics: capacity by market
in the policy's unit, cost and its on-demand equivalent (USD/h), instances per pool;
and the API's number formats (decimal strings)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model
from spotfleet_engine import plan as plan_mod
from spotfleet_operator.api import spec as spec_model
from spotfleet_operator.aws import port

SPOT, ON_DEMAND = model.Market.SPOT, model.Market.ON_DEMAND


@dataclass(frozen=True)
class Figures:
    """What the metrics export for the policy (units of its capacity unit, USD/h)."""

    target: float = 0.0
    cost: float = 0.0
    on_demand_equivalent: float = 0.0
    desired: Mapping[model.Market, float] = field(default_factory=dict)
    fulfilled: Mapping[model.Market, float] = field(default_factory=dict)
    instances: Mapping[model.Pool, int] = field(default_factory=dict)

    @property
    def savings_ratio(self) -> float:
        return 1.0 - self.cost / self.on_demand_equivalent if self.on_demand_equivalent else 0.0


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def price(value: float) -> str:
    """USD amount as a CRD price string (up to 6 decimals, at least 2)."""
    return plan_mod.money(max(value, 0.0))


def amount(value: float) -> str:
    """A capacity figure as a CRD amount string (up to 3 decimals)."""
    q = Decimal(str(round(max(value, 0.0), 3))).normalize()
    text = format(q, "f")
    return text if text else "0"


def percent(value: float) -> str:
    return f"{round(value, 1):.1f}".replace("-0.0", "0.0")


def of_fleet(
    spec: spec_model.SpotPolicySpec,
    instances: Sequence[port.OwnedInstance],
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot | None,
    plan: plan_mod.Plan | None,
) -> tuple[Figures, list[dict[str, Any]], float]:
    """(figures, status allocation, largest units of one held instance)."""
    unit = model.CapacityUnit(spec.capacity.unit)
    counts: dict[model.Pool, int] = {}
    for o in instances:
        counts[o.pool] = counts.get(o.pool, 0) + 1
    fulfilled = {SPOT: 0.0, ON_DEMAND: 0.0}
    cost = od_equiv = biggest = 0.0
    allocation = []
    for pool, n in sorted(counts.items()):
        it = catalog.types.get(pool.instance_type)
        od = catalog.on_demand_price(pool.instance_type) or 0.0
        p = od
        if pool.market is SPOT and market is not None:
            p = market.spot_price(pool.instance_type, pool.zone) or od
        units = it.units(unit) if it else (1.0 if unit is model.CapacityUnit.INSTANCES else 0.0)
        biggest = max(biggest, units)
        fulfilled[pool.market] += units * n
        cost += p * n
        od_equiv += od * n
        allocation.append(
            {
                "instanceType": pool.instance_type,
                "zone": pool.zone,
                "market": pool.market.value,
                "count": n,
                "pricePerHour": price(p),
            }
        )
    desired = (
        {mk: float(plan.capacity_by_market.get(mk, 0.0)) for mk in (SPOT, ON_DEMAND)}
        if plan is not None
        else {}
    )
    figs = Figures(
        target=float(spec.capacity.target),
        cost=cost,
        on_demand_equivalent=od_equiv,
        desired=desired,
        fulfilled=fulfilled,
        instances=counts,
    )
    return figs, allocation, biggest


def units_of(
    spec: spec_model.SpotPolicySpec, catalog: catalog_mod.Catalog, pools: Sequence[model.Pool]
) -> float:
    unit = model.CapacityUnit(spec.capacity.unit)
    total = 0.0
    for p in pools:
        it = catalog.types.get(p.instance_type)
        total += it.units(unit) if it else (1.0 if unit is model.CapacityUnit.INSTANCES else 0.0)
    return total
