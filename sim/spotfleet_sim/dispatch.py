"""Dispatch: each request to the stand-in cloud, from the WSGI environ to its reply.

In order: the control API under ``/_spotfleet/`` (:mod:`spotfleet_sim.control`);
moto's own ``/moto-api/`` (passed through; a non-GET call drops the instance
index). Every AWS call is then described (service, region, account, operation,
access key id), counted, held by a matching hang fault, failed by a matching error
fault, answered by the layer's module for its operation (:mod:`spotfleet_sim.ops`)
or passed to moto (:mod:`spotfleet_sim.passthrough`). Exceptions become AWS-shaped
errors, never moto's HTML page.
"""

from __future__ import annotations

import io
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from spotfleet_sim import backend, control, passthrough, replies, wire
from spotfleet_sim.ops import (
    create_fleet,
    describe_instances,
    placement_scores,
    run_instances,
    spot_price_history,
)

if TYPE_CHECKING:
    from spotfleet_sim.layer import MarketLayer

CONTROL_PREFIX = control.PREFIX


@dataclass
class Request:
    """What the layer needs to know about an AWS call."""

    service: str
    region: str
    account: str
    operation: str
    protocol: str  # "query" | "json" | "rest"
    params: dict[str, str] = field(default_factory=dict)
    access_key_id: str | None = None
    note: str | None = None  # added to the call log's detail (e.g. a hang fault held it)


#: A handler answers its operation or returns None to let moto answer.
Handler = Callable[["MarketLayer", Request, dict[str, Any]], replies.Reply | None]

#: The EC2 operations the layer answers itself (query protocol), one module each.
HANDLERS: dict[tuple[str, str], Handler] = {
    ("ec2", "DescribeSpotPriceHistory"): spot_price_history.handle,
    ("ec2", "GetSpotPlacementScores"): placement_scores.handle,
    ("ec2", "CreateFleet"): create_fleet.handle,
    ("ec2", "RunInstances"): run_instances.handle,
    ("ec2", "DescribeInstances"): describe_instances.handle,
}

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d+/([^/]+)/([^/]+)/")


def describe(environ: dict[str, Any], body: bytes) -> Request:
    """Service, region, account, operation and protocol of a call (SigV4 and body)."""
    auth = environ.get("HTTP_AUTHORIZATION", "") or ""
    service, region, access_key = "unknown", "us-east-1", None
    m = _CREDENTIAL.search(auth)
    if m:
        access_key, region, service = m.group(1), m.group(2), m.group(3).lower()
    if service == "eventbridge":
        service = "events"
    account = backend.account_for(access_key, environ.get("HTTP_X_MOTO_ACCOUNT_ID"))
    ctype = environ.get("CONTENT_TYPE", "") or ""
    target = environ.get("HTTP_X_AMZ_TARGET", "") or ""
    if target:
        return Request(service, region, account, target.split(".")[-1], "json", {}, access_key)
    if ctype.startswith("application/x-www-form-urlencoded") or environ.get("QUERY_STRING"):
        params = wire.parse_query(body) if body else {}
        if not params and environ.get("QUERY_STRING"):
            params = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
        if "Action" in params:
            return Request(service, region, account, params["Action"], "query", params, access_key)
    op = f"{environ.get('REQUEST_METHOD', 'GET')} {environ.get('PATH_INFO', '')}"
    return Request(service, region, account, op, "rest", {}, access_key)


def serve(layer: MarketLayer, environ: dict[str, Any]) -> replies.Reply:
    """The reply to one request."""
    path = environ.get("PATH_INFO", "") or ""
    if path.startswith(CONTROL_PREFIX) or path.rstrip("/") == CONTROL_PREFIX.rstrip("/"):
        return control.serve(layer, environ)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    if path.startswith("/moto-api"):
        return _moto_api(layer, environ)
    req = describe(environ, body)
    layer.counters.count(req.access_key_id, req.service, req.operation)
    held = layer.hangs.hold(req.operation, req.access_key_id)
    if held is not None:
        req.note = f"held by a hang fault (up to {held:g}s)"
    fault = layer.faults.draw(req.operation, req.access_key_id)
    if fault is not None:
        return replies.fail(layer, req, fault[0], fault[1], injected=True)
    handler = HANDLERS.get((req.service, req.operation))
    if handler is not None and req.protocol == "query":
        reply = _handle(layer, handler, req, environ)
        if reply is not None:
            return reply
    return passthrough.forward(layer, environ, req)


def _handle(
    layer: MarketLayer, handler: Handler, req: Request, environ: dict[str, Any]
) -> replies.Reply | None:
    try:
        return handler(layer, req, environ)
    except backend.ServiceError as exc:
        code = str(getattr(exc, "code", "InvalidParameterValue"))
        message = str(getattr(exc, "message", exc))
        status, payload = wire.ec2_error(code, message)
        replies.record(layer, req, "layer", status, code)
        return replies.make(status, payload, "text/xml")
    except ValueError as exc:
        status, payload = wire.ec2_error("InvalidParameterValue", str(exc))
        replies.record(layer, req, "layer", status, "InvalidParameterValue")
        return replies.make(status, payload, "text/xml")
    except NotImplementedError as exc:
        message = f"{req.service}.{req.operation} is not implemented by moto: {exc}"
        return replies.moto_failed(layer, req, message, True)
    except Exception as exc:
        detail = "".join(traceback.format_exception(exc))
        status, payload = wire.ec2_error(
            "InternalError", f"spotfleet sim failed on {req.operation}: {exc!r}"
        )
        replies.record(layer, req, "layer", status, "InternalError", failure=detail)
        return replies.make(status, payload, "text/xml")


def _moto_api(layer: MarketLayer, environ: dict[str, Any]) -> replies.Reply:
    """moto's own API (dashboard, reset, state manager), untouched and not logged."""
    if environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD"):
        status, headers, body = passthrough.call_moto(layer.moto_app, environ)
        return replies.Reply(status, body, headers)
    with layer.state_lock:
        status, headers, body = passthrough.call_moto(layer.moto_app, environ)
        layer.index.clear()
    return replies.Reply(status, body, headers)
