"""EC2 Fleet ``type=instant`` as AWS does it: allocation strategies, Errors, launches.

moto 5.2.5 puts a whole fleet on the first override and never reports Errors,
so the layer answers ``CreateFleet(Type=instant)`` itself: it orders the
overrides by the requested allocation strategy (per market), skips pools the
capacity book marks unavailable (reporting each in ``Errors`` with AWS's code and
message), and launches through moto's EC2 backend so the instances are real moto
instances (tags, ``InstanceLifecycle``, zone, subnet) that every other call sees.

Allocation (documented in docs/sim.md):
- spot ``lowest-price``/``lowestPrice``: cheapest price per unit first, spread over
  ``InstancePoolsToUseCount`` pools (default 1);
- spot ``diversified``: all pools in request order, instance by instance;
- spot ``capacity-optimized``: highest placement score first (request order breaks ties);
  ``capacity-optimized-prioritized``: score, then ``Priority``;
- spot ``price-capacity-optimized`` (AWS's default): highest score first, cheapest breaks ties;
- on-demand ``lowest-price`` (default): cheapest on-demand price per unit; ``prioritized``:
  ``Priority`` (lower first), then request order.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SPOT = "spot"
ON_DEMAND = "on-demand"


@dataclass
class Candidate:
    """One launch template config x override: a pool plus what the strategy ranks it by."""

    index: int
    template_spec: dict[str, Any]  # LaunchTemplateSpecification as the response shows it
    override: dict[str, Any]  # the request's override, boto3-shaped (string values)
    instance_type: str
    zone: str
    subnet_id: str | None
    image_id: str | None
    weight: float = 1.0
    priority: float | None = None
    max_price: float | None = None
    spot_price: float | None = None  # USD/h at the layer's now; None when the data has none
    on_demand_price: float | None = None  # USD/h
    score: int = 5  # placement score 1..10 (5 when unknown)

    def price_per_unit(self, market: str) -> float:
        price = self.spot_price if market == SPOT else self.on_demand_price
        return math.inf if price is None else price / self.weight


@dataclass
class Allocation:
    """The strategy's result: launches per candidate and the errors AWS would report."""

    launches: list[tuple[Candidate, int]] = field(default_factory=list)
    errors: list[tuple[Candidate, str, str]] = field(default_factory=list)
    units: float = 0.0


def order(cands: Sequence[Candidate], market: str, strategy: str) -> list[Candidate]:
    """Candidates in the order the strategy tries them."""
    if market == ON_DEMAND:
        if strategy == "prioritized":
            return sorted(cands, key=lambda c: (_prio(c), c.index))
        return sorted(cands, key=lambda c: (c.price_per_unit(ON_DEMAND), c.index))
    if strategy in ("lowest-price", "lowestPrice"):
        return sorted(cands, key=lambda c: (c.price_per_unit(SPOT), c.index))
    if strategy == "diversified":
        return sorted(cands, key=lambda c: c.index)
    if strategy in ("capacity-optimized", "capacityOptimized"):
        return sorted(cands, key=lambda c: (-c.score, c.index))
    if strategy in ("capacity-optimized-prioritized", "capacityOptimizedPrioritized"):
        return sorted(cands, key=lambda c: (-c.score, _prio(c), c.index))
    if strategy in ("price-capacity-optimized", "priceCapacityOptimized"):
        return sorted(cands, key=lambda c: (-c.score, c.price_per_unit(SPOT), c.index))
    raise ValueError(f"unknown allocation strategy {strategy!r}")


def _prio(c: Candidate) -> float:
    return math.inf if c.priority is None else c.priority


def _no_room(cand: Candidate) -> int | None:
    return None


def _no_shortage(cand: Candidate) -> tuple[str, str]:
    return ("InsufficientInstanceCapacity", ice_message(cand.instance_type, cand.zone))


def _one(cand: Candidate) -> float:
    return 1.0


