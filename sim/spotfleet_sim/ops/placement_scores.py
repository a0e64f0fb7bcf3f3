"""GetSpotPlacementScores from the modelled placement scores (docs/sim.md, Placement scores).

A type's score in a zone is modelled from its advisor band (``market.BAND_TO_SCORE``:
9, 7, 5, 4, 2); several types score a zone by the best of them; a regional score is
the best zone's; a pool the capacity book has run dry scores 1. Sorted highest first;
``MaxResults``/``NextToken`` paginate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spotfleet_sim import capacity, fleet, market, replies, wire

if TYPE_CHECKING:
    from spotfleet_sim.dispatch import Request
    from spotfleet_sim.layer import MarketLayer


def handle(layer: MarketLayer, req: Request, environ: dict[str, Any]) -> replies.Reply:
    p = wire.nest(req.params)
    if "InstanceRequirementsWithMetadata" in p:
        message = (
            "GetSpotPlacementScores with InstanceRequirementsWithMetadata is not "
            "implemented by the spotfleet sim; pass InstanceTypes"
        )
        return replies.fail(layer, req, "NotImplementedBySimulator", message, unimplemented=True)
    types = list(p.get("InstanceType", []))
    if not types:
        return replies.fail(
            layer,
            req,
            "MissingParameter",
            "The request must contain the parameter InstanceTypes or "
            "InstanceRequirementsWithMetadata",
        )
    if not p.get("TargetCapacity"):
        return replies.fail(
            layer, req, "MissingParameter", "The request must contain the parameter TargetCapacity"
        )
    single = str(p.get("SingleAvailabilityZone", "false")).lower() == "true"
    scores = layer.scores()
    regions = list(p.get("RegionName", [])) or scores.regions()
    results: list[dict[str, Any]] = []
    for region in regions:
        zone_scores = _zone_scores(layer, scores, region, types)
        if not zone_scores:
            continue
        if single:
            results += [
                {"Region": region, "AvailabilityZoneId": z, "Score": s}
                for z, s in zone_scores.items()
            ]
        else:
            results.append({"Region": region, "Score": max(zone_scores.values())})
    results.sort(key=lambda r: (-r["Score"], r["Region"], r.get("AvailabilityZoneId", "")))
    max_results = int(p.get("MaxResults") or 1000)
    offset = int(p.get("NextToken") or 0) if str(p.get("NextToken", "0")).isdigit() else 0
    out: dict[str, Any] = {"SpotPlacementScores": results[offset : offset + max_results]}
    if offset + max_results < len(results):
        out["NextToken"] = str(offset + max_results)
    return replies.ok(layer, req, wire.ec2_response("GetSpotPlacementScores", out))


def _zone_scores(
    layer: MarketLayer, scores: market.PlacementScores, region: str, types: list[str]
) -> dict[str, int]:
    """Zone ID -> best score over ``types`` (1 for a pool that is dry now)."""
    names = {v: k for k, v in market.zone_ids(region).items()}
    out: dict[str, int] = {}
    for zone_id in scores.zone_ids(region):
        best: int | None = None
        for itype in types:
            s = scores.score(region, zone_id, itype)
            if s is None:
                continue
            zone = names.get(zone_id)
            if zone and layer.capacity.is_dry(capacity.PoolKey(itype, zone, fleet.SPOT)):
                s = 1
            best = s if best is None else max(best, s)
        if best is not None:
            out[zone_id] = best
    return out
