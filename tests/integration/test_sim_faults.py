"""Injected AWS errors, botocore's real retry path, the call log and unimplemented calls."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers
import pytest

from spotfleet_sim import client as sim_client
from tests.fixtures.cloud import Cloud, MotoServer, moto_failures

pytestmark = pytest.mark.integration


def _standard(attempts: int) -> botocore.config.Config:
    """botocore's standard retry mode with ``attempts`` calls in total (first + retries)."""
    return botocore.config.Config(retries={"mode": "standard", "total_max_attempts": attempts})


def test_injected_throttling_is_retried_by_botocore_and_counted(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2", config=_standard(3))
    cloud_reset.client.inject_fault("DescribeInstances", "RequestLimitExceeded", count=2)
    resp = ec2.describe_instances()
    assert resp["ResponseMetadata"]["RetryAttempts"] == 2
    calls = [c for c in cloud_reset.client.calls() if c.operation == "DescribeInstances"]
    assert [(c.injected, c.error_code, c.status) for c in calls] == [
        (True, "RequestLimitExceeded", 503),
        (True, "RequestLimitExceeded", 503),
        (False, None, 200),
    ]
    assert not calls[0].mutating
    assert cloud_reset.client.faults()[0]["injected"] == 2


def test_throttling_beyond_the_retry_budget_surfaces_as_client_error(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2", config=_standard(2))
    cloud_reset.client.inject_fault("RunInstances", "RequestLimitExceeded", count=5)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    assert err.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert err.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    runs = [c for c in cloud_reset.client.calls() if c.operation == "RunInstances"]
    assert len(runs) == 2 and all(c.injected and c.mutating for c in runs)
    assert cloud_reset.boto3_client("ec2").describe_instances()["Reservations"] == []


@pytest.mark.parametrize(
    ("code", "status"), [("UnauthorizedOperation", 403), ("InsufficientInstanceCapacity", 500)]
)
def test_other_injected_errors_have_aws_codes(cloud_reset: Cloud, code: str, status: int) -> None:
    ec2 = cloud_reset.boto3_client("ec2", config=_standard(1))
    cloud_reset.client.inject_fault("CreateFleet", code, count=1)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.create_fleet(
            Type="instant",
            LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateName": "none"}}],
            TargetCapacitySpecification={"TotalTargetCapacity": 1},
        )
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_probabilistic_faults_on_other_services(cloud_reset: Cloud) -> None:
    sqs = cloud_reset.boto3_client("sqs", config=_standard(1))
    cloud_reset.client.inject_fault("ListQueues", "InternalError", probability=1.0)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sqs.list_queues()
    assert err.value.response["Error"]["Code"] == "InternalError"
    cloud_reset.client.clear_faults()
    assert cloud_reset.client.faults() == []
    sqs.list_queues()
    calls = [c for c in cloud_reset.client.calls() if c.operation == "ListQueues"]
    assert [(c.service, c.injected, c.handled_by) for c in calls] == [
        ("sqs", True, "layer"),
        ("sqs", False, "moto"),
    ]


def test_unimplemented_calls_raise_clearly_and_fail_the_fixture(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.modify_fleet(FleetId="fleet-1", TargetCapacitySpecification={"TotalTargetCapacity": 1})
    assert err.value.response["Error"]["Code"] == "NotImplementedBySimulator"
    assert "ModifyFleet" in err.value.response["Error"]["Message"]
    problems = cloud_reset.client.problems()
    assert [(p.operation, p.unimplemented) for p in problems] == [("ModifyFleet", True)]
    with pytest.raises(pytest.fail.Exception, match="ModifyFleet"):
        cloud_reset.fail_on_problems()
    cloud_reset.client.reset()  # this test provoked it on purpose


def test_plain_moto_shows_the_gap_the_layer_closes(_moto_server_process: MotoServer) -> None:
    """Plain moto answers an unimplemented call with an HTML 500 (boto3: ResponseParserError);
    the ``moto_server`` fixture finds it in moto's stderr and fails the test."""
    offset = _moto_server_process.stderr_size()
    ec2 = _moto_server_process.boto3_client("ec2", config=_standard(1))
    with pytest.raises(botocore.parsers.ResponseParserError):
        ec2.modify_fleet(FleetId="fleet-1", TargetCapacitySpecification={"TotalTargetCapacity": 1})
    deadline = time.monotonic() + 5
    while not moto_failures(_moto_server_process.stderr_since(offset)):
        assert time.monotonic() < deadline, "moto's stderr never showed the failed call"
        time.sleep(0.05)
    # moto writes the access-log line first and the traceback a moment later: let its
    # stderr settle, so the delayed traceback is not blamed on the next test
    settled, size = time.monotonic(), _moto_server_process.stderr_size()
    while time.monotonic() - settled < 1.0:
        time.sleep(0.1)
        if _moto_server_process.stderr_size() != size:
            settled, size = time.monotonic(), _moto_server_process.stderr_size()
    failures = moto_failures(_moto_server_process.stderr_since(offset))
    # exactly the one failed request (its access-log line; the traceback is not always printed)
    assert (
        sum(1 for line in failures if "NotImplementedError:" not in line and "raise" not in line)
        == 1
    ), failures


def test_moto_server_fixture_serves_plain_moto(moto_server: MotoServer) -> None:
    ec2 = moto_server.boto3_client("ec2")
    ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    assert len(ec2.describe_instances()["Reservations"]) == 1
    price = ec2.describe_spot_price_history(InstanceTypes=["m5.large"])["SpotPriceHistory"][0]
    assert price["SpotPrice"] == "0.00001"  # moto's placeholder, the reason the layer exists


def _tenant(cloud: Cloud, key: str, **config: Any) -> Any:
    """A boto3 EC2 client signing with its own access key id (one tenant's credentials)."""
    return boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=cloud.endpoint_url,
        aws_access_key_id=key,
        aws_secret_access_key="testing",
        config=botocore.config.Config(**config) if config else None,
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "InternalError"), (502, "502"), (503, "ServiceUnavailable"), (504, "504")],
)
def test_a_5xx_burst_is_retried_by_botocore_and_then_surfaces(
    cloud_reset: Cloud, status: int, code: str
) -> None:
    ec2 = cloud_reset.boto3_client("ec2", config=_standard(4))
    cloud_reset.client.inject_5xx_burst(3, status=status, operation="DescribeInstances")
    assert ec2.describe_instances()["ResponseMetadata"]["RetryAttempts"] == 3
    calls = [c for c in cloud_reset.client.calls() if c.operation == "DescribeInstances"]
    assert [(c.status, c.injected) for c in calls] == [(status, True)] * 3 + [(200, False)]
    cloud_reset.client.inject_5xx_burst(2, status=status)  # any operation
    with pytest.raises(botocore.exceptions.ClientError) as err:
        cloud_reset.boto3_client("ec2", config=_standard(2)).describe_regions()
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    with pytest.raises(sim_client.SimError) as refused:
        cloud_reset.client.inject_5xx_burst(1, status=418)
    assert refused.value.status == 400


