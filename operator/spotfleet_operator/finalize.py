"""Deletion of a SpotPolicy: terminate (``Delete``) or untag (``Orphan``) what it owns.

Idempotent: instances and templates already gone are fine. An AWS outage never
loses the cleanup: the caller retries with backoff (and an Event says why).
Only when the failure is permanent (credentials gone or refused) for
``finalizer_max_attempts`` attempts is the finalizer released, with a Warning
Event naming every instance left behind, so deletion is never blocked forever.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spotfleet_operator import reconcile
from spotfleet_operator.aws import credentials, errors


@dataclass
class Result:
    """``done``: release the finalizer. Otherwise retry after ``retry_after`` seconds."""

    done: bool
    events: list[reconcile.Event] = field(default_factory=list)
    retry_after: float = 0.0
    terminated: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)


def _backoff(attempt: int) -> float:
    return float(min(300, 5 * 2 ** min(attempt, 6)))


async def _creds(body: Mapping[str, Any], deps: reconcile.Deps) -> credentials.TenantCredentials:
    spec = body.get("spec") or {}
    c = spec.get("credentials") or {}
    ns = body["metadata"]["namespace"]
    if c.get("assumeRoleArn"):
        return credentials.AssumeRole(str(c["assumeRoleArn"]), c.get("externalId"))
    name = (c.get("secretRef") or {}).get("name")
    if not name:
        raise credentials.CredentialsError("spec.credentials names no source")
    data = await deps.secrets.read(ns, str(name))
    if data is None:
        raise credentials.CredentialsError(f"Secret {ns}/{name} not found")
    return credentials.StaticKeys.from_secret_data(data, f"{ns}/{name}")


async def run(
    body: Mapping[str, Any], deps: reconcile.Deps, now: dt.datetime, attempt: int
) -> Result:
    """Clean up one policy's capacity; ``attempt`` counts from 0 (Kopf's retry)."""
    meta = body["metadata"]
    uid, ns, name = str(meta["uid"]), str(meta["namespace"]), str(meta["name"])
    spec = body.get("spec") or {}
    policy_ref = f"{ns}/{name}"
    orphan = spec.get("deletionPolicy") == "Orphan"
    region = str(spec.get("region") or "us-east-1")
    try:
        creds = await _creds(body, deps)
        client = deps.ec2_factory(creds, region)
        owned = await client.owned_instances(uid)
        ids = [o.instance_id for o in owned]
        res = Result(done=True)
        if orphan:
            if owned:
                await client.untag(owned)
            res.orphaned = ids
            msg = (
                f"deletionPolicy Orphan: {len(ids)} instance(s) left running, "
                "ownership tags removed"
            )
            res.events.append(reconcile.Event("Normal", "Orphaned", msg))
        else:
            if ids:
                await client.terminate(ids)
            left = [o.instance_id for o in await client.owned_instances(uid)]
            if left:
                return Result(
                    False,
                    [
                        reconcile.Event(
                            "Warning",
                            "CleanupPending",
                            f"{len(left)} instance(s) still running; retrying",
                        )
                    ],
                    _backoff(attempt),
                )
            res.terminated = ids
            if ids:
                deps.metrics.terminations.labels(ns, name, "deletion").inc(len(ids))
            res.events.append(
                reconcile.Event(
                    "Normal", "Terminated", f"terminated {len(ids)} instance(s) on deletion"
                )
            )
        if not (spec.get("launch") or {}).get("launchTemplate"):
            await client.delete_launch_template(uid)
        deps.metrics.clear_policy(ns, name)
        return res
    except (credentials.CredentialsError, errors.AwsError) as e:
        permanent = isinstance(e, credentials.CredentialsError) or (
            isinstance(e, errors.AwsError) and e.kind is errors.ErrorClass.AUTH
        )
        if permanent and attempt + 1 >= deps.config.finalizer_max_attempts:
            msg = (
                f"giving up cleanup after {attempt + 1} attempts ({e}); instances tagged "
                f"spotfleet.dev/policy-uid={uid} ({policy_ref}) may still be running"
            )
            deps.metrics.clear_policy(ns, name)
            return Result(True, [reconcile.Event("Warning", "CleanupAbandoned", msg)])
        return Result(
            False,
            [
                reconcile.Event(
                    "Warning",
                    "CleanupFailed",
                    f"cleanup attempt {attempt + 1} failed: {e}; retrying",
                )
            ],
            _backoff(attempt),
        )
