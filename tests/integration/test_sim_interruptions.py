"""Spot interruptions: EC2 events through EventBridge to SQS, then termination, over plain boto3."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from spotfleet_sim import client as sim_client
from tests.fixtures.cloud import Cloud

pytestmark = pytest.mark.integration

PATTERN = {
    "source": ["aws.ec2"],
    "detail-type": [
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
    ],
}


def _queue(cloud: Cloud) -> str:
    """An SQS queue behind an EventBridge rule, created as a user would on AWS."""
    sqs, events = cloud.boto3_client("sqs"), cloud.boto3_client("events")
    url = sqs.create_queue(QueueName="spot-interruptions")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="spot-interruptions", EventPattern=json.dumps(PATTERN))
    events.put_targets(Rule="spot-interruptions", Targets=[{"Id": "queue", "Arn": arn}])
    return str(url)


def _spot_instance(cloud: Cloud, market: str = "spot") -> str:
    ec2 = cloud.boto3_client("ec2")
    extra: dict[str, Any] = (
        {"InstanceMarketOptions": {"MarketType": "spot"}} if market == "spot" else {}
    )
    res = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.large", **extra
    )
    return str(res["Instances"][0]["InstanceId"])


def _drain(cloud: Cloud, url: str, want: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    sqs = cloud.boto3_client("sqs")
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            got.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


def _state(cloud: Cloud, iid: str) -> dict[str, Any]:
    res = cloud.boto3_client("ec2").describe_instances(InstanceIds=[iid])["Reservations"]
    return dict(res[0]["Instances"][0])


def _wait_terminated(cloud: Cloud, iid: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    inst = _state(cloud, iid)
    while inst["State"]["Name"] != "terminated" and time.monotonic() < deadline:
        time.sleep(0.1)
        inst = _state(cloud, iid)
    return inst


def test_interruption_reaches_sqs_in_aws_shape_then_terminates(cloud_reset: Cloud) -> None:
    url = _queue(cloud_reset)
    iid = _spot_instance(cloud_reset)
    sent = cloud_reset.client.interrupt(iid, kind="both", notice_seconds=1.0)
    assert sent["instance_ids"] == [iid] and sent["rules_matched"] == {iid: 2}

    events = _drain(cloud_reset, url, 2)
    by_type = {e["detail-type"]: e for e in events}
    assert set(by_type) == set(PATTERN["detail-type"])
    warning = by_type["EC2 Spot Instance Interruption Warning"]
    assert set(warning) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }
    assert warning["source"] == "aws.ec2" and warning["version"] == "0"
    assert warning["region"] == "us-east-1" and warning["account"] == "123456789012"
    assert warning["detail"] == {"instance-id": iid, "instance-action": "terminate"}
    assert warning["resources"] == [f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}"]
    assert warning["time"].endswith("Z")
    assert by_type["EC2 Instance Rebalance Recommendation"]["detail"] == {"instance-id": iid}

    assert _state(cloud_reset, iid)["State"]["Name"] == "running"  # still inside the notice
    inst = _wait_terminated(cloud_reset, iid)
    assert inst["State"]["Name"] == "terminated"
    assert inst["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    ops = [c.operation for c in cloud_reset.client.calls() if c.handled_by == "sim"]
    assert ops == ["RebalanceRecommendation", "SpotInterruptionWarning", "SpotTermination"]


def test_a_frozen_clock_holds_the_termination_until_it_is_advanced(cloud_reset: Cloud) -> None:
    _queue(cloud_reset)
    iid = _spot_instance(cloud_reset)
    cloud_reset.client.set_clock(speed=0)
    cloud_reset.client.interrupt(iid, kind="interruption")  # default notice: two sim minutes
    assert [p["instance_id"] for p in cloud_reset.client.pending_interruptions()] == [iid]
    time.sleep(0.5)
    assert _state(cloud_reset, iid)["State"]["Name"] == "running"
    cloud_reset.client.advance(121)
    assert (
        _wait_terminated(cloud_reset, iid)["StateReason"]["Code"]
        == "Server.SpotInstanceTermination"
    )
    assert cloud_reset.client.pending_interruptions() == []


def test_rebalance_alone_does_not_terminate(cloud_reset: Cloud) -> None:
    url = _queue(cloud_reset)
    iid = _spot_instance(cloud_reset)
    cloud_reset.client.interrupt(iid, kind="rebalance", notice_seconds=0)
    events = _drain(cloud_reset, url, 1)
    assert [e["detail-type"] for e in events] == ["EC2 Instance Rebalance Recommendation"]
    assert cloud_reset.client.pending_interruptions() == []
    time.sleep(0.3)
    assert _state(cloud_reset, iid)["State"]["Name"] == "running"


def test_only_running_spot_instances_can_be_interrupted(cloud_reset: Cloud) -> None:
    on_demand = _spot_instance(cloud_reset, market="on-demand")
    with pytest.raises(sim_client.SimError) as err:
        cloud_reset.client.interrupt(on_demand)
    assert err.value.status == 400 and "not a spot instance" in err.value.message
    with pytest.raises(sim_client.SimError):
        cloud_reset.client.interrupt("i-0123456789abcdef0")
    assert cloud_reset.client.pending_interruptions() == []


def test_hazard_mode_interrupts_tracked_spot_instances(cloud_reset: Cloud) -> None:
    url = _queue(cloud_reset)
    iid = _spot_instance(cloud_reset)
    cloud_reset.client.set_notice_seconds(0.5)
    # m5.large's advisor band over 30 days, scaled so that one sim second is certain death
    cloud_reset.client.set_hazard(True, multiplier=1e9, seed=7)
    events = _drain(cloud_reset, url, 2)
    assert {e["detail"]["instance-id"] for e in events} == {iid}
    assert (
        _wait_terminated(cloud_reset, iid)["StateReason"]["Code"]
        == "Server.SpotInstanceTermination"
    )
    cloud_reset.client.set_hazard(False)


STATE_CHANGE = "EC2 Instance State-change Notification"


def _state_queue(cloud: Cloud) -> str:
    sqs, events = cloud.boto3_client("sqs"), cloud.boto3_client("events")
    url = sqs.create_queue(QueueName="state-changes")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    pattern = {"source": ["aws.ec2"], "detail-type": [STATE_CHANGE]}
    events.put_rule(Name="state-changes", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="state-changes", Targets=[{"Id": "queue", "Arn": arn}])
    return str(url)


def _states(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        assert e["detail-type"] == STATE_CHANGE and e["source"] == "aws.ec2"
        out.setdefault(e["detail"]["instance-id"], []).append(e["detail"]["state"])
    return out


def test_state_changes_reach_sqs_as_aws_sends_them(cloud_reset: Cloud) -> None:
    url = _state_queue(cloud_reset)
    ec2 = cloud_reset.boto3_client("ec2")
    iid = _spot_instance(cloud_reset, market="on-demand")
    ec2.stop_instances(InstanceIds=[iid])
    ec2.start_instances(InstanceIds=[iid])
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "k", "Value": "v"}])  # not a state change
    ec2.terminate_instances(InstanceIds=[iid])
    events = _drain(cloud_reset, url, 8)
    assert _states(events) == {
        iid: [
            "pending",
            "running",
            "stopping",
            "stopped",
            "pending",
            "running",
            "shutting-down",
            "terminated",
        ]
    }
    first = events[0]
    assert set(first) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }
    assert first["detail"] == {"instance-id": iid, "state": "pending"}
    assert first["resources"] == [f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}"]
    assert first["account"] == "123456789012" and first["region"] == "us-east-1"


def test_fleet_launches_and_spot_terminations_send_state_changes(cloud_reset: Cloud) -> None:
    url = _state_queue(cloud_reset)
    ec2 = cloud_reset.boto3_client("ec2")
    tid = ec2.create_launch_template(
        LaunchTemplateName="states",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    fleet = ec2.create_fleet(
        Type="instant",
        LaunchTemplateConfigs=[
            {
                "LaunchTemplateSpecification": {"LaunchTemplateId": tid, "Version": "$Latest"},
                "Overrides": [{"InstanceType": "m5.large", "AvailabilityZone": "us-east-1b"}],
            }
        ],
        TargetCapacitySpecification={"TotalTargetCapacity": 2, "DefaultTargetCapacityType": "spot"},
    )
    ids = fleet["Instances"][0]["InstanceIds"]
    assert _states(_drain(cloud_reset, url, 4)) == {i: ["pending", "running"] for i in ids}
    cloud_reset.client.interrupt(ids[0], kind="interruption", notice_seconds=0.2)
    assert _states(_drain(cloud_reset, url, 2)) == {ids[0]: ["shutting-down", "terminated"]}
    assert _state(cloud_reset, ids[0])["StateReason"]["Code"] == "Server.SpotInstanceTermination"