def test_faults_can_be_aimed_at_one_tenant(cloud_reset: Cloud) -> None:
    a, b = _tenant(cloud_reset, "AKIDTENANTA"), _tenant(cloud_reset, "AKIDTENANTB")
    cloud_reset.client.inject_fault(
        "DescribeInstances", "UnauthorizedOperation", count=1, access_key_id="AKIDTENANTA"
    )
    b.describe_instances()  # not aimed at b: answered, and the rule is still armed
    assert cloud_reset.client.faults()[0]["injected"] == 0
    with pytest.raises(botocore.exceptions.ClientError) as err:
        a.describe_instances()
    assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"
    a.describe_instances()


def test_a_hung_tenant_does_not_starve_another(cloud_reset: Cloud) -> None:
    hung = _tenant(cloud_reset, "AKIDHUNG", read_timeout=300, retries={"total_max_attempts": 1})
    other = _tenant(cloud_reset, "AKIDOTHER")
    cloud_reset.client.inject_hang(300, operation="DescribeInstances", access_key_id="AKIDHUNG")
    answer: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: answer.update(resp=hung.describe_instances()))
    caller.start()
    deadline = time.monotonic() + 30
    while cloud_reset.client.hangs()[0]["holding"] != 1:
        assert time.monotonic() < deadline, "the hung call never arrived"
        time.sleep(0.05)
    # while the hung tenant's call is held, the other tenant is answered, same operation
    launched = other.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    assert (
        other.describe_instances()["Reservations"][0]["Instances"][0]["InstanceId"]
        == (launched["Instances"][0]["InstanceId"])
    )
    assert caller.is_alive() and cloud_reset.client.hangs()[0]["holding"] == 1
    cloud_reset.client.clear_hangs()  # releases the held call: it gets its real answer
    caller.join(timeout=60)
    assert not caller.is_alive()
    assert len(answer["resp"]["Reservations"]) == 1  # answered after the launch it waited out
    held = [c for c in cloud_reset.client.calls() if c.detail and "hang fault" in c.detail]
    assert [(c.operation, c.status) for c in held] == [("DescribeInstances", 200)]


def test_a_counted_hang_holds_only_the_next_calls(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    cloud_reset.client.inject_hang(0.2, count=1)  # any operation, once
    ec2.describe_instances()
    ec2.describe_instances()
    assert [(h["hung"], h["holding"]) for h in cloud_reset.client.hangs()] == [(1, 0)]
    held = [c.seq for c in cloud_reset.client.calls() if c.detail and "hang fault" in c.detail]
    assert len(held) == 1


def test_calls_are_counted_per_operation_and_access_key(cloud_reset: Cloud) -> None:
    a = _tenant(cloud_reset, "AKIDCOUNTA", retries={"mode": "standard", "total_max_attempts": 3})
    b = _tenant(cloud_reset, "AKIDCOUNTB")
    assert cloud_reset.client.call_counts().total == 0  # reset cleared them
    cloud_reset.client.inject_fault(
        "DescribeInstances", "RequestLimitExceeded", count=1, access_key_id="AKIDCOUNTA"
    )
    a.describe_instances()  # one throttled attempt + the retry: two calls
    a.describe_instances()
    b.describe_instances()
    b.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    counts = cloud_reset.client.call_counts()
    assert counts.of("DescribeInstances", "AKIDCOUNTA") == 3
    assert counts.of("DescribeInstances", "AKIDCOUNTB") == 1
    assert counts.of("RunInstances", "AKIDCOUNTB") == 1
    assert counts.of("RunInstances", "AKIDCOUNTA") == 0
    assert counts.of("DescribeInstances") == 4
    assert counts.total == 5  # control-API calls are not counted
    cloud_reset.client.reset_call_counts()
    assert cloud_reset.client.call_counts().total == 0
