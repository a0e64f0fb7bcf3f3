"""Core value types shared by every part of the engine.

All are frozen dataclasses. Units: prices in USD per instance-hour (float
inside the engine; the API edge converts to Decimal strings), memory in GiB,
times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass
from datetime import datetime
from typing import Literal


class Market(enum.StrEnum):
    """How a pool's capacity is bought."""

    SPOT = "spot"
    ON_DEMAND = "on-demand"


class CapacityUnit(enum.StrEnum):
    """What a policy's capacity target counts (spec.capacity.unit)."""

    VCPU = "vcpu"
    MEMORY_GIB = "memoryGiB"
    INSTANCES = "instances"


@dataclass(frozen=True, slots=True)
class InstanceType:
    """One EC2 instance type as the catalog knows it."""

    name: str  # e.g. "m5.xlarge"
    family: str  # e.g. "m5"
    vcpus: int
    memory_gib: float
    arch: str  # "x86_64" | "arm64"
    gpus: int = 0
    burstable: bool = False
    current_generation: bool = True
    bare_metal: bool = False

    @property
    def size(self) -> str:
        """The size part of the name ("xlarge" for "m5.xlarge")."""
        return self.name.split(".", 1)[1] if "." in self.name else ""

    def units(self, unit: CapacityUnit) -> float:
        """How many capacity units one instance of this type provides."""
        if unit is CapacityUnit.VCPU:
            return float(self.vcpus)
        if unit is CapacityUnit.MEMORY_GIB:
            return float(self.memory_gib)
        return 1.0


@dataclass(frozen=True, slots=True, order=True)
class Pool:
    """A capacity pool: instance type x availability zone x market."""

    instance_type: str
    zone: str
    market: Market

    def key(self) -> str:
        """Stable text form, used in tags, metrics labels and status: "m5.large/us-east-1a/spot"."""
        return f"{self.instance_type}/{self.zone}/{self.market.value}"

    @classmethod
    def parse(cls, key: str) -> Pool:
        """Inverse of :meth:`key`; raises ValueError on a malformed key."""
        parts = key.split("/")
        if len(parts) != 3:
            raise ValueError(f"malformed pool key {key!r}: want type/zone/market")
        return cls(parts[0], parts[1], Market(parts[2]))


# --------------------------------------------------------------------------
# Policy side: what a SpotPolicy asks for, as the engine sees it.
# --------------------------------------------------------------------------

#: How the planner weighs price against interruption risk (spec.objective).
#: ``lowestCost``: price + risk x replacement cost; ``balanced``: replacement cost
#: counted three times; ``lowestInterruption``: risk dominates, price breaks ties.
Objective = Literal["lowestCost", "balanced", "lowestInterruption"]
OBJECTIVES: tuple[Objective, ...] = ("lowestCost", "balanced", "lowestInterruption")

#: Whether burstable (T-family) types may be planned.
Burstable = Literal["include", "exclude", "only"]
BURSTABLE_CHOICES: tuple[Burstable, ...] = ("include", "exclude", "only")


