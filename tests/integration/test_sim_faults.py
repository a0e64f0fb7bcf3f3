"""Injected AWS errors, botocore's real retry path, the call log and unimplemented calls."""

from __future__ import annotations

import time

import botocore.config
import botocore.exceptions
import botocore.parsers
import pytest

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
