"""CreateFleet ``Type=instant``, answered by the layer (moto puts a whole fleet on its first
override and never reports errors); ``maintain``/``request`` fleets go to moto.

The layer resolves the launch template, orders the overrides by the allocation
strategy per market (:mod:`spotfleet_sim.fleet`), and launches through moto's EC2
backend. ``Errors`` lists every override that could not be filled, each with its
own code: ``InsufficientInstanceCapacity`` (a dry pool, or a limited pool that ran
out part-way: its instances are launched and it is reported as well),
``SpotMaxPriceTooLow``, ``VcpuLimitExceeded`` and ``MaxSpotInstanceCountExceeded``
(account quotas). The scheduled fault ``dry_next_spot`` runs the pool a spot
request would land in dry before the request is allocated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spotfleet_sim import (
    backend,
    capacity,
    fleet,
    idempotency,
    launching,
    market,
    replies,
    wire,
)

if TYPE_CHECKING:
    from spotfleet_sim.dispatch import Request
    from spotfleet_sim.layer import MarketLayer

#: Override fields the response repeats.
SHOWN_OVERRIDE_FIELDS = (
    "InstanceType",
    "SubnetId",
    "AvailabilityZone",
    "WeightedCapacity",
    "Priority",
    "MaxPrice",
    "ImageId",
)


def handle(layer: MarketLayer, req: Request, environ: dict[str, Any]) -> replies.Reply | None:
    if req.params.get("Type", "maintain") != "instant":
        return None  # maintain/request fleets: moto's behaviour
    with layer.state_lock:
        ticket = layer.tokens.lookup(req.account, req.region, req.operation, req.params)
        if ticket.mismatch is not None:
            return replies.fail(layer, req, idempotency.MISMATCH, ticket.mismatch)
        if ticket.replay is not None:
            status, body = ticket.replay
            replies.record(layer, req, "layer", status, detail="idempotent replay of ClientToken")
            return replies.make(status, body, "text/xml")
        try:
            payload = instant_fleet(layer, req)
        finally:
            layer.after_change(req.account, req.region, ())
        layer.tokens.remember(ticket, 200, payload)
        return replies.ok(layer, req, payload)


def _candidates(
    layer: MarketLayer, req: Request, ec2: Any, p: dict[str, Any]
) -> tuple[list[fleet.Candidate], dict[int, dict[str, Any]]]:
    """Every (launch template config x override) as a candidate pool, with its template."""
    history_now = layer.timeline.now().history
    od_prices = layer.on_demand(req.region)
    scores = layer.scores()
    zone_ids = market.zone_ids(req.region)
    cands: list[fleet.Candidate] = []
    template_of: dict[int, dict[str, Any]] = {}
    for config in p.get("LaunchTemplateConfigs", []):
        data, resolved = backend.launch_template_data(
            ec2, config.get("LaunchTemplateSpecification", {})
        )
        shown = {"LaunchTemplateId": resolved["LaunchTemplateId"], "Version": resolved["Version"]}
        for override in config.get("Overrides", []) or [{}]:
            if "InstanceRequirements" in override:
                raise ValueError(
                    "CreateFleet overrides with InstanceRequirements are not supported "
                    "by the spotfleet sim; list InstanceType overrides"
                )
            itype = override.get("InstanceType") or data.get("InstanceType")
            if not itype:
                raise ValueError(
                    "an override without InstanceType needs a launch template with one"
                )
            subnet = override.get("SubnetId") or launching.template_subnet(data)
            zone = override.get("AvailabilityZone") or (
                backend.subnet_zone(ec2, subnet) if subnet else None
            )
            zone = zone or (data.get("Placement") or {}).get("AvailabilityZone") or f"{req.region}a"
            cand = fleet.Candidate(
                index=len(cands),
                template_spec=shown,
                override=dict(override),
                instance_type=itype,
                zone=zone,
                subnet_id=subnet,
                image_id=override.get("ImageId") or data.get("ImageId"),
                weight=float(override.get("WeightedCapacity") or 1.0),
                priority=float(override["Priority"]) if override.get("Priority") else None,
                max_price=float(override["MaxPrice"]) if override.get("MaxPrice") else None,
                spot_price=layer.history.price_at(itype, zone, history_now),
                on_demand_price=od_prices.get(itype),
                score=scores.score(req.region, zone_ids.get(zone, ""), itype) or 5,
            )
            cands.append(cand)
            template_of[cand.index] = data
    if not cands:
        raise ValueError("CreateFleet needs at least one LaunchTemplateConfigs entry")
    return cands, template_of


def _targets(p: dict[str, Any]) -> tuple[float, float]:
    """(on-demand units, spot units) the request asks for."""
    tcs = p.get("TargetCapacitySpecification", {})
    total = float(tcs.get("TotalTargetCapacity") or 0)
    od_units = float(tcs.get("OnDemandTargetCapacity") or 0)
    spot_units = float(tcs.get("SpotTargetCapacity") or 0)
    rest = max(0.0, total - od_units - spot_units)
    if (tcs.get("DefaultTargetCapacityType") or fleet.ON_DEMAND) == fleet.SPOT:
        spot_units += rest
    else:
        od_units += rest
    return od_units, spot_units


def _pool(c: fleet.Candidate, market_type: str) -> capacity.PoolKey:
    return capacity.PoolKey(c.instance_type, c.zone, market_type)


def _refusal(
    layer: MarketLayer, region: str, market_type: str
) -> Callable[[fleet.Candidate], tuple[str, str] | None]:
    """Why a pool cannot launch at all now (a pure check)."""

    def check(c: fleet.Candidate) -> tuple[str, str] | None:
        pool = _pool(c, market_type)
        if layer.capacity.is_dry(pool):
            return "InsufficientInstanceCapacity", layer.capacity.ice_message(pool, region)
        if (
            market_type == fleet.SPOT
            and c.max_price is not None
            and c.spot_price is not None
            and c.spot_price > c.max_price
        ):
            return "SpotMaxPriceTooLow", (
                f"Your Spot request price of {c.max_price} is lower than the minimum "
                f"required Spot request fulfillment price of {c.spot_price}."
            )
        return None

    return check


def _caps(layer: MarketLayer, req: Request, market_type: str) -> fleet.Caps:
    """Pool limits and the account quota of ``market_type`` for this request (read now)."""
    budget = layer.quotas.budget(req.account, req.region, market_type)
    return fleet.Caps(
        room=lambda c: layer.capacity.room(_pool(c, market_type)),
        short=lambda c: (
            "InsufficientInstanceCapacity",
            layer.capacity.ice_message(_pool(c, market_type), req.region),
        ),
        quota_left=budget.left,
        quota_cost=lambda c: budget.cost(c.instance_type),
        quota_error=(budget.code, budget.message),
    )


def instant_fleet(layer: MarketLayer, req: Request) -> bytes:
    """Allocate, launch and answer one instant fleet (call under the state lock)."""
    p = wire.nest(req.params)
    ec2 = backend.ec2(req.account, req.region)
    cands, template_of = _candidates(layer, req, ec2, p)
    od_units, spot_units = _targets(p)
    spot_opts, od_opts = p.get("SpotOptions", {}), p.get("OnDemandOptions", {})
    fleet_id = fleet.new_fleet_id()
    instances: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for market_type, units, strategy, opts in (
        (fleet.ON_DEMAND, od_units, od_opts.get("AllocationStrategy") or "lowest-price", od_opts),
        (
            fleet.SPOT,
            spot_units,
            spot_opts.get("AllocationStrategy") or "price-capacity-optimized",
            spot_opts,
        ),
    ):
        if units <= 0:
            continue
        args = (
            cands,
            market_type,
            strategy,
            units,
            _refusal(layer, req.region, market_type),
            int(opts.get("InstancePoolsToUseCount") or 1),
            _caps(layer, req, market_type),
        )
        if market_type == fleet.SPOT and layer.capacity.due(capacity.DRY_NEXT_SPOT):
            trial = fleet.allocate(*args)  # where this request would land: that pool runs dry
            if trial.launches:
                layer.capacity.mark([_pool(trial.launches[0][0], market_type)], False)
        alloc = fleet.allocate(*args)
        for cand, code, message in alloc.errors:
            errors.append(
                {
                    "LaunchTemplateAndOverrides": _lto(cand),
                    "Lifecycle": market_type,
                    "ErrorCode": code,
                    "ErrorMessage": message,
                }
            )
        min_units = float(opts.get("MinTargetCapacity") or 0)
        if min_units and alloc.units < min_units:
            continue
        for cand, count in alloc.launches:
            ids = _launch(req, ec2, cand, template_of[cand.index], count, market_type, fleet_id, p)
            launching.launched(layer, req.account, req.region, _pool(cand, market_type), ids)
            instances.append(
                {
                    "LaunchTemplateAndOverrides": _lto(cand),
                    "Lifecycle": market_type,
                    "InstanceIds": ids,
                    "InstanceType": cand.instance_type,
                }
            )
    return wire.ec2_response(
        "CreateFleet", {"FleetId": fleet_id, "Errors": errors, "Instances": instances}
    )


def _launch(
    req: Request,
    ec2: Any,
    cand: fleet.Candidate,
    data: dict[str, Any],
    count: int,
    market_type: str,
    fleet_id: str,
    p: dict[str, Any],
) -> list[str]:
    """Launch ``count`` instances of the candidate pool through moto's backend."""
    tags: dict[str, dict[str, str]] = {}
    for spec in list(data.get("TagSpecifications") or []) + list(p.get("TagSpecification", [])):
        rtype = spec.get("ResourceType")
        for tag in spec.get("Tag", spec.get("Tags", [])) or []:
            tags.setdefault(rtype, {})[tag["Key"]] = tag.get("Value", "")
    instance_tags = dict(tags.get("instance", {}))
    instance_tags["aws:ec2:fleet-id"] = fleet_id
    kwargs: dict[str, Any] = {
        "instance_type": cand.instance_type,
        "is_instance_type_default": False,
        "region_name": req.region,
        "tags": {"instance": instance_tags, "volume": tags.get("volume", {})},
        "launch_template": {
            "LaunchTemplateId": cand.template_spec["LaunchTemplateId"],
            "Version": cand.template_spec["Version"],
        },
    }
    if cand.subnet_id:
        kwargs["subnet_id"] = cand.subnet_id
    else:
        kwargs["placement"] = cand.zone
    if market_type == fleet.SPOT:
        kwargs["instance_market_options"] = {"MarketType": "spot"}
    reservation = ec2.run_instances(
        cand.image_id, count, None, list(data.get("SecurityGroups") or []), **kwargs
    )
    return [inst.id for inst in reservation.instances]


def _lto(cand: fleet.Candidate) -> dict[str, Any]:
    override = {k: v for k, v in cand.override.items() if k in SHOWN_OVERRIDE_FIELDS}
    override.setdefault("InstanceType", cand.instance_type)
    return {"LaunchTemplateSpecification": cand.template_spec, "Overrides": override}
