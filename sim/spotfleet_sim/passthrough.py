"""Calls the layer hands to moto, and keeping the instance index right afterwards.

A call that can change instances runs under the layer's state lock and is followed
by an index refresh of what it touched: the instances it names
(TerminateInstances, Stop/Start/Reboot, CreateTags/DeleteTags, ...), the
reservations moto added (RunInstances, fleets), or, for a mutating call the layer
does not know, every instance. Calls known not to touch instances (launch
templates, security groups, key pairs, VPCs, subnets; SQS, EventBridge, STS, IAM)
skip the refresh.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from spotfleet_sim import calllog, replies

if TYPE_CHECKING:
    from spotfleet_sim.dispatch import Request
    from spotfleet_sim.layer import MarketLayer

#: EC2 calls that name the instances they change, and the parameter that names them.
NAMED = {
    "CreateTags": "ResourceId",
    "DeleteTags": "ResourceId",
    "TerminateInstances": "InstanceId",
    "StopInstances": "InstanceId",
    "StartInstances": "InstanceId",
    "RebootInstances": "InstanceId",
    "ModifyInstanceAttribute": "InstanceId",
    "ModifyInstanceMetadataOptions": "InstanceId",
    "MonitorInstances": "InstanceId",
    "UnmonitorInstances": "InstanceId",
}

#: Mutating EC2 calls that leave every instance as it was.
NEUTRAL = frozenset(
    {
        "CreateLaunchTemplate",
        "CreateLaunchTemplateVersion",
        "ModifyLaunchTemplate",
        "DeleteLaunchTemplate",
        "DeleteLaunchTemplateVersions",
        "CreateSecurityGroup",
        "AuthorizeSecurityGroupIngress",
        "AuthorizeSecurityGroupEgress",
        "RevokeSecurityGroupIngress",
        "RevokeSecurityGroupEgress",
        "CreateKeyPair",
        "ImportKeyPair",
        "CreateVpc",
        "CreateSubnet",
    }
)

#: Services whose calls never change EC2 instances.
NEUTRAL_SERVICES = frozenset({"sqs", "events", "sts", "iam"})

#: What a call touches: a list of ids, ``()`` (only new reservations), None (everything).
Touched = list[str] | tuple[()] | None


def touched(req: Request) -> Touched | Literal[False]:
    """What ``req`` may change in the index; False when nothing."""
    if not calllog.is_mutating(req.operation) or req.service in NEUTRAL_SERVICES:
        return False
    if req.service != "ec2":
        return None
    if req.operation in NEUTRAL:
        return False
    name = NAMED.get(req.operation)
    if name is not None:
        return [v for k, v in req.params.items() if k == name or k.startswith(name + ".")]
    if req.operation == "RunInstances":
        return ()
    return None


def call_moto(
    app: Callable[..., Any], environ: dict[str, Any]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Run moto's WSGI app on ``environ``: (status, headers, body)."""
    captured: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        captured["status"] = int(status.split(" ", 1)[0])
        captured["headers"] = headers
        return chunks.append

    result = app(environ, start)
    try:
        for chunk in result:
            chunks.append(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return captured.get("status", 500), captured.get("headers", []), b"".join(chunks)


def moto_reply(layer: MarketLayer, environ: dict[str, Any], req: Request) -> replies.Reply:
    """moto's answer to ``req`` (logged), or a clear error when moto cannot serve it."""
    try:
        status, headers, body = call_moto(layer.moto_app, environ)
    except NotImplementedError as exc:
        message = f"{req.service}.{req.operation} is not implemented by moto: {exc}"
        return replies.moto_failed(layer, req, message, True)
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        message = f"moto failed on {req.service}.{req.operation}: {detail}"
        return replies.moto_failed(
            layer, req, message, False, "".join(traceback.format_exception(exc))
        )
    return replies.from_moto(layer, req, status, headers, body)


def forward(layer: MarketLayer, environ: dict[str, Any], req: Request) -> replies.Reply:
    """Pass ``req`` to moto; refresh the index after a call that may change instances."""
    what = touched(req)
    if what is False:
        return moto_reply(layer, environ, req)
    with layer.state_lock:
        try:
            return moto_reply(layer, environ, req)
        finally:
            layer.after_change(req.account, req.region, what)
