"""The control API: JSON over HTTP under ``/_spotfleet/`` on the cloud's own port.

Routed with werkzeug's ``Map``/``Rule``; each endpoint is a small function of the
layer, the JSON body and the query string that returns (HTTP status, JSON value).
Bad input (missing or malformed fields) answers 400 with ``{"error": ...}``, an
unknown path 404 and a known path with the wrong method 405. Docs: docs/sim.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from spotfleet_sim import capacity, faults, interruptions, quotas, replies, wire

if TYPE_CHECKING:
    from spotfleet_sim.layer import MarketLayer

PREFIX = "/_spotfleet/"

Body = dict[str, Any]
Query = dict[str, str]
Endpoint = Callable[["MarketLayer", Body, Query], Any]


def _health(layer: MarketLayer, body: Body, query: Query) -> Any:
    return {"ok": True, "history_region": layer.history.region}


def _reset(layer: MarketLayer, body: Body, query: Query) -> Any:
    layer.reset()
    return {"ok": True, "clock": layer.clock_json()}


def _clock(layer: MarketLayer, body: Body, query: Query) -> Any:
    return layer.clock_json()


def _set_clock(layer: MarketLayer, body: Body, query: Query) -> Any:
    """``advance_seconds`` (market seconds), then ``now`` (reported; capped at the wall
    clock, the market moves by as much), ``speed``, ``history_time`` (a re-map)."""
    if body.get("advance_seconds") is not None:
        layer.timeline.advance(float(body["advance_seconds"]))
    if body.get("now"):
        layer.timeline.jump_to(wire.parse_time(str(body["now"])))
    if body.get("speed") is not None:
        layer.timeline.set_speed(float(body["speed"]))
    if body.get("history_time") is not None:
        layer.timeline.remap(wire.parse_time(str(body["history_time"])))
    return layer.clock_json()


def _capacity(layer: MarketLayer, body: Body, query: Query) -> Any:
    book = layer.capacity
    scheduled = book.scheduled()
    return {
        "unavailable": [p.to_json() for p in book.unavailable()],
        "limited": [dict(p.to_json(), remaining=n) for p, n in book.limits().items()],
        "scheduled": scheduled,
        "dry_next_spot": scheduled[capacity.DRY_NEXT_SPOT],
    }


def _set_capacity(layer: MarketLayer, body: Body, query: Query) -> Any:
    """``pools`` marked ``available`` (default false) or, per pool, limited to
    ``remaining`` more instances; ``dry_next_spot``: arm that scheduled fault."""
    book = layer.capacity
    entries = capacity.pools_from_json(list(body.get("pools", [])))
    if body.get("dry_next_spot") is not None:
        book.schedule(capacity.DRY_NEXT_SPOT, int(body["dry_next_spot"]))
    available = bool(body.get("available", False))
    for key, entry in entries:
        if entry.get("remaining") is not None:
            book.limit(key, int(str(entry["remaining"])))
        else:
            book.mark([key], available)
    return _capacity(layer, body, query)


def _faults(layer: MarketLayer, body: Body, query: Query) -> Any:
    return {"faults": [r.to_json() for r in layer.faults.rules()]}


def _add_fault(layer: MarketLayer, body: Body, query: Query) -> Any:
    """An error rule; ``status`` (500, 502, 503, 504) instead of ``code`` picks the 5xx."""
    code = body.get("code")
    if code is None and body.get("status") is not None:
        status = int(body["status"])
        if status not in faults.BURST_CODES:
            raise ValueError(f"status must be one of {sorted(faults.BURST_CODES)}")
        code = faults.BURST_CODES[status]
    layer.faults.add(
        faults.FaultRule(
            operation=str(body.get("operation", "*")),
            code=str(body["code"] if code is None else code),
            count=int(body["count"]) if body.get("count") is not None else None,
            probability=float(body["probability"]) if body.get("probability") is not None else None,
            message=body.get("message"),
            access_key_id=body.get("access_key_id"),
        )
    )
    return _faults(layer, body, query)


def _clear_faults(layer: MarketLayer, body: Body, query: Query) -> Any:
    layer.faults.clear()
    return _faults(layer, body, query)


def _hangs(layer: MarketLayer, body: Body, query: Query) -> Any:
    return {"hangs": [r.to_json() for r in layer.hangs.rules()]}


def _add_hang(layer: MarketLayer, body: Body, query: Query) -> Any:
    layer.hangs.add(
        faults.HangRule(
            operation=str(body.get("operation", "*")),
            seconds=float(body["seconds"]),
            count=int(body["count"]) if body.get("count") is not None else None,
            access_key_id=body.get("access_key_id"),
        )
    )
    return _hangs(layer, body, query)


def _clear_hangs(layer: MarketLayer, body: Body, query: Query) -> Any:
    layer.hangs.clear()
    return _hangs(layer, body, query)


def _quotas(layer: MarketLayer, body: Body, query: Query) -> Any:
    return {"quotas": [q.to_json() for q in layer.quotas.quotas()]}


def _set_quota(layer: MarketLayer, body: Body, query: Query) -> Any:
    """Set or lift (null) ``on_demand_vcpus`` / ``spot_instances`` for ``account`` and
    ``region`` (each ``*`` unless given)."""
    changes: dict[str, Any] = {
        k: body[k] for k in ("on_demand_vcpus", "spot_instances") if k in body
    }
    if not changes:
        raise ValueError("give on_demand_vcpus and/or spot_instances (null lifts a limit)")
    layer.quotas.update(
        str(body.get("account", quotas.ANY)), str(body.get("region", quotas.ANY)), changes
    )
    return _quotas(layer, body, query)


def _clear_quotas(layer: MarketLayer, body: Body, query: Query) -> Any:
    layer.quotas.clear()
    return _quotas(layer, body, query)


def _counters(layer: MarketLayer, body: Body, query: Query) -> Any:
    return layer.counters.to_json()


def _clear_counters(layer: MarketLayer, body: Body, query: Query) -> Any:
    layer.counters.clear()
    return layer.counters.to_json()


def _interrupt(layer: MarketLayer, body: Body, query: Query) -> Any:
    notice = body.get("notice_seconds")
    return layer.interrupter.interrupt(
        list(body["instance_ids"]),
        str(body.get("kind", "both")),
        float(notice) if notice is not None else None,
    )


def _interruptions(layer: MarketLayer, body: Body, query: Query) -> Any:
    return {
        "pending": layer.interrupter.pending(),
        "notice_seconds": layer.interrupter.notice_seconds,
    }


def _config(layer: MarketLayer, body: Body, query: Query) -> Any:
    return {
        "notice_seconds": layer.interrupter.notice_seconds,
        "describe_index": layer.describe_index,
    }


def _set_config(layer: MarketLayer, body: Body, query: Query) -> Any:
    """``notice_seconds`` (market seconds, >= 0); ``describe_index`` (false: moto answers
    DescribeInstances itself, for comparisons)."""
    if body.get("notice_seconds") is not None:
        notice = float(body["notice_seconds"])
        if notice < 0:
            raise ValueError("notice_seconds must be >= 0")
        layer.interrupter.notice_seconds = notice
    if body.get("describe_index") is not None:
        layer.describe_index = bool(body["describe_index"])
    return _config(layer, body, query)


def _hazard(layer: MarketLayer, body: Body, query: Query) -> Any:
    return {
        "enabled": layer.interrupter.hazard_enabled,
        "multiplier": layer.interrupter.hazard_multiplier,
    }


def _set_hazard(layer: MarketLayer, body: Body, query: Query) -> Any:
    seed = body.get("seed")
    layer.interrupter.set_hazard(
        bool(body["enabled"]),
        float(body.get("multiplier", 1.0)),
        int(seed) if seed is not None else None,
    )
    return _hazard(layer, body, query)


def _log(layer: MarketLayer, body: Body, query: Query) -> Any:
    since = int(query.get("since", "0"))
    records = layer.log.since(since)
    return {
        "records": [r.to_json() for r in records],
        "last_seq": records[-1].seq if records else since,
    }


ENDPOINTS: dict[str, Endpoint] = {
    f.__name__.lstrip("_"): f
    for f in (
        _health,
        _reset,
        _clock,
        _set_clock,
        _capacity,
        _set_capacity,
        _faults,
        _add_fault,
        _clear_faults,
        _hangs,
        _add_hang,
        _clear_hangs,
        _quotas,
        _set_quota,
        _clear_quotas,
        _counters,
        _clear_counters,
        _interrupt,
        _interruptions,
        _config,
        _set_config,
        _hazard,
        _set_hazard,
        _log,
    )
}


def _rules(path: str, **by_method: str) -> list[Rule]:
    return [
        Rule(PREFIX + path, endpoint=endpoint, methods=[method])
        for method, endpoint in by_method.items()
    ]


URLS = Map(
    [
        *_rules("health", GET="health", POST="health"),
        *_rules("reset", POST="reset"),
        *_rules("clock", GET="clock", POST="set_clock"),
        *_rules("capacity", GET="capacity", POST="set_capacity"),
        *_rules("faults", GET="faults", POST="add_fault", DELETE="clear_faults"),
        *_rules("hangs", GET="hangs", POST="add_hang", DELETE="clear_hangs"),
        *_rules("quotas", GET="quotas", POST="set_quota", DELETE="clear_quotas"),
        *_rules("counters", GET="counters", DELETE="clear_counters"),
        *_rules("interrupt", POST="interrupt"),
        *_rules("interruptions", GET="interruptions"),
        *_rules("config", GET="config", POST="set_config"),
        *_rules("hazard", GET="hazard", POST="set_hazard"),
        *_rules("log", GET="log"),
    ]
)


def serve(layer: MarketLayer, environ: dict[str, Any]) -> replies.Reply:
    """Answer one control-API request."""
    method = environ.get("REQUEST_METHOD", "GET")
    path = (environ.get("PATH_INFO", "") or "").rstrip("/")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    try:
        endpoint, _args = URLS.bind("spotfleet-sim").match(path, method=method)
    except NotFound:
        return replies.json_reply(404, {"error": f"no control endpoint {method} {path}"})
    except MethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.valid_methods or []))
        return replies.json_reply(405, {"error": f"{method} {path}: use {allowed}"})
    try:
        body = json.loads(raw) if raw else {}
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        result = ENDPOINTS[endpoint](layer, body, query)
    except (ValueError, KeyError, TypeError, interruptions.InterruptionError) as exc:
        return replies.json_reply(400, {"error": str(exc)})
    return replies.json_reply(200, result)
