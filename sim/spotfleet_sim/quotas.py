"""Account quotas: on-demand vCPUs and spot instances per account and region (off by default).

- ``on_demand_vcpus``: the vCPUs of pending and running on-demand instances may not
  exceed it; a launch that would answers ``VcpuLimitExceeded`` (AWS's "Running
  On-Demand Standard instances" quota, here over every instance family).
- ``spot_instances``: the number of pending and running spot instances may not exceed
  it; a launch that would answers ``MaxSpotInstanceCountExceeded``.

A quota is set for an account and a region, either of which may be ``*``; the most
specific entry wins per limit (account+region, account, region, everything).
Usage is read from moto's instances at the time of the launch.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from spotfleet_sim import backend, fleet

VCPU_LIMIT = "VcpuLimitExceeded"
SPOT_LIMIT = "MaxSpotInstanceCountExceeded"
ANY = "*"


@dataclass
class Quota:
    """Limits for ``account``/``region`` (``*`` = any); None = no limit."""

    account: str = ANY
    region: str = ANY
    on_demand_vcpus: int | None = None
    spot_instances: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    """What an account may still launch in a region (None = unlimited)."""

    code: str
    message: str
    left: float | None  # vCPUs (on-demand) or instances (spot)

    def cost(self, instance_type: str) -> float:
        """What one instance of ``instance_type`` takes from this budget."""
        return float(backend.vcpus(instance_type)) if self.code == VCPU_LIMIT else 1.0

    def fits(self, instance_type: str) -> int | None:
        """How many instances of the type fit (None = unlimited)."""
        if self.left is None:
            return None
        return max(0, int(self.left // self.cost(instance_type)))


def vcpu_message(limit: int) -> str:
    return (
        f"You have requested more vCPU capacity than your current vCPU limit of {limit} "
        "allows for the instance bucket that the specified instance type belongs to. "
        "Please visit http://aws.amazon.com/contact-us/ec2-request to request an "
        "adjustment to this limit."
    )


SPOT_MESSAGE = "Max spot instance count exceeded"


class QuotaBook:
    """The quota entries; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._quotas: dict[tuple[str, str], Quota] = {}

    def update(self, account: str, region: str, changes: dict[str, Any]) -> Quota:
        """Set (a number) or lift (None) the limits named in ``changes`` for the entry."""
        unknown = set(changes) - {"on_demand_vcpus", "spot_instances"}
        if unknown:
            raise ValueError(f"unknown quota fields {sorted(unknown)}")
        with self._lock:
            quota = self._quotas.setdefault((account, region), Quota(account, region))
            for name, value in changes.items():
                if value is not None and int(value) < 0:
                    raise ValueError(f"{name} must be >= 0")
                setattr(quota, name, None if value is None else int(value))
            if quota.on_demand_vcpus is None and quota.spot_instances is None:
                del self._quotas[(account, region)]
            return Quota(**asdict(quota))

    def quotas(self) -> list[Quota]:
        with self._lock:
            return [Quota(**asdict(q)) for _k, q in sorted(self._quotas.items())]

    def clear(self) -> None:
        with self._lock:
            self._quotas.clear()

    def limit(self, account: str, region: str, name: str) -> int | None:
        """The most specific limit ``name`` for the account and region, or None."""
        with self._lock:
            for key in ((account, region), (account, ANY), (ANY, region), (ANY, ANY)):
                quota = self._quotas.get(key)
                value = getattr(quota, name) if quota is not None else None
                if value is not None:
                    return int(value)
        return None

    def budget(self, account: str, region: str, market_type: str) -> Budget:
        """What the account may still launch in ``market_type`` (from moto's instances)."""
        if market_type == fleet.SPOT:
            limit = self.limit(account, region, "spot_instances")
            if limit is None:
                return Budget(SPOT_LIMIT, SPOT_MESSAGE, None)
            used = backend.usage(account, region).spot_instances
            return Budget(SPOT_LIMIT, SPOT_MESSAGE, float(limit - used))
        limit = self.limit(account, region, "on_demand_vcpus")
        if limit is None:
            return Budget(VCPU_LIMIT, vcpu_message(0), None)
        used = backend.usage(account, region).on_demand_vcpus
        return Budget(VCPU_LIMIT, vcpu_message(limit), float(limit - used))
