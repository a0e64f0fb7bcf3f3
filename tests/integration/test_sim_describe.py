"""DescribeInstances from the layer's index gives moto's own answers, over plain boto3.

Each query is asked twice on the same state: with the index (answered by the layer)
and with ``set_describe_index(False)`` (answered by moto itself); the parsed answers
must be equal, page by page, and the call log must show who answered each.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest

from tests.fixtures.cloud import Cloud

pytestmark = pytest.mark.integration

UID = "spotfleet.dev/policy-uid"
AMI = "ami-12c6146b"

#: Queries the index answers (as boto3 keyword arguments).
QUERIES: list[dict[str, Any]] = [
    {},
    {"Filters": [{"Name": "tag-key", "Values": [UID]}]},
    {"Filters": [{"Name": f"tag:{UID}", "Values": ["uid-a"]}]},
    {"Filters": [{"Name": f"tag:{UID}", "Values": ["uid-a", "uid-b", "uid-none"]}]},
    {"Filters": [{"Name": f"tag:{UID}", "Values": ["uid-*"]}]},
    {"Filters": [{"Name": f"tag:{UID}", "Values": ["uid-?"]}]},
    {"Filters": [{"Name": "tag:literal", "Values": ["a*b"]}]},
    {"Filters": [{"Name": "tag:literal", "Values": ["a?b", "x[yz]"]}]},
    {"Filters": [{"Name": "tag-key", "Values": ["spotfleet.dev/*"]}]},
    {"Filters": [{"Name": "tag-key", "Values": ["aws:ec2:fleet-id", "Name"]}]},
    {"Filters": [{"Name": "tag-key", "Values": ["nothing-has-this"]}]},
    {"Filters": [{"Name": "tag:Name", "Values": []}]},
    {"Filters": [{"Name": "instance-state-name", "Values": ["running"]}]},
    {"Filters": [{"Name": "instance-state-name", "Values": ["pending", "running"]}]},
    {"Filters": [{"Name": "instance-state-name", "Values": ["terminated"]}]},
    {"Filters": [{"Name": "instance-state-name", "Values": ["stopped", "terminated"]}]},
    {
        "Filters": [
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
            {"Name": "tag-key", "Values": [UID]},
        ]
    },
    {
        "Filters": [
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
            {"Name": f"tag:{UID}", "Values": ["uid-b"]},
            {"Name": "tag:pool", "Values": ["*spot"]},
        ]
    },
    {"MaxResults": 2},
    {"MaxResults": 1000, "Filters": [{"Name": "tag-key", "Values": [UID]}]},
]


def _strip(resp: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def _last_describe(cloud: Cloud) -> str:
    calls = [c for c in cloud.client.calls() if c.operation == "DescribeInstances"]
    assert calls, "no DescribeInstances in the call log"
    return calls[-1].handled_by


def _pages(ec2: Any, kwargs: dict[str, Any], page_size: int) -> Iterator[dict[str, Any]]:
    paginator = ec2.get_paginator("describe_instances")
    for page in paginator.paginate(PaginationConfig={"PageSize": page_size}, **kwargs):
        yield _strip(page)


def _answer(cloud: Cloud, ec2: Any, kwargs: dict[str, Any], indexed: bool) -> Any:
    cloud.client.set_describe_index(indexed)
    try:
        result: Any = _strip(ec2.describe_instances(**kwargs))
    except botocore.exceptions.ClientError as exc:
        result = ("error", exc.response["Error"]["Code"], exc.response["Error"]["Message"])
    return result, _last_describe(cloud)


def assert_same_as_moto(cloud: Cloud, ec2: Any, queries: list[dict[str, Any]]) -> None:
    """Every query answered by the index equals moto's own answer on the same state."""
    for kwargs in queries:
        ours, by_us = _answer(cloud, ec2, kwargs, True)
        theirs, by_moto = _answer(cloud, ec2, kwargs, False)
        assert (by_us, by_moto) == ("layer", "moto"), kwargs
        assert ours == theirs, kwargs
    for kwargs, size in (({}, 2), ({"Filters": [{"Name": "tag-key", "Values": [UID]}]}, 1)):
        cloud.client.set_describe_index(True)
        ours_pages = list(_pages(ec2, kwargs, size))
        assert _last_describe(cloud) == "layer"
        cloud.client.set_describe_index(False)
        theirs_pages = list(_pages(ec2, kwargs, size))
        assert _last_describe(cloud) == "moto"
        assert ours_pages == theirs_pages, (kwargs, size)
    cloud.client.set_describe_index(True)


