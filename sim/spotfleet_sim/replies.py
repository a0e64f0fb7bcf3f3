"""Answers the layer gives, and the call log entry each answer leaves.

A :class:`Reply` is a finished HTTP answer (status, headers, body). Errors are shaped
for the caller's protocol (EC2 XML, query XML, JSON; gateway codes as a front end's
HTML page); every reply to an AWS call is logged exactly once through :func:`record`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spotfleet_sim import calllog, faults, wire

if TYPE_CHECKING:
    from spotfleet_sim.dispatch import Request
    from spotfleet_sim.layer import MarketLayer

REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Reply:
    """A complete HTTP answer."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    def status_line(self) -> str:
        return f"{self.status} {REASONS.get(self.status, 'Status')}"


def make(status: int, payload: bytes, content_type: str) -> Reply:
    """A reply with AWS's usual headers."""
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(payload))),
        ("x-amzn-RequestId", wire.request_id()),
    ]
    return Reply(status, payload, headers)


def content_type(req: Request | None) -> str:
    return "application/x-amz-json-1.1" if req and req.protocol == "json" else "text/xml"


def error_body(req: Request, code: str, message: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of an error in the caller's protocol."""
    if code in faults.GATEWAY_CODES:
        status = wire.ERROR_STATUS[code]
        page = f"<html><body><h1>{status} {message}</h1></body></html>"
        return status, page.encode(), "text/html"
    if req.protocol == "json":
        status, body = wire.json_error(code, message)
    elif req.service == "ec2":
        status, body = wire.ec2_error(code, message)
    else:
        status, body = wire.query_error(code, message)
    return status, body, content_type(req)


def record(
    layer: MarketLayer,
    req: Request,
    handled_by: str,
    status: int,
    error_code: str | None = None,
    injected: bool = False,
    unimplemented: bool = False,
    detail: str | None = None,
    failure: str | None = None,
) -> None:
    """Append the call to the layer's log (``sim_time`` is the reported clock)."""
    layer.log.append(
        wall_time=time.time(),
        sim_time=layer.timeline.now().reported_dt.isoformat(),
        service=req.service,
        region=req.region,
        operation=req.operation,
        mutating=calllog.is_mutating(req.operation),
        handled_by=handled_by,
        status=status,
        error_code=error_code,
        injected=injected,
        unimplemented=unimplemented,
        detail=_join(req.note, detail),
        failure=failure,
    )


def _join(*parts: str | None) -> str | None:
    kept = [p for p in parts if p]
    return "; ".join(kept) if kept else None


def ok(layer: MarketLayer, req: Request, payload: bytes, detail: str | None = None) -> Reply:
    """A 200 the layer answered itself."""
    record(layer, req, "layer", 200, detail=detail)
    return make(200, payload, content_type(req))


def fail(
    layer: MarketLayer,
    req: Request,
    code: str,
    message: str,
    injected: bool = False,
    unimplemented: bool = False,
    failure: str | None = None,
) -> Reply:
    """An AWS-shaped error the layer answered itself."""
    status, body, ctype = error_body(req, code, message)
    record(
        layer,
        req,
        "layer",
        status,
        code,
        injected=injected,
        unimplemented=unimplemented,
        detail=None if injected else message,
        failure=failure,
    )
    return make(status, body, ctype)


def moto_failed(
    layer: MarketLayer,
    req: Request,
    message: str,
    unimplemented: bool,
    failure: str | None = None,
) -> Reply:
    """moto could not serve the call: a clear, non-retried error instead of its HTML page."""
    code = "NotImplementedBySimulator" if unimplemented else "InternalError"
    status, body = (
        wire.json_error(code, message) if req.protocol == "json" else wire.ec2_error(code, message)
    )
    record(
        layer,
        req,
        "moto",
        status,
        code,
        unimplemented=unimplemented,
        detail=message,
        failure=failure,
    )
    return make(status, body, content_type(req))


def from_moto(
    layer: MarketLayer, req: Request, status: int, headers: list[tuple[str, str]], body: bytes
) -> Reply:
    """moto's own answer, logged (HTML 5xx pages become ``moto_failed``)."""
    ctype = {k.lower(): v for k, v in headers}.get("content-type", "")
    if status >= 500 and "html" in ctype:
        return moto_failed(
            layer, req, f"moto failed on {req.service}.{req.operation} (HTTP {status})", True
        )
    record(layer, req, "moto", status, error_code(body) if status >= 400 else None)
    return Reply(status, body, headers)


def error_code(body: bytes) -> str | None:
    """The error code in an AWS error body (XML or JSON)."""
    m = re.search(rb"<Code>([^<]+)</Code>", body)
    if m:
        return m.group(1).decode()
    m = re.search(rb'"__type"\s*:\s*"([^"]+)"', body)
    return m.group(1).decode().split("#")[-1] if m else None


def json_reply(status: int, payload: Any) -> Reply:
    """A control-API answer."""
    return make(status, json.dumps(payload).encode(), "application/json")
