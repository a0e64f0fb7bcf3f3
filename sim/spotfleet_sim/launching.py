"""What RunInstances and CreateFleet share: where a launch lands, and what follows it.

The zone of a launch comes from ``Placement``, ``SubnetId``, a network interface's
subnet or the launch template, as on AWS; the market from ``InstanceMarketOptions``
or the template. After a launch the layer records it: spot instances are tracked for
interruptions and hazard mode, and limited pools count down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spotfleet_sim import backend, capacity, fleet, interruptions

if TYPE_CHECKING:
    from spotfleet_sim.layer import MarketLayer


def template_subnet(data: dict[str, Any]) -> str | None:
    """The subnet of a launch template's first network interface that names one."""
    for nic in data.get("NetworkInterfaces") or []:
        if nic.get("SubnetId"):
            return str(nic["SubnetId"])
    return None


def from_template(params: dict[str, str], tmpl: dict[str, Any], market_type: str) -> dict[str, str]:
    """RunInstances parameters the launch template implies but moto would not apply."""
    extra: dict[str, str] = {}
    if market_type == fleet.SPOT and "InstanceMarketOptions.MarketType" not in params:
        extra["InstanceMarketOptions.MarketType"] = "spot"
    explicit = any(
        k == "SubnetId" or k.startswith(("Placement.", "NetworkInterface.")) for k in params
    )
    if not explicit:
        subnet = template_subnet(tmpl)
        zone = (tmpl.get("Placement") or {}).get("AvailabilityZone")
        if subnet:
            extra["SubnetId"] = subnet
        elif zone:
            extra["Placement.AvailabilityZone"] = str(zone)
    return extra


def zone_of(ec2: Any, region: str, p: dict[str, Any], tmpl: dict[str, Any]) -> str:
    """The zone a RunInstances call lands in (placement, subnet, NIC subnet, template, default)."""
    zone = (p.get("Placement") or {}).get("AvailabilityZone")
    if zone:
        return str(zone)
    subnet = p.get("SubnetId") or next(
        (n.get("SubnetId") for n in p.get("NetworkInterface", []) if n.get("SubnetId")), None
    )
    subnet = subnet or template_subnet(tmpl)
    if subnet:
        return backend.subnet_zone(ec2, subnet)
    zone = (tmpl.get("Placement") or {}).get("AvailabilityZone")
    return str(zone) if zone else f"{region}a"


def market_of(p: dict[str, Any], tmpl: dict[str, Any]) -> str:
    """``spot`` or ``on-demand`` for a RunInstances request."""
    options = p.get("InstanceMarketOptions") or tmpl.get("InstanceMarketOptions") or {}
    return fleet.SPOT if options.get("MarketType") == "spot" else fleet.ON_DEMAND


def launched(
    layer: MarketLayer, account: str, region: str, pool: capacity.PoolKey, ids: list[str]
) -> None:
    """Record instances just launched into ``pool`` (call under the state lock)."""
    layer.capacity.take(pool, len(ids))
    if pool.market == fleet.SPOT:
        for iid in ids:
            layer.interrupter.track(
                iid, interruptions.Tracked(account, region, pool.instance_type, pool.zone)
            )
