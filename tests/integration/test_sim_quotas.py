"""Account quotas of the stand-in cloud (on-demand vCPUs, spot instances), over plain boto3."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from tests.fixtures.cloud import Cloud

pytestmark = pytest.mark.integration

AMI = "ami-12c6146b"
SPOT = {"MarketType": "spot"}


def _run(ec2: Any, itype: str, count: int, spot: bool = False) -> list[str]:
    extra: dict[str, Any] = {"InstanceMarketOptions": SPOT} if spot else {}
    res = ec2.run_instances(
        ImageId=AMI, MinCount=count, MaxCount=count, InstanceType=itype, **extra
    )
    return [i["InstanceId"] for i in res["Instances"]]


def _code(err: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, int]:
    return (
        err.value.response["Error"]["Code"],
        err.value.response["ResponseMetadata"]["HTTPStatusCode"],
    )


def _template(ec2: Any) -> str:
    return str(
        ec2.create_launch_template(
            LaunchTemplateName="quota",
            LaunchTemplateData={"ImageId": AMI, "InstanceType": "m5.large"},
        )["LaunchTemplate"]["LaunchTemplateId"]
    )


def _fleet(ec2: Any, tid: str, overrides: list[dict[str, Any]], **extra: Any) -> Any:
    return ec2.create_fleet(
        Type="instant",
        LaunchTemplateConfigs=[
            {
                "LaunchTemplateSpecification": {"LaunchTemplateId": tid, "Version": "$Latest"},
                "Overrides": overrides,
            }
        ],
        **extra,
    )


def test_spot_instance_quota_on_run_instances(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    assert cloud_reset.client.quotas() == []  # off by default
    _run(ec2, "m5.large", 5, spot=True)  # no quota: anything goes
    cloud_reset.client.reset()
    cloud_reset.client.set_quota(spot_instances=3)
    first = _run(ec2, "m5.large", 2, spot=True)
    _run(ec2, "c5.large", 2)  # on-demand does not count against the spot quota
    with pytest.raises(botocore.exceptions.ClientError) as err:
        _run(ec2, "m5.large", 2, spot=True)
    assert _code(err) == ("MaxSpotInstanceCountExceeded", 400)
    assert err.value.response["Error"]["Message"] == "Max spot instance count exceeded"
    assert len(_run(ec2, "m5.large", 1, spot=True)) == 1  # the third fits
    with pytest.raises(botocore.exceptions.ClientError) as err:
        _run(ec2, "m5.large", 1, spot=True)
    assert _code(err) == ("MaxSpotInstanceCountExceeded", 400)
    ec2.terminate_instances(InstanceIds=first)  # terminated instances free the quota
    assert len(_run(ec2, "m5.large", 2, spot=True)) == 2
    cloud_reset.client.set_quota(spot_instances=None)
    assert cloud_reset.client.quotas() == []
    assert len(_run(ec2, "m5.large", 3, spot=True)) == 3


def test_on_demand_vcpu_quota_on_run_instances(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    quotas = cloud_reset.client.set_quota(on_demand_vcpus=6, region="us-east-1")
    assert quotas == [
        {"account": "*", "region": "us-east-1", "on_demand_vcpus": 6, "spot_instances": None}
    ]
    _run(ec2, "m5.large", 2)  # 2 x 2 vCPUs
    with pytest.raises(botocore.exceptions.ClientError) as err:
        _run(ec2, "m5.xlarge", 1)  # 4 more: 8 > 6
    assert _code(err) == ("VcpuLimitExceeded", 400)
    assert "vCPU limit of 6" in err.value.response["Error"]["Message"]
    _run(ec2, "m5.large", 1)  # exactly 6
    _run(ec2, "m5.large", 2, spot=True)  # spot does not count against the on-demand quota
    with pytest.raises(botocore.exceptions.ClientError):
        _run(ec2, "t3.micro", 1)
    eu = cloud_reset.boto3_client("ec2", region="eu-west-1")
    assert len(_run(eu, "m5.xlarge", 2)) == 2  # the quota is for us-east-1 only
    cloud_reset.client.clear_quotas()
    _run(ec2, "m5.xlarge", 1)


def test_quotas_in_an_instant_fleet_fill_what_fits_and_report_every_pool(
    cloud_reset: Cloud,
) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    tid = _template(ec2)
    cloud_reset.client.set_quota(spot_instances=3, on_demand_vcpus=10)
    spot = _fleet(
        ec2,
        tid,
        [{"InstanceType": "m5.large", "AvailabilityZone": z} for z in ("us-east-1a", "us-east-1b")],
        TargetCapacitySpecification={"TotalTargetCapacity": 5, "DefaultTargetCapacityType": "spot"},
        SpotOptions={"AllocationStrategy": "diversified"},
    )
    launched = {
        i["LaunchTemplateAndOverrides"]["Overrides"]["AvailabilityZone"]: len(i["InstanceIds"])
        for i in spot["Instances"]
    }
    assert launched == {"us-east-1a": 2, "us-east-1b": 1}
    assert sorted(
        (e["LaunchTemplateAndOverrides"]["Overrides"]["AvailabilityZone"], e["ErrorCode"])
        for e in spot["Errors"]
    ) == [
        ("us-east-1a", "MaxSpotInstanceCountExceeded"),
        ("us-east-1b", "MaxSpotInstanceCountExceeded"),
    ]
    od = _fleet(
        ec2,
        tid,
        [
            {"InstanceType": "m5.2xlarge", "AvailabilityZone": "us-east-1a", "Priority": 1.0},
            {"InstanceType": "m5.large", "AvailabilityZone": "us-east-1a", "Priority": 2.0},
        ],
        TargetCapacitySpecification={
            "TotalTargetCapacity": 3,
            "DefaultTargetCapacityType": "on-demand",
        },
        OnDemandOptions={"AllocationStrategy": "prioritized"},
    )
    # 8 vCPUs of m5.2xlarge, then 2 of m5.large make the 10; each pool is reported once
    assert [(i["InstanceType"], len(i["InstanceIds"])) for i in od["Instances"]] == [
        ("m5.2xlarge", 1),
        ("m5.large", 1),
    ]
    assert [
        (e["LaunchTemplateAndOverrides"]["Overrides"]["InstanceType"], e["ErrorCode"])
        for e in od["Errors"]
    ] == [("m5.2xlarge", "VcpuLimitExceeded"), ("m5.large", "VcpuLimitExceeded")]
