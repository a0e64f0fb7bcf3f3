"""Pure builders of every EC2 request the operator sends (no I/O): the shape of each
request is tested here, table by table, not only through a stand-in cloud.

Types come from ``mypy_boto3_ec2`` (a development dependency, used for checking only).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from spotfleet_engine import model
from spotfleet_operator.aws import port

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import (
        CreateFleetRequestTypeDef,
        CreateLaunchTemplateRequestTypeDef,
        FilterTypeDef,
        RequestLaunchTemplateDataTypeDef,
        TagTypeDef,
    )

#: Instance states that are part of a fleet (terminating or stopped ones are not).
LIVE_STATES = ("pending", "running")
#: Largest batch of ids TerminateInstances / DeleteTags take in one call.
BATCH = 500


def tags(mapping: Mapping[str, str]) -> list[TagTypeDef]:
    """EC2's tag list form of a mapping, in the mapping's order."""
    return [{"Key": k, "Value": v} for k, v in mapping.items()]


def owned_instances_filters(policy_uid: str | None) -> list[FilterTypeDef]:
    """DescribeInstances filters: live instances of ``policy_uid``, or of every policy."""
    owner: FilterTypeDef = (
        {"Name": "tag-key", "Values": [port.TAG_POLICY_UID]}
        if policy_uid is None
        else {"Name": "tag:" + port.TAG_POLICY_UID, "Values": [policy_uid]}
    )
    return [{"Name": "instance-state-name", "Values": list(LIVE_STATES)}, owner]


def launch_templates_filters() -> list[FilterTypeDef]:
    """DescribeLaunchTemplates filters: every template the operator made (shared ones and
    the per-policy ones of earlier releases all carry the launch-spec hash)."""
    return [{"Name": "tag-key", "Values": [port.TAG_SPEC_HASH]}]


def spot_price_history(
    start: Any, end: Any | None = None, instance_types: Sequence[str] = ()
) -> dict[str, Any]:
    """DescribeSpotPriceHistory arguments (Linux/UNIX, every zone)."""
    out: dict[str, Any] = {"StartTime": start, "ProductDescriptions": ["Linux/UNIX"]}
    if end is not None:
        out["EndTime"] = end
    if instance_types:
        out["InstanceTypes"] = list(instance_types)
    return out


def subnets(subnet_ids: Sequence[str], selector_tags: Mapping[str, str] | None) -> dict[str, Any]:
    """DescribeSubnets arguments: by ids and/or tags (value ``*``: the key with any value)."""
    filters: list[FilterTypeDef] = [
        {"Name": "tag-key", "Values": [k]} if v == "*" else {"Name": f"tag:{k}", "Values": [v]}
        for k, v in (selector_tags or {}).items()
    ]
    out: dict[str, Any] = {}
    if subnet_ids:
        out["SubnetIds"] = list(subnet_ids)
    if filters:
        out["Filters"] = filters
    return out


def launch_template_data(spec: port.LaunchSpec) -> RequestLaunchTemplateDataTypeDef:
    """The template data of a policy's own launch template (IMDSv2 required)."""
    data: RequestLaunchTemplateDataTypeDef = {"MetadataOptions": {"HttpTokens": "required"}}
    if spec.image_id:
        data["ImageId"] = spec.image_id
    if spec.security_group_ids:
        data["SecurityGroupIds"] = list(spec.security_group_ids)
    if spec.user_data:
        data["UserData"] = base64.b64encode(spec.user_data.encode()).decode()
    if spec.iam_instance_profile_name:
        data["IamInstanceProfile"] = {"Name": spec.iam_instance_profile_name}
    return data


def create_launch_template(
    spec: port.LaunchSpec, owner_tags: Mapping[str, str]
) -> CreateLaunchTemplateRequestTypeDef:
    """CreateLaunchTemplate for the shared template of ``spec``; the ClientToken (the spec
    hash) makes a retry, or a concurrent create for the same spec, return that template."""
    digest = spec.content_hash()
    return {
        "LaunchTemplateName": port.shared_template_name(digest),
        "LaunchTemplateData": launch_template_data(spec),
        "ClientToken": "lt-spec-" + digest,
        "TagSpecifications": [
            {
                "ResourceType": "launch-template",
                "Tags": tags({**owner_tags, port.TAG_SPEC_HASH: digest}),
            }
        ],
    }


def create_fleet(
    pool: model.Pool,
    count: int,
    template: str,
    token: str,
    instance_tags: Mapping[str, str],
    subnet_id: str | None = None,
    template_version: str | None = None,
) -> CreateFleetRequestTypeDef:
    """CreateFleet ``type=instant`` for ``count`` instances in exactly ``pool``."""
    override: dict[str, Any] = {"InstanceType": pool.instance_type, "AvailabilityZone": pool.zone}
    if subnet_id:
        override["SubnetId"] = subnet_id
    spot = pool.market is model.Market.SPOT
    tag_list = tags(instance_tags)
    req: CreateFleetRequestTypeDef = {
        "ClientToken": token,
        "Type": "instant",
        "LaunchTemplateConfigs": [
            {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateName": template,
                    "Version": template_version or "$Default",
                },
                "Overrides": [override],  # type: ignore[list-item]
            }
        ],
        "TargetCapacitySpecification": {
            "TotalTargetCapacity": count,
            "OnDemandTargetCapacity": 0 if spot else count,
            "SpotTargetCapacity": count if spot else 0,
            "DefaultTargetCapacityType": "spot" if spot else "on-demand",
        },
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tag_list},
            {"ResourceType": "fleet", "Tags": tag_list},
        ],
    }
    if spot:
        req["SpotOptions"] = {"AllocationStrategy": "price-capacity-optimized"}
    return req


def batches(ids: Sequence[str], size: int = BATCH) -> list[list[str]]:
    """``ids`` in order, cut into lists of at most ``size``."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def untag(instances: Sequence[port.OwnedInstance]) -> list[tuple[list[str], list[TagTypeDef]]]:
    """DeleteTags calls (resources, tags) removing exactly the operator's tags (ownership
    and launch-spec hash): values are given with the keys, grouped per (uid, policy,
    pool, spec hash) and batched."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for o in instances:
        key = (o.policy_uid, o.policy_ref, o.pool.key(), o.spec_hash)
        groups.setdefault(key, []).append(o.instance_id)
    out: list[tuple[list[str], list[TagTypeDef]]] = []
    for (uid, ref, pool, digest), ids in sorted(groups.items()):
        mine = {
            port.TAG_POLICY_UID: uid,
            port.TAG_POLICY: ref,
            port.TAG_POOL: pool,
            port.TAG_MANAGED: "spotfleet",
        }
        if digest:
            mine[port.TAG_SPEC_HASH] = digest
        out.extend((batch, tags(mine)) for batch in batches(ids))
    return out
