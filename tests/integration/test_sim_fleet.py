"""Capacity, allocation strategies and idempotency of the stand-in cloud, over plain boto3."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from spotfleet_sim import client as sim_client
from tests.fixtures.cloud import Cloud

pytestmark = pytest.mark.integration

ZONES = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"]


def _template(ec2: Any, name: str = "sim-fleet") -> str:
    return str(
        ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"},
        )["LaunchTemplate"]["LaunchTemplateId"]
    )


def _fleet(ec2: Any, template_id: str, overrides: list[dict[str, Any]], **extra: Any) -> Any:
    args: dict[str, Any] = {
        "Type": "instant",
        "LaunchTemplateConfigs": [
            {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateId": template_id,
                    "Version": "$Latest",
                },
                "Overrides": overrides,
            }
        ],
        "TargetCapacitySpecification": {
            "TotalTargetCapacity": 4,
            "DefaultTargetCapacityType": "spot",
        },
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": [{"Key": "spotfleet.io/policy", "Value": "p1"}]}
        ],
    }
    args.update(extra)
    return ec2.create_fleet(**args)


def _spot_prices(ec2: Any, instance_type: str) -> dict[str, float]:
    now = ec2.describe_spot_price_history(InstanceTypes=[instance_type], MaxResults=5)
    assert now["SpotPriceHistory"]
    latest: dict[str, float] = {}
    for row in ec2.describe_spot_price_history(InstanceTypes=[instance_type])["SpotPriceHistory"]:
        latest.setdefault(row["AvailabilityZone"], float(row["SpotPrice"]))  # newest first
    return latest


def _instances(ec2: Any, ids: list[str]) -> list[dict[str, Any]]:
    res = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return [i for r in res for i in r["Instances"]]


def test_marked_pool_yields_errors_and_the_fleet_lands_on_the_next_cheapest(
    cloud_reset: Cloud,
) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    cloud_reset.client.set_clock(speed=0)
    prices = _spot_prices(ec2, "m5.large")
    ranked = sorted((z for z in ZONES if z in prices), key=lambda z: prices[z])
    cheapest, runner_up = ranked[0], ranked[1]
    tid = _template(ec2)
    overrides = [{"InstanceType": "m5.large", "AvailabilityZone": z} for z in ZONES]

    first = _fleet(ec2, tid, overrides, SpotOptions={"AllocationStrategy": "lowest-price"})
    assert first["Errors"] == []
    assert [
        i["LaunchTemplateAndOverrides"]["Overrides"]["AvailabilityZone"] for i in first["Instances"]
    ] == [cheapest]

    cloud_reset.client.mark_unavailable(sim_client.Pool("m5.large", cheapest, "spot"))
    fleet = _fleet(ec2, tid, overrides, SpotOptions={"AllocationStrategy": "lowest-price"})
    assert len(fleet["Errors"]) == 1
    err = fleet["Errors"][0]
    assert err["ErrorCode"] == "InsufficientInstanceCapacity"
    assert err["Lifecycle"] == "spot"
    assert err["LaunchTemplateAndOverrides"]["Overrides"]["AvailabilityZone"] == cheapest
    assert cheapest in err["ErrorMessage"]
    assert len(fleet["Instances"]) == 1
    landed = fleet["Instances"][0]
    assert landed["Lifecycle"] == "spot" and landed["InstanceType"] == "m5.large"
    assert landed["LaunchTemplateAndOverrides"]["Overrides"]["AvailabilityZone"] == runner_up
    assert (
        landed["LaunchTemplateAndOverrides"]["LaunchTemplateSpecification"]["LaunchTemplateId"]
        == tid
    )
    described = _instances(ec2, landed["InstanceIds"])
    assert len(described) == 4
    for inst in described:
        assert inst["InstanceLifecycle"] == "spot"
        assert inst["Placement"]["AvailabilityZone"] == runner_up
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["spotfleet.io/policy"] == "p1"
        assert tags["aws:ec2:fleet-id"] == fleet["FleetId"]

    # the on-demand market of the same pool is untouched by a spot-only mark
    od = _fleet(
        ec2,
        tid,
        [{"InstanceType": "m5.large", "AvailabilityZone": cheapest}],
        TargetCapacitySpecification={
            "TotalTargetCapacity": 1,
            "DefaultTargetCapacityType": "on-demand",
        },
    )
    assert od["Errors"] == [] and od["Instances"][0]["Lifecycle"] == "on-demand"
    assert "InstanceLifecycle" not in _instances(ec2, od["Instances"][0]["InstanceIds"])[0]


def test_allocation_strategies_differ_as_aws_documents(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    cloud_reset.client.set_clock(speed=0)
    tid = _template(ec2)
    overrides = [{"InstanceType": "m5.large", "AvailabilityZone": z} for z in ZONES]

    diversified = _fleet(ec2, tid, overrides, SpotOptions={"AllocationStrategy": "diversified"})
    assert (
        sorted(
            i["LaunchTemplateAndOverrides"]["Overrides"]["AvailabilityZone"]
            for i in diversified["Instances"]
        )
        == ZONES
    )
    assert all(len(i["InstanceIds"]) == 1 for i in diversified["Instances"])

    two_pools = _fleet(
        ec2,
        tid,
        overrides,
        SpotOptions={"AllocationStrategy": "lowest-price", "InstancePoolsToUseCount": 2},
    )
    prices = _spot_prices(ec2, "m5.large")
    two_cheapest = sorted(sorted(ZONES, key=lambda z: prices[z])[:2])
    assert (
        sorted(
            i["LaunchTemplateAndOverrides"]["Overrides"]["AvailabilityZone"]
            for i in two_pools["Instances"]
        )
        == two_cheapest
    )

    # weighted capacity: 4 units of m5.xlarge (weight 2) is 2 instances
    weighted = _fleet(
        ec2,
        tid,
        [{"InstanceType": "m5.xlarge", "AvailabilityZone": "us-east-1b", "WeightedCapacity": 2.0}],
        SpotOptions={"AllocationStrategy": "capacity-optimized"},
    )
    assert len(weighted["Instances"][0]["InstanceIds"]) == 2

    # split on-demand base + spot
    mixed = _fleet(
        ec2,
        tid,
        overrides,
        TargetCapacitySpecification={
            "TotalTargetCapacity": 3,
            "OnDemandTargetCapacity": 1,
            "DefaultTargetCapacityType": "spot",
        },
    )
    by_market: dict[str, int] = {}
    for inst in mixed["Instances"]:
        by_market[inst["Lifecycle"]] = by_market.get(inst["Lifecycle"], 0) + len(
            inst["InstanceIds"]
        )
    assert by_market == {"on-demand": 1, "spot": 2}


def test_every_pool_marked_gives_only_errors(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    tid = _template(ec2)
    cloud_reset.client.mark_unavailable(
        *(sim_client.Pool("m5.large", z, "spot") for z in ZONES[:2])
    )
    fleet = _fleet(
        ec2,
        tid,
        [{"InstanceType": "m5.large", "AvailabilityZone": z} for z in ZONES[:2]],
        SpotOptions={"AllocationStrategy": "price-capacity-optimized"},
    )
    assert fleet["Instances"] == []
    assert (
        sorted(
            e["LaunchTemplateAndOverrides"]["Overrides"]["AvailabilityZone"]
            for e in fleet["Errors"]
        )
        == ZONES[:2]
    )
    assert {e["ErrorCode"] for e in fleet["Errors"]} == {"InsufficientInstanceCapacity"}
    cloud_reset.client.mark_available(sim_client.Pool("m5.large", ZONES[0], "spot"))
    assert cloud_reset.client.unavailable() == [sim_client.Pool("m5.large", ZONES[1], "spot")]


def test_run_instances_into_a_marked_pool_fails_with_insufficient_capacity(
    cloud_reset: Cloud,
) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    cloud_reset.client.mark_unavailable(sim_client.Pool("c5.large", "us-east-1a"))
    spot = {"MarketType": "spot"}
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="c5.large",
            Placement={"AvailabilityZone": "us-east-1a"},
            InstanceMarketOptions=spot,
        )
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500  # as AWS: retried
    assert "us-east-1b" in err.value.response["Error"]["Message"]  # a zone that has capacity
    ok = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType="c5.large",
        Placement={"AvailabilityZone": "us-east-1b"},
        InstanceMarketOptions=spot,
    )
    assert ok["Instances"][0]["InstanceLifecycle"] == "spot"
    assert ok["Instances"][0]["Placement"]["AvailabilityZone"] == "us-east-1b"
    # a subnet in the marked zone is the same pool
    subnet = next(
        s["SubnetId"]
        for s in ec2.describe_subnets()["Subnets"]
        if s["AvailabilityZone"] == "us-east-1a"
    )
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="c5.large", SubnetId=subnet
        )
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"


def _count(ec2: Any) -> int:
    return sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"])


def test_repeated_client_token_launches_nothing_new(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    run = {"ImageId": "ami-12c6146b", "MinCount": 2, "MaxCount": 2, "InstanceType": "t3.micro"}
    first = ec2.run_instances(ClientToken="run-token-1", **run)
    again = ec2.run_instances(ClientToken="run-token-1", **run)
    assert [i["InstanceId"] for i in again["Instances"]] == [
        i["InstanceId"] for i in first["Instances"]
    ]
    assert again["ReservationId"] == first["ReservationId"]
    assert _count(ec2) == 2

    tid = _template(ec2)
    overrides = [{"InstanceType": "m5.large", "AvailabilityZone": "us-east-1b"}]
    f1 = _fleet(ec2, tid, overrides, ClientToken="fleet-token-1")
    f2 = _fleet(ec2, tid, overrides, ClientToken="fleet-token-1")
    assert f2["FleetId"] == f1["FleetId"]
    assert f2["Instances"] == f1["Instances"]
    assert _count(ec2) == 2 + 4

    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.run_instances(ClientToken="run-token-1", **{**run, "InstanceType": "t3.small"})
    assert err.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    assert _count(ec2) == 6
    replays = [
        c for c in cloud_reset.client.calls() if c.detail == "idempotent replay of ClientToken"
    ]
    assert [c.operation for c in replays] == ["RunInstances", "CreateFleet"]


def test_spot_from_the_launch_template_is_a_spot_launch(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    ec2.create_launch_template(
        LaunchTemplateName="spot-template",
        LaunchTemplateData={
            "ImageId": "ami-12c6146b",
            "InstanceType": "r5.large",
            "InstanceMarketOptions": {"MarketType": "spot"},
            "Placement": {"AvailabilityZone": "us-east-1d"},
        },
    )
    template = {"LaunchTemplateName": "spot-template"}
    inst = ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate=template)["Instances"][0]
    assert inst["InstanceLifecycle"] == "spot"
    assert inst["InstanceType"] == "r5.large"
    assert inst["Placement"]["AvailabilityZone"] == "us-east-1d"
    cloud_reset.client.mark_unavailable(sim_client.Pool("r5.large", "us-east-1d", "spot"))
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate=template)
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"


def _zone(item: dict[str, Any]) -> str:
    return str(item["LaunchTemplateAndOverrides"]["Overrides"]["AvailabilityZone"])


def test_the_next_spot_launch_runs_its_pool_dry_once(cloud_reset: Cloud) -> None:
    """``run_dry_on_next_spot_launch(1)``: the pool the next spot request would land in
    answers InsufficientInstanceCapacity and stays marked; the request after is normal."""
    ec2 = cloud_reset.boto3_client("ec2")
    cloud_reset.client.set_clock(speed=0)
    prices = _spot_prices(ec2, "m5.large")
    ranked = sorted((z for z in ZONES if z in prices), key=lambda z: prices[z])
    cheapest, runner_up = ranked[0], ranked[1]
    tid = _template(ec2)
    overrides = [{"InstanceType": "m5.large", "AvailabilityZone": z} for z in ZONES]
    lowest = {"AllocationStrategy": "lowest-price"}

    assert cloud_reset.client.run_dry_on_next_spot_launch(1) == []
    fleet = _fleet(ec2, tid, overrides, SpotOptions=lowest)
    assert [(e["ErrorCode"], _zone(e)) for e in fleet["Errors"]] == [
        ("InsufficientInstanceCapacity", cheapest)
    ]
    assert [_zone(i) for i in fleet["Instances"]] == [runner_up]
    assert cloud_reset.client.unavailable() == [sim_client.Pool("m5.large", cheapest, "spot")]

    again = _fleet(ec2, tid, overrides, SpotOptions=lowest)  # armed once: no new dry pool
    assert len(again["Errors"]) == 1
    assert [_zone(i) for i in again["Instances"]] == [runner_up]
    assert cloud_reset.client.unavailable() == [sim_client.Pool("m5.large", cheapest, "spot")]


def test_every_override_that_cannot_be_filled_is_reported_with_its_own_code(
    cloud_reset: Cloud,
) -> None:
    """One instant fleet over four pools: a dry pool, a price cap below the spot price, a
    pool with two instances left (filled part-way) and an open pool that takes the rest."""
    ec2 = cloud_reset.boto3_client("ec2")
    cloud_reset.client.set_clock(speed=0)
    tid = _template(ec2)
    a, b, c, d = ZONES
    cloud_reset.client.mark_unavailable(sim_client.Pool("m5.large", a, "spot"))
    assert cloud_reset.client.limit_capacity(sim_client.Pool("m5.large", c, "spot"), 2) == {
        sim_client.Pool("m5.large", c, "spot"): 2
    }
    overrides: list[dict[str, Any]] = [
        {"InstanceType": "m5.large", "AvailabilityZone": a},
        {"InstanceType": "m5.large", "AvailabilityZone": b, "MaxPrice": "0.0001"},
        {"InstanceType": "m5.large", "AvailabilityZone": c},
        {"InstanceType": "m5.large", "AvailabilityZone": d},
    ]
    fleet = _fleet(
        ec2,
        tid,
        overrides,
        SpotOptions={"AllocationStrategy": "diversified"},
        TargetCapacitySpecification={"TotalTargetCapacity": 8, "DefaultTargetCapacityType": "spot"},
    )
    assert sorted((_zone(e), e["ErrorCode"], e["Lifecycle"]) for e in fleet["Errors"]) == [
        (a, "InsufficientInstanceCapacity", "spot"),
        (b, "SpotMaxPriceTooLow", "spot"),
        (c, "InsufficientInstanceCapacity", "spot"),
    ]
    assert {_zone(e): e["ErrorMessage"] for e in fleet["Errors"]}[b].startswith(
        "Your Spot request price of 0.0001 is lower than"
    )
    launched = {_zone(i): len(i["InstanceIds"]) for i in fleet["Instances"]}
    assert launched == {c: 2, d: 6}  # the partial fill and the errors come together
    ids = [iid for i in fleet["Instances"] for iid in i["InstanceIds"]]
    assert len(_instances(ec2, ids)) == 8
    assert cloud_reset.client.limited() == {sim_client.Pool("m5.large", c, "spot"): 0}
    cloud_reset.client.mark_available(sim_client.Pool("m5.large", c, "spot"))
    assert cloud_reset.client.limited() == {}


def test_a_limited_cheapest_pool_is_filled_part_way_and_the_next_takes_over(
    cloud_reset: Cloud,
) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    cloud_reset.client.set_clock(speed=0)
    prices = _spot_prices(ec2, "m5.large")
    ranked = sorted((z for z in ZONES if z in prices), key=lambda z: prices[z])
    cheapest, runner_up = ranked[0], ranked[1]
    tid = _template(ec2)
    cloud_reset.client.limit_capacity(sim_client.Pool("m5.large", cheapest, "spot"), 1)
    overrides = [{"InstanceType": "m5.large", "AvailabilityZone": z} for z in ZONES]
    fleet = _fleet(ec2, tid, overrides, SpotOptions={"AllocationStrategy": "lowest-price"})
    assert [(e["ErrorCode"], _zone(e)) for e in fleet["Errors"]] == [
        ("InsufficientInstanceCapacity", cheapest)
    ]
    assert [(_zone(i), len(i["InstanceIds"])) for i in fleet["Instances"]] == [
        (cheapest, 1),
        (runner_up, 3),
    ]
    # nothing left there now: the next request skips it from the start
    again = _fleet(ec2, tid, overrides, SpotOptions={"AllocationStrategy": "lowest-price"})
    assert [(_zone(i), len(i["InstanceIds"])) for i in again["Instances"]] == [(runner_up, 4)]
    assert [_zone(e) for e in again["Errors"]] == [cheapest]


def test_on_demand_and_spot_errors_in_one_request_and_nothing_below_min_target(
    cloud_reset: Cloud,
) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    tid = _template(ec2)
    cloud_reset.client.mark_unavailable(
        sim_client.Pool("c5.large", "us-east-1a"),  # both markets
        sim_client.Pool("m5.large", "us-east-1a", "spot"),
    )
    cloud_reset.client.limit_capacity(sim_client.Pool("m5.large", "us-east-1b", "spot"), 1)
    overrides = [
        {"InstanceType": "c5.large", "AvailabilityZone": "us-east-1a", "Priority": 1.0},
        {"InstanceType": "m5.large", "AvailabilityZone": "us-east-1a", "Priority": 2.0},
        {"InstanceType": "m5.large", "AvailabilityZone": "us-east-1b", "Priority": 3.0},
    ]
    fleet = _fleet(
        ec2,
        tid,
        overrides,
        TargetCapacitySpecification={
            "TotalTargetCapacity": 4,
            "OnDemandTargetCapacity": 1,
            "DefaultTargetCapacityType": "spot",
        },
        OnDemandOptions={"AllocationStrategy": "prioritized"},
        SpotOptions={"AllocationStrategy": "diversified", "MinTargetCapacity": 3},
    )
    assert [
        (
            e["Lifecycle"],
            e["LaunchTemplateAndOverrides"]["Overrides"]["InstanceType"],
            _zone(e),
            e["ErrorCode"],
        )
        for e in fleet["Errors"]
    ] == [
        ("on-demand", "c5.large", "us-east-1a", "InsufficientInstanceCapacity"),
        ("spot", "c5.large", "us-east-1a", "InsufficientInstanceCapacity"),
        ("spot", "m5.large", "us-east-1a", "InsufficientInstanceCapacity"),
        ("spot", "m5.large", "us-east-1b", "InsufficientInstanceCapacity"),
    ]
    # on-demand landed on its next pool; spot reached 1 of MinTargetCapacity 3: none launched
    assert [(i["Lifecycle"], i["InstanceType"], _zone(i)) for i in fleet["Instances"]] == [
        ("on-demand", "m5.large", "us-east-1a")
    ]
    assert cloud_reset.client.limited() == {sim_client.Pool("m5.large", "us-east-1b", "spot"): 1}
