"""Deletion of a SpotPolicy: terminate (``Delete``) or untag (``Orphan``) what it owns,
then release the finalizer and the policy's runtime state.

Idempotent: instances and templates already gone are fine. Deletion never hangs:

- nothing to clean up (the operator never launched anything for the policy: no
  instance in its status and its credentials never worked): the finalizer is
  released at once;
- an AWS outage or throttling: retried with backoff (a Warning Event says why),
  never given up — the instances are still ours to remove;
- permanent errors (credentials gone or refused) after instances were launched:
  retried ``finalizer_max_attempts`` times, then released with a Warning Event that
  names the tag to find what was left;
- the annotation ``spotfleet.dev/force-delete: "true"`` releases at once, with the
  same Event (as Karpenter users force a stuck finalizer).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spotfleet_operator import reconcile, status
from spotfleet_operator.api import conditions as cond
from spotfleet_operator.aws import credentials, errors, port

FORCE_ANNOTATION = "spotfleet.dev/force-delete"


@dataclass
class Result:
    """``done``: release the finalizer. Otherwise retry after ``retry_after`` seconds."""

    done: bool
    events: list[status.Event] = field(default_factory=list)
    retry_after: float = 0.0
    terminated: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)


async def _creds(body: Mapping[str, Any], deps: reconcile.Deps) -> credentials.TenantCredentials:
    spec = body.get("spec") or {}
    c = spec.get("credentials") or {}
    ns = body["metadata"]["namespace"]
    if c.get("assumeRoleArn"):
        return credentials.AssumeRole(str(c["assumeRoleArn"]), c.get("externalId"))
    name = (c.get("secretRef") or {}).get("name")
    if not name:
        raise credentials.CredentialsError("spec.credentials names no source")
    data = await deps.secrets.read_secret(ns, str(name))
    if data is None:
        raise credentials.CredentialsError(f"Secret {ns}/{name} not found")
    return credentials.StaticKeys.from_secret_data(data, f"{ns}/{name}")


def never_launched(body: Mapping[str, Any]) -> bool:
    """True when the status shows the operator never had a fleet for the policy: no
    instance reported and the credentials never resolved."""
    st = body.get("status") or {}
    if any(int(a.get("count", 0)) for a in st.get("allocation") or []):
        return False
    total = ((st.get("capacity") or {}).get("fulfilled") or {}).get("total", "0")
    if str(total) not in ("0", "0.0", ""):
        return False
    cv = cond.get_condition(st.get("conditions") or [], cond.CREDENTIALS_VALID)
    return cv is None or cv.status != cond.TRUE


def _left_behind(uid: str, ref: str, why: str) -> str:
    return (
        f"{why}; instances tagged spotfleet.dev/policy-uid={uid} ({ref}) may still be "
        "running: find them with that tag and terminate or adopt them"
    )


async def run(
    body: Mapping[str, Any], deps: reconcile.Deps, now: dt.datetime, attempt: int
) -> Result:
    """Clean up one policy's capacity; ``attempt`` counts from 0 (Kopf's retry)."""
    meta = body["metadata"]
    uid, ns, name = str(meta["uid"]), str(meta["namespace"]), str(meta["name"])
    ps = deps.state.policy(uid, f"{ns}/{name}")
    async with ps.lock:
        res = await _run(body, deps, attempt, uid, ns, name)
    if res.done:
        deps.state.release(uid)
        deps.metrics.clear_policy(ns, name)
    return res


async def _run(
    body: Mapping[str, Any], deps: reconcile.Deps, attempt: int, uid: str, ns: str, name: str
) -> Result:
    spec = body.get("spec") or {}
    ref = f"{ns}/{name}"
    if str((meta_annotations(body)).get(FORCE_ANNOTATION, "")).lower() == "true":
        msg = _left_behind(uid, ref, f"{FORCE_ANNOTATION} set: finalizer released without cleanup")
        return Result(True, [status.Event("Warning", "CleanupForced", msg)])
    orphan = spec.get("deletionPolicy") == "Orphan"
    region = str(spec.get("region") or "us-east-1")
    try:
        creds = await _creds(body, deps)
        provider = deps.cloud(creds, region)
        owned = await provider.owned_instances(uid)
        ids = [o.instance_id for o in owned]
        res = Result(done=True)
        if orphan:
            if owned:
                await provider.untag(owned)
            res.orphaned = ids
            res.events.append(
                status.Event(
                    "Normal",
                    "Orphaned",
                    f"deletionPolicy Orphan: {len(ids)} instance(s) left running, "
                    "ownership tags removed",
                )
            )
        else:
            if ids:
                await provider.terminate(ids)
            left = [o.instance_id for o in await provider.owned_instances(uid)]
            if left:
                return Result(
                    False,
                    [
                        status.Event(
                            "Warning",
                            "CleanupPending",
                            f"{len(left)} instance(s) still running; retrying",
                        )
                    ],
                    deps.config.retry_delay(attempt + 1),
                )
            res.terminated = ids
            if ids:
                deps.metrics.terminations.labels(ns, name, "deletion").inc(len(ids))
            res.events.append(
                status.Event(
                    "Normal", "Terminated", f"terminated {len(ids)} instance(s) on deletion"
                )
            )
        legacy = port.launch_template_name(uid)  # per-policy templates of earlier releases
        listed = [a.templates for a in deps.state.accounts.values() if a.templates is not None]
        if not listed or any(legacy in t for t in listed):
            await provider.delete_launch_template(legacy)
        return res
    except (credentials.CredentialsError, errors.AwsError) as e:
        permanent = isinstance(e, credentials.CredentialsError) or (
            isinstance(e, errors.AwsError) and e.kind is errors.ErrorClass.AUTH
        )
        if permanent and never_launched(body):
            return Result(
                True,
                [
                    status.Event(
                        "Normal",
                        "Deleted",
                        f"nothing to clean up: no instance was ever launched ({e})",
                    )
                ],
            )
        if permanent and attempt + 1 >= deps.config.finalizer_max_attempts:
            msg = _left_behind(uid, ref, f"giving up cleanup after {attempt + 1} attempts ({e})")
            return Result(True, [status.Event("Warning", "CleanupAbandoned", msg)])
        hint = (
            f"; after {deps.config.finalizer_max_attempts} attempts the finalizer is released "
            f"(annotate {FORCE_ANNOTATION}=true to release it now)"
            if permanent
            else ""
        )
        return Result(
            False,
            [
                status.Event(
                    "Warning",
                    "CleanupFailed",
                    f"cleanup attempt {attempt + 1} failed: {e}; retrying{hint}",
                )
            ],
            deps.config.retry_delay(attempt + 1),
        )


def meta_annotations(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return (body.get("metadata") or {}).get("annotations") or {}
