"""Capacity: the book of pools that are out of (or short of) capacity, and scheduled faults.

A pool is (instance type, zone, market). The book answers two kinds of questions:
queries (``unavailable``, ``room``, ``zones_with``), which never change anything, and
commands (``mark``, ``limit``, ``take``, ``schedule``, ``due``), which do. A pool is
either unlimited (the default), marked unavailable, or limited to a number of further
instances (each launch takes from it; at 0 it answers like an unavailable pool).

A **scheduled fault** is armed now and fires on a later request: ``dry_next_spot``
makes each of the next ``n`` spot CreateFleet requests find the pool it would land in
out of capacity. The request calls :meth:`CapacityBook.due` once (a command that
consumes one arming) and, when it fires, marks that pool unavailable itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from spotfleet_sim import fleet, market

MARKETS = (fleet.SPOT, fleet.ON_DEMAND)

#: The scheduled faults the book knows, by name.
DRY_NEXT_SPOT = "dry_next_spot"
SCHEDULED_FAULTS = (DRY_NEXT_SPOT,)


@dataclass(frozen=True, order=True)
class PoolKey:
    """A pool: ``market`` is ``spot`` or ``on-demand``."""

    instance_type: str
    zone: str
    market: str

    def to_json(self) -> dict[str, str]:
        return {"instance_type": self.instance_type, "zone": self.zone, "market": self.market}


def pools_from_json(items: Iterable[dict[str, object]]) -> list[tuple[PoolKey, dict[str, object]]]:
    """Control-API pool entries (``market`` spot | on-demand | ``*``) as keys, with the entry
    each came from (``*`` gives one key per market)."""
    out: list[tuple[PoolKey, dict[str, object]]] = []
    for item in items:
        itype, zone = item.get("instance_type"), item.get("zone")
        mkt = item.get("market", "*")
        if not itype or not zone:
            raise ValueError("each pool needs instance_type and zone")
        if mkt not in (*MARKETS, "*"):
            raise ValueError("market must be spot, on-demand or *")
        for m in MARKETS if mkt == "*" else (str(mkt),):
            out.append((PoolKey(str(itype), str(zone), m), item))
    return out


class CapacityBook:
    """Unavailable and limited pools plus scheduled faults; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unavailable: set[PoolKey] = set()
        self._limits: dict[PoolKey, int] = {}
        self._scheduled: dict[str, int] = dict.fromkeys(SCHEDULED_FAULTS, 0)

    # -- queries -------------------------------------------------------------
    def unavailable(self) -> list[PoolKey]:
        """Pools marked unavailable, sorted."""
        with self._lock:
            return sorted(self._unavailable)

    def limits(self) -> dict[PoolKey, int]:
        """Limited pools and how many more instances each can take."""
        with self._lock:
            return dict(sorted(self._limits.items()))

    def scheduled(self) -> dict[str, int]:
        """How many more requests each scheduled fault will hit."""
        with self._lock:
            return dict(self._scheduled)

    def room(self, pool: PoolKey) -> int | None:
        """How many more instances the pool can launch: None = unlimited, 0 = none."""
        with self._lock:
            if pool in self._unavailable:
                return 0
            return self._limits.get(pool)

    def is_dry(self, pool: PoolKey) -> bool:
        """True when the pool cannot launch a single instance now."""
        return self.room(pool) == 0

    def zones_with(self, instance_type: str, market_type: str, region: str) -> list[str]:
        """Zones of ``region`` where the pool can still launch (for AWS's ICE message)."""
        return [
            z
            for z in sorted(market.zone_ids(region))
            if not self.is_dry(PoolKey(instance_type, z, market_type))
        ]

    def ice_message(self, pool: PoolKey, region: str) -> str:
        """AWS's InsufficientInstanceCapacity message for ``pool``."""
        return fleet.ice_message(
            pool.instance_type, pool.zone, self.zones_with(pool.instance_type, pool.market, region)
        )

    # -- commands --------------------------------------------------------------
    def mark(self, pools: Iterable[PoolKey], available: bool) -> None:
        """Mark pools unavailable, or available again (which also lifts any limit)."""
        with self._lock:
            for pool in pools:
                if available:
                    self._unavailable.discard(pool)
                    self._limits.pop(pool, None)
                else:
                    self._unavailable.add(pool)

    def limit(self, pool: PoolKey, remaining: int) -> None:
        """Let ``pool`` launch only ``remaining`` more instances (and mark it available)."""
        if remaining < 0:
            raise ValueError("remaining must be >= 0")
        with self._lock:
            self._unavailable.discard(pool)
            self._limits[pool] = remaining

    def take(self, pool: PoolKey, count: int) -> None:
        """Record ``count`` instances launched into ``pool`` (limited pools count down)."""
        with self._lock:
            if pool in self._limits:
                self._limits[pool] = max(0, self._limits[pool] - count)

    def schedule(self, fault: str, count: int) -> None:
        """Arm ``fault`` for the next ``count`` requests it applies to (0 disarms)."""
        if fault not in self._scheduled:
            raise ValueError(f"unknown scheduled fault {fault!r}; known: {SCHEDULED_FAULTS}")
        with self._lock:
            self._scheduled[fault] = max(0, int(count))

    def due(self, fault: str) -> bool:
        """Consume one arming of ``fault``; True when this request is one it hits."""
        with self._lock:
            if self._scheduled.get(fault, 0) <= 0:
                return False
            self._scheduled[fault] -= 1
            return True

    def clear(self) -> None:
        with self._lock:
            self._unavailable.clear()
            self._limits.clear()
            self._scheduled = dict.fromkeys(SCHEDULED_FAULTS, 0)