def _ids(resp: dict[str, Any]) -> list[str]:
    return [i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"]]


def _run(ec2: Any, count: int, tags: dict[str, str], spot: bool = False, **kw: Any) -> list[str]:
    extra: dict[str, Any] = dict(kw)
    if tags:
        extra["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    if spot:
        extra["InstanceMarketOptions"] = {"MarketType": "spot"}
    res = ec2.run_instances(ImageId=AMI, MinCount=count, MaxCount=count, **extra)
    return [i["InstanceId"] for i in res["Instances"]]


def _wait_state(ec2: Any, iid: str, state: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
        if res[0]["Instances"][0]["State"]["Name"] == state:
            return
        assert time.monotonic() < deadline, f"{iid} never reached {state}"
        time.sleep(0.1)


def test_index_answers_equal_moto_across_every_kind_of_change(cloud_reset: Cloud) -> None:
    cloud = cloud_reset
    ec2 = cloud.boto3_client("ec2")
    short = QUERIES[:4] + QUERIES[12:14] + QUERIES[16:17]
    assert_same_as_moto(cloud, ec2, QUERIES)  # nothing launched yet

    a = _run(ec2, 3, {UID: "uid-a", "pool": "m5.large/us-east-1a/spot", "Name": "a"}, spot=True)
    b = _run(ec2, 2, {UID: "uid-b", "pool": "c5.large/us-east-1b/on-demand", "literal": "a*b"})
    plain = _run(ec2, 1, {})
    odd = _run(ec2, 1, {"literal": "a?b", "Name": "<odd & name>"}, InstanceType="t3.micro")
    assert_same_as_moto(cloud, ec2, QUERIES)

    tid = ec2.create_launch_template(
        LaunchTemplateName="describe-parity",
        LaunchTemplateData={"ImageId": AMI, "InstanceType": "m5.large"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    fleet = ec2.create_fleet(
        Type="instant",
        LaunchTemplateConfigs=[
            {
                "LaunchTemplateSpecification": {"LaunchTemplateId": tid, "Version": "$Latest"},
                "Overrides": [
                    {"InstanceType": t, "AvailabilityZone": z}
                    for t in ("m5.large", "c5.large")
                    for z in ("us-east-1a", "us-east-1c")
                ],
            }
        ],
        TargetCapacitySpecification={"TotalTargetCapacity": 5, "DefaultTargetCapacityType": "spot"},
        SpotOptions={"AllocationStrategy": "diversified"},
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": UID, "Value": "uid-c"}, {"Key": "pool", "Value": "mixed-spot"}],
            }
        ],
    )
    fleet_ids = [i for item in fleet["Instances"] for i in item["InstanceIds"]]
    assert len(fleet_ids) == 5 and len(fleet["Instances"]) == 4
    assert_same_as_moto(cloud, ec2, QUERIES)

    ec2.create_tags(Resources=[plain[0], b[1]], Tags=[{"Key": UID, "Value": "uid-a"}])
    ec2.create_tags(Resources=[a[0]], Tags=[{"Key": "Name", "Value": "renamed"}])
    ec2.delete_tags(Resources=[a[1]], Tags=[{"Key": UID}])
    ec2.delete_tags(Resources=[b[0]], Tags=[{"Key": "literal", "Value": "not-its-value"}])
    ec2.delete_tags(Resources=[odd[0]], Tags=[{"Key": "literal", "Value": "a?b"}])
    assert_same_as_moto(cloud, ec2, short + QUERIES[6:10])

    ec2.terminate_instances(InstanceIds=[a[2], fleet_ids[0]])
    ec2.stop_instances(InstanceIds=[b[1]])
    cloud.client.interrupt(fleet_ids[1], kind="interruption", notice_seconds=0)
    _wait_state(ec2, fleet_ids[1], "terminated")
    ec2.start_instances(InstanceIds=[b[1]])
    ec2.stop_instances(InstanceIds=[plain[0]])
    assert_same_as_moto(cloud, ec2, QUERIES)

    by_id: list[dict[str, Any]] = [
        {"InstanceIds": [b[0]]},
        {"InstanceIds": [fleet_ids[3], a[0], plain[0]]},
        {"InstanceIds": a + b, "Filters": [{"Name": "tag:Name", "Values": ["a", "renamed"]}]},
        {"Filters": [{"Name": "instance-id", "Values": [a[0], odd[0], "i-0000000000000000f"]}]},
        {"InstanceIds": ["i-0123456789abcdef0"]},  # unknown: moto's error, through moto
    ]
    assert_same_as_moto(cloud, ec2, by_id[:4])
    cloud.client.set_describe_index(True)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.describe_instances(**by_id[4])
    assert err.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
    assert _last_describe(cloud) == "moto"

    # other regions have their own index; the reset empties them all
    eu = cloud.boto3_client("ec2", region="eu-west-1")
    in_eu = _run(eu, 2, {UID: "uid-a"}, Placement={"AvailabilityZone": "eu-west-1b"})
    assert_same_as_moto(cloud, eu, short)
    uid_a = [{"Name": f"tag:{UID}", "Values": ["uid-a"]}]
    assert sorted(_ids(eu.describe_instances(Filters=uid_a))) == sorted(in_eu)
    assert sorted(_ids(ec2.describe_instances(Filters=uid_a))) == sorted(
        [a[0], a[2], b[1], plain[0]]
    )
    cloud.client.reset()
    assert_same_as_moto(cloud, ec2, short)
    assert ec2.describe_instances()["Reservations"] == []


def test_filters_the_index_does_not_serve_go_to_moto(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    a = _run(ec2, 2, {UID: "uid-a"}, InstanceType="c5.large")
    _run(ec2, 1, {UID: "uid-b"}, InstanceType="m5.large")
    resp = ec2.describe_instances(Filters=[{"Name": "instance-type", "Values": ["c5.large"]}])
    assert sorted(_ids(resp)) == sorted(a)
    assert _last_describe(cloud_reset) == "moto"
    values = ec2.describe_instances(Filters=[{"Name": "tag-value", "Values": ["uid-b"]}])
    assert len(_ids(values)) == 1 and _last_describe(cloud_reset) == "moto"
    served = ec2.describe_instances(Filters=[{"Name": f"tag:{UID}", "Values": ["uid-a"]}])
    assert sorted(_ids(served)) == sorted(a) and _last_describe(cloud_reset) == "layer"