def _matches_any(value: str, patterns: frozenset[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class Requirements:
    """Which instance types a policy accepts (spec.instanceRequirements).

    Bounds are inclusive; ``None`` means unbounded. ``memory_per_vcpu_*`` is GiB
    per vCPU. Name filters are shell-style patterns (``fnmatch``: ``*``, ``?``,
    ``[...]``, case-sensitive): ``allowed_types``/``excluded_types`` match the
    full type name ("m5.*", "c6g.large"), ``allowed_families``/``excluded_families``
    the family ("m5*" matches m5, m5a, m5d, m5n...). An empty ``allowed_*`` set
    means "all"; when both allowed sets are non-empty a type must match both.
    Exclusions always win. ``architectures`` empty means any.
    """

    vcpu_min: int | None = None
    vcpu_max: int | None = None
    memory_gib_min: float | None = None
    memory_gib_max: float | None = None
    memory_per_vcpu_min: float | None = None
    memory_per_vcpu_max: float | None = None
    architectures: frozenset[str] = frozenset()
    allowed_families: frozenset[str] = frozenset()
    allowed_types: frozenset[str] = frozenset()
    excluded_families: frozenset[str] = frozenset()
    excluded_types: frozenset[str] = frozenset()
    burstable: Burstable = "include"
    gpu_min: int | None = None
    gpu_max: int | None = None
    current_generation_only: bool = False
    exclude_bare_metal: bool = False

    def matches(self, it: InstanceType) -> bool:
        """True when ``it`` satisfies every requirement."""
        if self.vcpu_min is not None and it.vcpus < self.vcpu_min:
            return False
        if self.vcpu_max is not None and it.vcpus > self.vcpu_max:
            return False
        if self.memory_gib_min is not None and it.memory_gib < self.memory_gib_min:
            return False
        if self.memory_gib_max is not None and it.memory_gib > self.memory_gib_max:
            return False
        if self.memory_per_vcpu_min is not None or self.memory_per_vcpu_max is not None:
            if it.vcpus <= 0:
                return False
            per = it.memory_gib / it.vcpus
            if self.memory_per_vcpu_min is not None and per < self.memory_per_vcpu_min - 1e-9:
                return False
            if self.memory_per_vcpu_max is not None and per > self.memory_per_vcpu_max + 1e-9:
                return False
        if self.architectures and it.arch not in self.architectures:
            return False
        if self.gpu_min is not None and it.gpus < self.gpu_min:
            return False
        if self.gpu_max is not None and it.gpus > self.gpu_max:
            return False
        if self.burstable == "exclude" and it.burstable:
            return False
        if self.burstable == "only" and not it.burstable:
            return False
        if self.current_generation_only and not it.current_generation:
            return False
        if self.exclude_bare_metal and it.bare_metal:
            return False
        if self.allowed_families and not _matches_any(it.family, self.allowed_families):
            return False
        if self.allowed_types and not _matches_any(it.name, self.allowed_types):
            return False
        if self.excluded_families and _matches_any(it.family, self.excluded_families):
            return False
        return not (self.excluded_types and _matches_any(it.name, self.excluded_types))


@dataclass(frozen=True, slots=True)
class Policy:
    """A SpotPolicy's spec as the engine needs it (all capacity figures in ``unit``).

    - ``target``: capacity to hold; ``min_capacity``: the least acceptable when the
      target cannot be met (budget, supply); ``None`` means the target is a hard floor.
    - ``on_demand_base``: capacity bought on-demand first (units);
      ``on_demand_percentage_above_base``: percent (0..100) of capacity above the
      base that is on-demand too (the rest is spot).
    - ``max_spot_price_per_unit_hour``: USD per unit-hour; spot pools priced above
      it are never planned. ``budget_per_hour``: USD/h cap on the whole plan.
    - ``min_pools``: the plan uses at least this many distinct pools (on-demand pools count);
      ``max_pool_share_pct``: no pool holds more than this percent of the target.
    - Hysteresis: running capacity only moves when ``rebalance_enabled`` and the
      move saves more than ``min_savings_pct`` percent of the current cost over
      ``horizon_hours``, with at most ``max_replacements_per_hour`` replacements
      per hour (the fleet reports how many were already used).
    """

    region: str
    target: float
    unit: CapacityUnit = CapacityUnit.VCPU
    zones: tuple[str, ...] = ()
    min_capacity: float | None = None
    on_demand_base: float = 0.0
    on_demand_percentage_above_base: float = 0.0
    requirements: Requirements = Requirements()
    objective: Objective = "lowestCost"
    max_spot_price_per_unit_hour: float | None = None
    budget_per_hour: float | None = None
    min_pools: int = 1
    max_pool_share_pct: float = 100.0
    rebalance_enabled: bool = True
    min_savings_pct: float = 10.0
    max_replacements_per_hour: int = 10
    horizon_hours: float = 24.0

    def problems(self) -> list[str]:
        """Every inconsistency in the policy (empty when valid); ``decide`` reports them."""
        out: list[str] = []
        if not self.target >= 0:
            out.append(f"target {self.target} < 0")
        if self.min_capacity is not None and not 0 <= self.min_capacity <= self.target:
            out.append(f"minCapacity {self.min_capacity} outside [0, target {self.target}]")
        if not self.on_demand_base >= 0:
            out.append(f"onDemandBase {self.on_demand_base} < 0")
        if not 0 <= self.on_demand_percentage_above_base <= 100:
            out.append(
                f"onDemandPercentageAboveBase {self.on_demand_percentage_above_base} "
                "outside [0, 100]"
            )
        if self.objective not in OBJECTIVES:
            out.append(f"objective {self.objective!r} not one of {', '.join(OBJECTIVES)}")
        if self.min_pools < 1:
            out.append(f"minPools {self.min_pools} < 1")
        if not 0 < self.max_pool_share_pct <= 100:
            out.append(f"maxPoolSharePercent {self.max_pool_share_pct} outside (0, 100]")
        if self.min_savings_pct < 0:
            out.append(f"minSavingsPercent {self.min_savings_pct} < 0")
        if self.max_replacements_per_hour < 0:
            out.append(f"maxReplacementsPerHour {self.max_replacements_per_hour} < 0")
        if not self.horizon_hours > 0:
            out.append(f"horizonHours {self.horizon_hours} <= 0")
        if self.budget_per_hour is not None and self.budget_per_hour < 0:
            out.append(f"budgetPerHour {self.budget_per_hour} < 0")
        if self.max_spot_price_per_unit_hour is not None and self.max_spot_price_per_unit_hour < 0:
            out.append(f"maxSpotPricePerUnitHour {self.max_spot_price_per_unit_hour} < 0")
        if self.requirements.burstable not in BURSTABLE_CHOICES:
            out.append(f"burstable {self.requirements.burstable!r} not one of include/exclude/only")
        return out


# --------------------------------------------------------------------------
# Fleet side: what is running now.
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetInstance:
    """One running (or pending) instance the policy owns.

    ``price`` is what it costs now in USD/h when known (spot price at launch or
    the current market price); ``None`` lets the planner use the market price.
    """

    instance_id: str
    pool: Pool
    launched_at: datetime
    price: float | None = None


@dataclass(frozen=True, slots=True)
class Fleet:
    """The policy's current instances and the churn budget already used.

    ``replacements_last_hour`` counts instances the operator terminated to
    rebalance (not scale-in, not interruptions) during the past hour.
    """

    instances: tuple[FleetInstance, ...] = ()
    replacements_last_hour: int = 0

    def count_by_pool(self) -> dict[Pool, int]:
        """Number of instances per pool (pools without instances are absent)."""
        out: dict[Pool, int] = {}
        for inst in self.instances:
            out[inst.pool] = out.get(inst.pool, 0) + 1
        return out

    def by_pool(self) -> dict[Pool, list[FleetInstance]]:
        """Instances grouped per pool, each list in ``instances`` order."""
        out: dict[Pool, list[FleetInstance]] = {}
        for inst in self.instances:
            out.setdefault(inst.pool, []).append(inst)
        return out
