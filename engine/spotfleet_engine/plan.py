"""What ``planner.decide`` returns: target counts, the actions to get there, and why.

Outcomes (:data:`Outcome`):

- ``Optimal``: the solver proved the plan optimal (relative MIP gap <= 1e-4) and
  it changes the fleet.
- ``Feasible``: every constraint holds but the plan is not the unconstrained
  optimum: hysteresis or the churn limit kept some running capacity in place,
  or the solver stopped at its limit with a feasible answer.
- ``NoChange``: the targets equal what runs; nothing to launch or terminate.
- ``Degraded``: the target cannot be met, the plan holds as much as it can
  (at least ``Policy.min_capacity``); ``binding_constraint`` says what binds.
- ``Infeasible``: no plan meets the hard constraints; targets equal the
  current fleet, no actions; ``binding_constraint`` names the constraint.

``binding`` (an :class:`~spotfleet_engine.explain.Binding`) is the kind of the
binding constraint, for code; ``binding_constraint`` the text with figures, for
people. Both are set together, and always in ``Degraded`` and ``Infeasible`` plans.

Money is float USD per hour here; :meth:`Plan.to_dict` renders it as decimal
strings for the API edge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from spotfleet_engine import model

if TYPE_CHECKING:  # explain builds Plans; the enum is only named here
    from spotfleet_engine import explain

Outcome = Literal["Optimal", "Feasible", "NoChange", "Degraded", "Infeasible"]
OUTCOMES: tuple[Outcome, ...] = ("Optimal", "Feasible", "NoChange", "Degraded", "Infeasible")

#: Why an instance is terminated (``Terminate.reason``).
TerminateReason = Literal["scale-in", "rebalance", "not-eligible"]


def money(usd: float) -> str:
    """USD amount as a decimal string with 6 decimals, trailing zeros trimmed to 2."""
    text = f"{usd:.6f}"
    whole, frac = text.split(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac.ljust(2, '0')}"


@dataclass(frozen=True, slots=True)
class Launch:
    """Launch ``count`` instances in ``pool``."""

    pool: model.Pool
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"pool": self.pool.key(), "count": self.count}


@dataclass(frozen=True, slots=True)
class Terminate:
    """Terminate one instance; ``reason`` is a :data:`TerminateReason`."""

    instance_id: str
    pool: model.Pool
    reason: TerminateReason

    def to_dict(self) -> dict[str, Any]:
        return {"instanceId": self.instance_id, "pool": self.pool.key(), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ChosenPool:
    """A pool in the plan: ``price`` USD per instance-hour, ``risk`` the
    interruption probability over the horizon, ``share_pct`` its percent of
    the planned capacity, ``units`` the capacity it provides."""

    pool: model.Pool
    count: int
    price: float
    risk: float
    units: float
    share_pct: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool.key(),
            "count": self.count,
            "pricePerHour": money(self.price),
            "risk": round(self.risk, 4),
            "units": self.units,
            "sharePercent": round(self.share_pct, 2),
        }


@dataclass(frozen=True, slots=True)
class RejectedPool:
    """An eligible-looking pool left out, and the constraint or cost that lost it."""

    pool: model.Pool
    price: float
    risk: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool.key(),
            "pricePerHour": money(self.price),
            "risk": round(self.risk, 4),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """The reasons users read: chosen pools, the best three rejected, and notes."""

    chosen: tuple[ChosenPool, ...] = ()
    rejected: tuple[RejectedPool, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": [c.to_dict() for c in self.chosen],
            "rejected": [r.to_dict() for r in self.rejected],
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class PlanStats:
    """How many pools each stage kept (deterministic: no timings)."""

    pools_total: int = 0
    pools_eligible: int = 0
    pools_after_prune: int = 0


@dataclass(frozen=True)
class Plan:
    """The engine's answer for one policy at one moment.

    ``targets`` maps every pool the plan holds capacity in to its instance
    count (pools with 0 are absent). ``cost_per_hour`` is the sum of current
    prices of the targets; ``expected_cost_per_hour`` adds risk x replacement
    cost; ``on_demand_equivalent_per_hour`` prices the same instances on-demand;
    ``capacity_by_market`` is in the policy's unit.
    """

    outcome: Outcome
    unit: model.CapacityUnit
    target: float
    targets: Mapping[model.Pool, int]
    launches: tuple[Launch, ...] = ()
    terminations: tuple[Terminate, ...] = ()
    cost_per_hour: float = 0.0
    expected_cost_per_hour: float = 0.0
    on_demand_equivalent_per_hour: float = 0.0
    capacity_by_market: Mapping[model.Market, float] = field(default_factory=dict)
    explanation: Explanation = Explanation()
    binding_constraint: str | None = None
    stats: PlanStats = PlanStats()
    binding: explain.Binding | None = None
    #: units of on-demand capacity held above the policy's on-demand split, in place
    #: of spot that is out of capacity (0: none)
    on_demand_fallback: float = 0.0

    @property
    def capacity(self) -> float:
        """Planned capacity in the policy's unit, all markets."""
        return float(sum(self.capacity_by_market.values()))

    @property
    def savings_pct(self) -> float:
        """Percent saved against buying the same instances on-demand (0 when empty)."""
        if self.on_demand_equivalent_per_hour <= 0:
            return 0.0
        return 100.0 * (1.0 - self.cost_per_hour / self.on_demand_equivalent_per_hour)

    @property
    def spot_share_pct(self) -> float:
        """Percent of planned capacity on spot."""
        cap = self.capacity
        return 100.0 * self.capacity_by_market.get(model.Market.SPOT, 0.0) / cap if cap else 0.0

    def carried_out(self) -> Plan | None:
        """The plan as it stands once its launches are done — the same targets, costs
        and explanation, no actions, outcome ``NoChange`` — when that is known without
        solving again, else None. Known only for a plan that launches its whole fleet
        (every target from its launches, nothing running before, no terminations),
        meets its target, is ``Optimal`` or ``Feasible`` and holds no on-demand
        fallback: ``planner.decide`` then answers exactly this for the fleet it leads
        to, up to a hysteresis note (a property test holds the two together). With
        instances running before, the next decision may scale some of them in."""
        whole = {a.pool: a.count for a in self.launches} == dict(self.targets)
        if not (
            self.launches
            and whole
            and not self.terminations
            and self.outcome in ("Optimal", "Feasible")
            and self.on_demand_fallback == 0
            and self.capacity >= self.target
        ):
            return None
        return replace(self, launches=(), terminations=(), outcome="NoChange")

    def plan_hash(self) -> str:
        """Stable 16-hex-digit hash of the target counts (idempotency tokens)."""
        text = "\n".join(f"{p.key()}={n}" for p, n in sorted(self.targets.items()) if n > 0)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def summary(self) -> str:
        """One line for Events and logs."""
        if self.outcome == "Infeasible":
            return f"Infeasible: {self.binding_constraint}"
        launched = sum(a.count for a in self.launches)
        text = (
            f"{self.outcome}: {self.capacity:g}/{self.target:g} {self.unit.value} in "
            f"{len(self.targets)} pools, ${self.cost_per_hour:.4f}/h "
            f"({self.savings_pct:.1f}% below on-demand, spot {self.spot_share_pct:.0f}%); "
            f"launch {launched}, terminate {len(self.terminations)}"
        )
        if self.binding_constraint:
            text += f"; {self.binding_constraint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (money as decimal strings, pools as their keys)."""
        return {
            "outcome": self.outcome,
            "unit": self.unit.value,
            "target": self.target,
            "capacity": self.capacity,
            "capacityByMarket": {m.value: v for m, v in sorted(self.capacity_by_market.items())},
            "targets": {p.key(): n for p, n in sorted(self.targets.items())},
            "launches": [a.to_dict() for a in self.launches],
            "terminations": [t.to_dict() for t in self.terminations],
            "costPerHour": money(self.cost_per_hour),
            "expectedCostPerHour": money(self.expected_cost_per_hour),
            "onDemandEquivalentPerHour": money(self.on_demand_equivalent_per_hour),
            "savingsPercent": round(self.savings_pct, 2),
            "bindingConstraint": self.binding_constraint,
            "binding": None if self.binding is None else self.binding.value,
            "explanation": self.explanation.to_dict(),
            "planHash": self.plan_hash(),
            "stats": {
                "poolsTotal": self.stats.pools_total,
                "poolsEligible": self.stats.pools_eligible,
                "poolsAfterPrune": self.stats.pools_after_prune,
            },
        }
