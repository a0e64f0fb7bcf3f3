"""The layer's direct hands on moto's in-process backends (EC2, EventBridge).

Everything moto-internal the layer touches is here, so a moto upgrade has one
place to check. moto is pinned (5.2.5) in pyproject.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

import moto.core.models
import moto.core.responses
import moto.core.serialize
import moto.core.utils
import moto.ec2.models
import moto.ec2.models.amis
import moto.ec2.models.elastic_block_store
import moto.ec2.models.instance_types
import moto.ec2.models.instances
import moto.ec2.responses
import moto.ec2.utils
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


def is_spot(inst: Any) -> bool:
    return bool(inst.lifecycle == "spot")


def vcpus(instance_type: str) -> int:
    """Default vCPUs of an instance type (moto's catalog; 1 for a type it does not know)."""
    info = moto.ec2.models.instance_types.INSTANCE_TYPES.get(instance_type) or {}
    return int((info.get("VCpuInfo") or {}).get("DefaultVCpus") or 1)


@dataclass(frozen=True)
class Usage:
    """Pending and running instances of an account in a region, as quotas count them."""

    on_demand_vcpus: int
    spot_instances: int


def usage(account: str, region: str) -> Usage:
    """What the account's pending/running instances in ``region`` use (from moto)."""
    vcpu, spot = 0, 0
    for reservation in list(ec2(account, region).reservations.values()):
        for inst in list(reservation.instances):
            if instance_state(inst) not in ("pending", "running"):
                continue
            if is_spot(inst):
                spot += 1
            else:
                vcpu += vcpus(str(inst.instance_type))
    return Usage(vcpu, spot)


def tag_pattern(value: str) -> re.Pattern[str]:
    """moto's reading of an EC2 filter value (``*``, ``?`` and ``[...]`` are wildcards)."""
    return re.compile(moto.ec2.utils.simple_aws_filter_to_re(value))


def is_pattern(value: str) -> bool:
    """Whether moto would read ``value`` as more than a literal."""
    return any(c in value for c in "*?[")


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


def has_rules(account: str, region: str) -> bool:
    """Whether the account's default EventBridge bus in ``region`` has any rule."""
    bus = moto.events.models.events_backends[account][region].event_buses.get("default")
    return bool(bus is not None and bus.rules)


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


# -- DescribeInstances rendering ---------------------------------------------------


class Instance:
    """A moto instance seen through the layer's tag index: moto's serializer reads every
    field from the real instance but the tags from here (moto's own lookup scans every
    tag of the region). Named as moto's class, whose name moto's serializer uses."""

    __slots__ = ("_instance", "tag_list", "tag_set")

    def __init__(self, instance: Any, tags: Mapping[str, str]) -> None:
        self._instance = instance
        self.tag_set = [
            {"resource_id": instance.id, "resource_type": "instance", "key": k, "value": v}
            for k, v in tags.items()
        ]
        self.tag_list = self.tag_set  # moto's serializer may look under either name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._instance, name)


def _describe_instances_body(reservations: list[Any]) -> str:
    service = moto.core.utils.get_service_model("ec2")
    operation = service.operation_model("DescribeInstances")
    serializer = moto.core.serialize.get_serializer_class("ec2", "ec2")
    context = moto.core.responses.ActionContext(
        service,
        operation,
        serializer,
        moto.ec2.responses.EC2Response,  # type: ignore[arg-type]
    )
    result = moto.core.responses.ActionResult({"Reservations": reservations, "NextToken": None})
    _status, _headers, body = result.execute_result(context)
    return str(body)


@dataclass(frozen=True)
class Rendered:
    """One instance as moto renders it in DescribeInstances, split at its reservation:
    ``prefix`` + instance items + ``suffix`` is the reservation's ``<item>``."""

    prefix: str
    item: str
    suffix: str


def render_instance(reservation: Any, instance: Any, tags: Mapping[str, str]) -> Rendered:
    """moto's XML for ``instance`` (with ``tags``) inside its reservation."""
    shell = copy.copy(reservation)
    shell.instances = [Instance(instance, tags)]
    body = _describe_instances_body([shell])
    start = body.index("<reservationSet>") + len("<reservationSet>")
    res = body[start : body.rindex("</reservationSet>")]
    i = res.index("<instancesSet>") + len("<instancesSet>")
    j = res.rindex("</instancesSet>")
    return Rendered(res[:i], res[i:j], res[j:])


_ENVELOPE: list[tuple[str, str]] = []


def describe_instances_xml(reservations: Sequence[str], next_token: str | None) -> bytes:
    """A DescribeInstances response as moto writes it, from rendered reservation items."""
    if not _ENVELOPE:
        empty = _describe_instances_body([])
        cut = empty.index("<reservationSet/>")
        _ENVELOPE.append((empty[:cut], empty[cut + len("<reservationSet/>") :]))
    head, tail = _ENVELOPE[0]
    token = f"<nextToken>{escape(next_token)}</nextToken>" if next_token else ""
    body = "".join(reservations)
    middle = f"<reservationSet>{body}</reservationSet>" if body else "<reservationSet/>"
    return f"{head}{token}{middle}{tail}".encode()


# -- lookups moto makes linear in the account's fleet ------------------------------
#
# moto 5.2.5 creates every instance's root volume through ``get_instance``, which
# copies every reservation of the region to find one id, and reads the instance's
# image with ``describe_images(filters={"image-id": ...})``, which tests every AMI,
# and tags each volume through ``describe_volumes``, which tests every volume:
# launching N instances costs O(N^2) and about 19 ms per CreateFleet at 2,000
# instances (py-spy: 36 % of the stand-in cloud's CPU at 300 policies). The same
# answers, found by id.

_moto_get_instance = moto.ec2.models.instances.InstanceBackend.get_instance
_moto_describe_images = moto.ec2.models.amis.AmiBackend.describe_images
_moto_describe_volumes = moto.ec2.models.elastic_block_store.EBSBackend.describe_volumes


def _get_instance(self: Any, instance_id: str) -> Any:
    """moto's ``get_instance`` by an id index: a miss indexes reservations newest first
    (a launching instance is in the newest) until the id is found; a hit is checked
    against its reservation; an id in none of them gets moto's own answer."""
    index: dict[str, tuple[str, Any]] = self.__dict__.setdefault("_spotfleet_by_id", {})
    hit = index.get(instance_id)
    if hit is None or not _in_reservation(self, hit):
        hit = None
        for rid in reversed(list(self.reservations)):
            for inst in self.reservations[rid].instances:
                index[inst.id] = (rid, inst)
            if instance_id in index and index[instance_id][0] == rid:
                hit = index[instance_id]
                break
    if hit is not None and _in_reservation(self, hit):
        return hit[1]
    return _moto_get_instance(self, instance_id)  # not there: moto's own error


def _in_reservation(self: Any, hit: tuple[str, Any]) -> bool:
    res = self.reservations.get(hit[0])
    return res is not None and any(i is hit[1] for i in res.instances)


def _describe_volumes(
    self: Any, volume_ids: list[str] | None = None, filters: Any = None
) -> list[Any]:
    """moto's ``describe_volumes``; a lookup for one known id and no filter (what a
    launch asks for each of its volumes)."""
    if volume_ids is not None and len(volume_ids) == 1 and not filters:
        vol = self.volumes.get(volume_ids[0])
        if vol is not None:
            return [vol]
    volumes: list[Any] = _moto_describe_volumes(self, volume_ids, filters)
    return volumes


def _describe_images(
    self: Any,
    ami_ids: list[str] | None = None,
    filters: dict[str, Any] | None = None,
    exec_users: list[str] | None = None,
    owners: list[str] | None = None,
) -> list[Any]:
    """moto's ``describe_images``; a lookup for the one form a launch uses (a single
    literal ``image-id`` filter and nothing else)."""
    if not ami_ids and not exec_users and not owners and filters and len(filters) == 1:
        value = filters.get("image-id")
        if isinstance(value, str) and not is_pattern(value):
            ami = self.amis.get(value)
            return [ami] if ami is not None else []
    images: list[Any] = _moto_describe_images(self, ami_ids, filters, exec_users, owners)
    return images


def install_fast_lookups() -> None:
    """Serve moto's per-launch lookups by id (idempotent; same answers as moto's)."""
    moto.ec2.models.instances.InstanceBackend.get_instance = _get_instance  # type: ignore[method-assign]
    moto.ec2.models.amis.AmiBackend.describe_images = _describe_images  # type: ignore[method-assign]
    moto.ec2.models.elastic_block_store.EBSBackend.describe_volumes = _describe_volumes  # type: ignore[method-assign]