@dataclass(frozen=True)
class Caps:
    """Limits on one allocation, all optional (pure functions of the candidate).

    ``room(c)``: how many more instances the pool can launch (None = unlimited);
    ``short(c)``: the (code, message) for a pool that runs out before the target is met.
    ``quota_left``: an account-wide budget in units of ``quota_cost(c)`` per instance
    (None = unlimited), and ``quota_error`` for a pool whose next instance would exceed it.
    """

    room: Callable[[Candidate], int | None] = _no_room
    short: Callable[[Candidate], tuple[str, str]] = _no_shortage
    quota_left: float | None = None
    quota_cost: Callable[[Candidate], float] = _one
    quota_error: tuple[str, str] = ("", "")


def allocate(
    cands: Sequence[Candidate],
    market: str,
    strategy: str,
    target_units: float,
    refuse: Callable[[Candidate], tuple[str, str] | None],
    pools_to_use: int = 1,
    caps: Caps | None = None,
) -> Allocation:
    """Decide launches for ``target_units`` of ``market`` capacity (pure).

    ``refuse(c)`` returns (error code, message) when the pool cannot launch now.
    Pools are tried in strategy order; a refused pool is reported once and skipped.
    ``diversified`` spreads over every usable pool, ``lowest-price`` over
    ``pools_to_use`` pools, the others fill one pool. Instances go round-robin over
    the pools in use; with ``caps``, a pool that runs short or whose next instance
    would exceed the quota is reported (after whatever it did launch: a partial fill)
    and the next pool in strategy order takes its place.
    """
    alloc = Allocation()
    if target_units <= 0 or not cands:
        return alloc
    caps = caps or Caps()
    if market == SPOT and strategy == "diversified":
        wanted = len(cands)
    elif market == SPOT and strategy in ("lowest-price", "lowestPrice"):
        wanted = max(1, pools_to_use)
    else:
        wanted = 1
    queue = iter(order(cands, market, strategy))
    admitted: list[Candidate] = []
    active: list[Candidate] = []
    counts: dict[int, int] = {}

    def admit() -> bool:
        for cand in queue:
            refusal = refuse(cand)
            if refusal is not None:
                alloc.errors.append((cand, refusal[0], refusal[1]))
                continue
            admitted.append(cand)
            active.append(cand)
            counts[cand.index] = 0
            return True
        return False

    while len(active) < wanted and admit():
        pass
    units, used, i = 0.0, 0.0, 0
    while units < target_units and (active or admit()):
        i %= len(active)
        cand = active[i]
        room = caps.room(cand)
        error: tuple[str, str] | None = None
        if room is not None and counts[cand.index] >= room:
            error = caps.short(cand)
        elif caps.quota_left is not None and used + caps.quota_cost(cand) > caps.quota_left:
            error = caps.quota_error
        if error is not None:
            alloc.errors.append((cand, error[0], error[1]))
            active.pop(i)
            admit()
            continue
        counts[cand.index] += 1
        units += cand.weight
        used += caps.quota_cost(cand)
        i += 1
    alloc.launches = [(c, counts[c.index]) for c in admitted if counts[c.index] > 0]
    alloc.units = units
    return alloc


def new_fleet_id() -> str:
    """An id in AWS's instant-fleet format: ``fleet-`` + a UUID."""
    return f"fleet-{uuid.uuid4()}"


def ice_message(instance_type: str, zone: str, alternatives: Sequence[str] = ()) -> str:
    """AWS's InsufficientInstanceCapacity message for a pool (naming zones that have some)."""
    others = [z for z in alternatives if z != zone]
    where = f"choosing {', '.join(others)}" if others else "choosing a different Availability Zone"
    return (
        f"We currently do not have sufficient {instance_type} capacity in the Availability "
        f"Zone you requested ({zone}). Our system will be working on provisioning additional "
        f"capacity. You can currently get {instance_type} capacity by not specifying an "
        f"Availability Zone in your request or {where}."
    )
