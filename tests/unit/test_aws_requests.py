"""The EC2 requests the operator sends, checked table by table against their builders
(not only through a stand-in cloud), and the one definition of "mutating"."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from spotfleet_engine import model
from spotfleet_operator.aws import port, requests
from spotfleet_sim import calllog

SPOT = model.Pool("c5.large", "us-east-1a", model.Market.SPOT)
OD = model.Pool("m5.xlarge", "us-east-1b", model.Market.ON_DEMAND)


@pytest.mark.parametrize(
    ("uid", "want"),
    [
        (
            "uid-1",
            [
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
                {"Name": "tag:spotfleet.dev/policy-uid", "Values": ["uid-1"]},
            ],
        ),
        (
            None,
            [
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
                {"Name": "tag-key", "Values": ["spotfleet.dev/policy-uid"]},
            ],
        ),
    ],
)
def test_owned_instances_filters(uid: str | None, want: list[dict[str, Any]]) -> None:
    assert requests.owned_instances_filters(uid) == want


@pytest.mark.parametrize(
    ("pool", "subnet", "version", "spot_options", "od", "spot"),
    [
        (SPOT, None, None, {"AllocationStrategy": "price-capacity-optimized"}, 0, 3),
        (OD, "subnet-0123456789abcdef0", "7", None, 3, 0),
    ],
)
def test_create_fleet_for_exactly_one_pool(
    pool: model.Pool,
    subnet: str | None,
    version: str | None,
    spot_options: dict[str, str] | None,
    od: int,
    spot: int,
) -> None:
    tags = {"a": "1", port.TAG_POOL: pool.key()}
    req: dict[str, Any] = dict(
        requests.create_fleet(pool, 3, "lt-name", "sf-tok", tags, subnet, version)
    )
    override = {"InstanceType": pool.instance_type, "AvailabilityZone": pool.zone}
    if subnet:
        override["SubnetId"] = subnet
    assert req["ClientToken"] == "sf-tok" and req["Type"] == "instant"
    assert req["LaunchTemplateConfigs"] == [
        {
            "LaunchTemplateSpecification": {
                "LaunchTemplateName": "lt-name",
                "Version": version or "$Default",
            },
            "Overrides": [override],
        }
    ]
    assert req["TargetCapacitySpecification"] == {
        "TotalTargetCapacity": 3,
        "OnDemandTargetCapacity": od,
        "SpotTargetCapacity": spot,
        "DefaultTargetCapacityType": "spot" if spot else "on-demand",
    }
    tag_list = [{"Key": "a", "Value": "1"}, {"Key": port.TAG_POOL, "Value": pool.key()}]
    assert req["TagSpecifications"] == [
        {"ResourceType": "instance", "Tags": tag_list},
        {"ResourceType": "fleet", "Tags": tag_list},
    ]
    assert req.get("SpotOptions") == spot_options


def test_launch_template_data_requires_imdsv2_and_encodes_user_data() -> None:
    spec = port.LaunchSpec(
        image_id="ami-0123456789abcdef0",
        security_group_ids=("sg-0123456789abcdef0",),
        user_data="#!/bin/sh\necho hi\n",
        iam_instance_profile_name="prof",
    )
    assert requests.launch_template_data(spec) == {
        "MetadataOptions": {"HttpTokens": "required"},
        "ImageId": "ami-0123456789abcdef0",
        "SecurityGroupIds": ["sg-0123456789abcdef0"],
        "UserData": "IyEvYmluL3NoCmVjaG8gaGkK",
        "IamInstanceProfile": {"Name": "prof"},
    }
    assert requests.launch_template_data(port.LaunchSpec()) == {
        "MetadataOptions": {"HttpTokens": "required"}
    }


def test_create_launch_template_is_idempotent_per_spec() -> None:
    spec = port.LaunchSpec(image_id="ami-0123456789abcdef0")
    a = requests.create_launch_template(spec, {port.TAG_MANAGED: "spotfleet"})
    b = requests.create_launch_template(spec, {port.TAG_MANAGED: "spotfleet"})
    c = requests.create_launch_template(port.LaunchSpec(image_id="ami-0fedcba9876543210"), {})
    assert a == b and a["ClientToken"] != c["ClientToken"]
    assert len(a["ClientToken"]) <= 64
    # one template per launch spec, shared by every policy that launches with it
    assert a["LaunchTemplateName"] == "spotfleet-spec-" + spec.content_hash()
    assert c["LaunchTemplateName"] != a["LaunchTemplateName"]
    assert {"Key": port.TAG_SPEC_HASH, "Value": spec.content_hash()} in a["TagSpecifications"][0][
        "Tags"
    ]


@pytest.mark.parametrize(
    ("ids", "tags", "want"),
    [
        ((), None, {}),
        (("subnet-1",), None, {"SubnetIds": ["subnet-1"]}),
        (
            (),
            {"tier": "app", "k": "*"},
            {
                "Filters": [
                    {"Name": "tag:tier", "Values": ["app"]},
                    {"Name": "tag-key", "Values": ["k"]},
                ]
            },
        ),
    ],
)
def test_subnets(ids: tuple[str, ...], tags: dict[str, str] | None, want: dict[str, Any]) -> None:
    assert requests.subnets(ids, tags) == want


def test_spot_price_history_arguments() -> None:
    t0 = dt.datetime(2021, 5, 1, tzinfo=dt.UTC)
    assert requests.spot_price_history(t0) == {
        "StartTime": t0,
        "ProductDescriptions": ["Linux/UNIX"],
    }
    assert requests.spot_price_history(t0, t0, ["c5.large"])["InstanceTypes"] == ["c5.large"]


def test_batches_and_untag_remove_exactly_our_tags() -> None:
    assert requests.batches([str(i) for i in range(1001)], 500)[-1] == ["1000"]
    now = dt.datetime(2021, 5, 1, tzinfo=dt.UTC)
    owned = [
        port.OwnedInstance(f"i-{n}", SPOT if n % 2 else OD, "running", now, "uid-1", "ns/web", "h")
        for n in range(4)
    ]
    calls = requests.untag(owned)
    assert sorted(sorted(ids) for ids, _ in calls) == [["i-0", "i-2"], ["i-1", "i-3"]]
    for _, tags in calls:
        keys = {t["Key"]: t["Value"] for t in tags}
        assert set(keys) == {*port.OWNERSHIP_KEYS, port.TAG_SPEC_HASH}
        assert keys[port.TAG_SPEC_HASH] == "h"
        assert keys[port.TAG_POOL] in (SPOT.key(), OD.key())


def test_one_definition_of_mutating_matches_the_stand_in_cloud() -> None:
    """The port's mutating operations are the ones the stand-in cloud logs as mutating,
    and its reads are reads there too."""
    for method, (ops, mutating) in port.OPERATIONS.items():
        for op in ops:
            assert calllog.is_mutating(op) is mutating, (method, op)
    assert {m for m, (_, mutating) in port.OPERATIONS.items() if mutating} == port.MUTATING_METHODS


def test_the_template_listing_finds_shared_and_earlier_per_policy_templates() -> None:
    """Both kinds carry the launch-spec hash tag (shared ones have no policy uid tag)."""
    assert requests.launch_templates_filters() == [
        {"Name": "tag-key", "Values": [port.TAG_SPEC_HASH]}
    ]
    spec = port.LaunchSpec(image_id="ami-0123456789abcdef0")
    tags = requests.create_launch_template(spec, {})["TagSpecifications"][0]["Tags"]
    assert port.TAG_SPEC_HASH in {t["Key"] for t in tags}
