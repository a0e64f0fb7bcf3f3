"""Core value types shared by every part of the engine.

All are frozen dataclasses. Units: prices in USD per instance-hour (float
inside the engine; the API edge converts to Decimal strings), memory in GiB,
times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
