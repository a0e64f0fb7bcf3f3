"""The layer's direct hands on moto's in-process backends (EC2, EventBridge).

Everything moto-internal the layer touches is here, so a moto upgrade has one
place to check. moto is pinned (5.2.5) in pyproject.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import moto.core.models
import moto.ec2.models
import moto.ec2.models.instances
import moto.events.models
import moto.iam.models
import moto.moto_api._internal.models
from moto.core import exceptions as moto_exceptions

DEFAULT_ACCOUNT_ID: str = moto.core.models.DEFAULT_ACCOUNT_ID
SPOT_TERMINATION_CODE = "Server.SpotInstanceTermination"
SPOT_TERMINATION_MESSAGE = "Server.SpotInstanceTermination: Spot instance termination"

ServiceError = moto_exceptions.ServiceException


def account_for(access_key: str | None, header_account: str | None) -> str:
    """The account moto would use for a request (env, x-moto-account-id header, access key)."""
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if header_account:
        return header_account
    if access_key:
        return str(moto.iam.models.get_account_id_from(access_key))
    return DEFAULT_ACCOUNT_ID


def ec2(account: str, region: str) -> Any:
    """moto's EC2 backend for (account, region)."""
    return moto.ec2.models.ec2_backends[account][region]


def reset_all() -> None:
    """Reset every moto backend (what ``POST /moto-api/reset`` does)."""
    moto.moto_api._internal.models.moto_api_backend.reset()


def launch_template_data(
    backend: Any, spec: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(template data, resolved spec with LaunchTemplateId and numeric Version).

    ``spec`` is a LaunchTemplateSpecification (LaunchTemplateId or LaunchTemplateName,
    Version; default ``$Default``). Raises moto's NotFound errors as AWS would.
    """
    if spec.get("LaunchTemplateId"):
        tmpl = backend.get_launch_template(spec["LaunchTemplateId"])
    elif spec.get("LaunchTemplateName"):
        tmpl = backend.get_launch_template_by_name(spec["LaunchTemplateName"])
    else:
        raise ValueError("LaunchTemplateSpecification needs LaunchTemplateId or LaunchTemplateName")
    version = tmpl.get_version(spec.get("Version") or "$Default")
    resolved = {
        "LaunchTemplateId": tmpl.id,
        "LaunchTemplateName": tmpl.name,
        "Version": str(version.number),
    }
    return dict(version.data or {}), resolved


def subnet_zone(backend: Any, subnet_id: str) -> str:
    """Availability zone of a subnet (moto raises InvalidSubnetID.NotFound)."""
    return str(backend.get_subnet(subnet_id).availability_zone)


def find_instance(instance_id: str) -> tuple[str, str, Any] | None:
    """(account, region, moto Instance) for an id, searching every live backend."""
    for account, regions in list(moto.ec2.models.ec2_backends.items()):
        for region, backend in list(regions.items()):
            for reservation in list(backend.reservations.values()):
                for inst in reservation.instances:
                    if inst.id == instance_id:
                        return account, region, inst
    return None


def instance_state(inst: Any) -> str:
    return str(inst.state)


def terminate_for_spot(account: str, region: str, instance_id: str) -> None:
    """Terminate as AWS reclaims a spot instance: state ``terminated``, spot state reason."""
    backend = ec2(account, region)
    backend.terminate_instances([instance_id])
    inst = backend.get_instance(instance_id)
    inst.state_reason = moto.ec2.models.instances.StateReason(
        SPOT_TERMINATION_MESSAGE, SPOT_TERMINATION_CODE
    )
    inst._reason = SPOT_TERMINATION_MESSAGE


def instance_arn(account: str, region: str, instance_id: str) -> str:
    return f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"


def ec2_event(
    account: str, region: str, detail_type: str, detail: dict[str, Any], at: datetime, arn: str
) -> dict[str, Any]:
    """An EC2 event in EventBridge's envelope, as AWS delivers it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.ec2",
        "account": account,
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [arn],
        "detail": detail,
    }


def emit(account: str, region: str, event: dict[str, Any]) -> int:
    """Deliver ``event`` through the default bus's enabled rules to their SQS targets.

    Uses moto's own pattern matching. A target without an input transformer gets
    the whole event JSON, as AWS sends it (moto's own delivery drops ``account``);
    one with an ``InputTransformer`` gets moto's rendering of the template. Targets
    other than SQS queues are skipped. Returns the number of deliveries.
    """
    import moto.events.utils
    import moto.sqs.models

    events = moto.events.models.events_backends[account][region]
    bus = events.event_buses.get("default")
    if bus is None:
        return 0
    body = json.dumps(event)
    delivered = 0
    for rule in list(bus.rules.values()):
        pattern = rule.event_pattern
        if rule.state != "ENABLED" or not pattern.matches_event(event):  # type: ignore[arg-type]
            continue
        for target in list(rule.targets):
            arn = str(target["Arn"]).split(":")
            if len(arn) < 6 or arn[2] != "sqs":
                continue
            q_account, q_region, q_name = arn[4], arn[3], arn[5]
            message = body
            transformer = target.get("InputTransformer")
            if transformer:
                enriched = dict(event, **{"ingestion-time": time.time()})
                message = json.dumps(
                    moto.events.utils.EventTemplateParser.parse(
                        input_template=transformer.get("InputTemplate"),
                        input_paths_map=transformer.get("InputPathsMap", {}),
                        event=enriched,  # type: ignore[arg-type]
                    )
                )
            group = (target.get("SqsParameters") or {}).get("MessageGroupId")
            moto.sqs.models.sqs_backends[q_account][q_region].send_message(
                queue_name=q_name, message_body=message, group_id=group
            )
            delivered += 1
    return delivered


def iter_running_spot(instance_ids: Iterator[str]) -> Iterator[tuple[str, str, Any]]:
    """(account, region, instance) for ids that are running spot instances."""
    for iid in instance_ids:
        found = find_instance(iid)
        if found and instance_state(found[2]) == "running" and found[2].lifecycle == "spot":
            yield found
