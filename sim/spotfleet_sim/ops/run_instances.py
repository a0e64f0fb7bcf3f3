"""RunInstances, guarded: capacity, quotas and idempotency in front of moto's launch.

moto launches ``MinCount`` instances (it ignores ``MaxCount``), so the checks are on
``MinCount``:

- A pool the capacity book has run dry (or with fewer than ``MinCount`` left) answers
  ``InsufficientInstanceCapacity`` with AWS's message.
- Account quotas: ``VcpuLimitExceeded`` (on-demand vCPUs) or
  ``MaxSpotInstanceCountExceeded`` when ``MinCount`` more instances do not fit.
- A repeated ``ClientToken`` replays the first answer.
- The template's market and placement are spelt out for moto, which ignores them.
Everything else is moto's own RunInstances.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from spotfleet_sim import backend, capacity, idempotency, launching, passthrough, replies, wire

if TYPE_CHECKING:
    from spotfleet_sim.dispatch import Request
    from spotfleet_sim.layer import MarketLayer

_INSTANCE_ID = re.compile(rb"<instanceId>(i-[0-9a-f]+)</instanceId>")


def handle(layer: MarketLayer, req: Request, environ: dict[str, Any]) -> replies.Reply:
    with layer.state_lock:
        ticket = layer.tokens.lookup(req.account, req.region, req.operation, req.params)
        if ticket.mismatch is not None:
            return replies.fail(layer, req, idempotency.MISMATCH, ticket.mismatch)
        if ticket.replay is not None:
            status, body = ticket.replay
            replies.record(layer, req, "layer", status, detail="idempotent replay of ClientToken")
            return replies.make(status, body, "text/xml")
        ec2 = backend.ec2(req.account, req.region)
        p = wire.nest(req.params)
        tmpl: dict[str, Any] = {}
        if p.get("LaunchTemplate"):
            tmpl, _spec = backend.launch_template_data(ec2, p["LaunchTemplate"])
        itype = p.get("InstanceType") or tmpl.get("InstanceType") or "m1.small"
        market_type = launching.market_of(p, tmpl)
        pool = capacity.PoolKey(itype, launching.zone_of(ec2, req.region, p, tmpl), market_type)
        min_count = int(p.get("MinCount") or 1)
        room = layer.capacity.room(pool)
        if room is not None and room < min_count:
            message = layer.capacity.ice_message(pool, req.region)
            return replies.fail(layer, req, "InsufficientInstanceCapacity", message)
        budget = layer.quotas.budget(req.account, req.region, market_type)
        fits = budget.fits(itype)
        if fits is not None and fits < min_count:
            return replies.fail(layer, req, budget.code, budget.message)
        extra = launching.from_template(req.params, tmpl, market_type)
        if extra:  # moto ignores the template's market and placement: say them explicitly
            raw = urlencode(dict(req.params, **extra)).encode()
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(raw), str(len(raw))
        try:
            status, headers, body = passthrough.call_moto(layer.moto_app, environ)
        finally:
            layer.after_change(req.account, req.region, ())
        reply = replies.from_moto(layer, req, status, headers, body)
        if status == 200:
            ids = [m.decode() for m in _INSTANCE_ID.findall(body)]
            launching.launched(layer, req.account, req.region, pool, ids)
            layer.tokens.remember(ticket, status, body)
        return reply
