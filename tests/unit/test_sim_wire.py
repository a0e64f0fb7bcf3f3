"""The layer's wire formats, checked against botocore's own parsers; clock; faults; log."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import botocore.parsers
import pytest

from spotfleet_sim import calllog, clock, faults, wire


def _parse(operation: str, status: int, body: bytes) -> dict[str, object]:
    op = wire.ec2_model().operation_model(operation)
    parser = botocore.parsers.create_parser("ec2")
    return dict(parser.parse({"status_code": status, "headers": {}, "body": body}, op.output_shape))


def test_nest_turns_query_keys_into_lists_and_dicts() -> None:
    flat = wire.parse_query(
        b"Action=CreateFleet&LaunchTemplateConfigs.1.Overrides.2.InstanceType=c5.large"
        b"&LaunchTemplateConfigs.1.Overrides.1.InstanceType=m5.large"
        b"&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v%2Fw"
    )
    nested = wire.nest(flat)
    assert nested["LaunchTemplateConfigs"][0]["Overrides"] == [
        {"InstanceType": "m5.large"},
        {"InstanceType": "c5.large"},
    ]
    assert nested["TagSpecification"] == [{"Tag": [{"Key": "k", "Value": "v/w"}]}]


def test_create_fleet_response_round_trips_through_botocore() -> None:
    data = {
        "FleetId": "fleet-1",
        "Errors": [
            {
                "LaunchTemplateAndOverrides": {
                    "LaunchTemplateSpecification": {"LaunchTemplateId": "lt-1", "Version": "1"},
                    "Overrides": {"InstanceType": "m5.large", "AvailabilityZone": "us-east-1a"},
                },
                "Lifecycle": "spot",
                "ErrorCode": "InsufficientInstanceCapacity",
                "ErrorMessage": "no <capacity> & none",
            }
        ],
        "Instances": [
            {
                "LaunchTemplateAndOverrides": {
                    "LaunchTemplateSpecification": {"LaunchTemplateId": "lt-1", "Version": "1"},
                    "Overrides": {"InstanceType": "m5.large", "WeightedCapacity": "2.0"},
                },
                "Lifecycle": "spot",
                "InstanceIds": ["i-1", "i-2"],
                "InstanceType": "m5.large",
            }
        ],
    }
    parsed = _parse("CreateFleet", 200, wire.ec2_response("CreateFleet", data))
    assert parsed["FleetId"] == "fleet-1"
    assert parsed["Errors"] == data["Errors"]
    inst = parsed["Instances"][0]  # type: ignore[index]
    assert inst["InstanceIds"] == ["i-1", "i-2"]
    assert inst["LaunchTemplateAndOverrides"]["Overrides"]["WeightedCapacity"] == 2.0


def test_spot_price_timestamps_serialise_as_utc() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = wire.ec2_response(
        "DescribeSpotPriceHistory",
        {
            "SpotPriceHistory": [
                {
                    "AvailabilityZone": "z",
                    "InstanceType": "t",
                    "ProductDescription": "p",
                    "SpotPrice": "0.1",
                    "Timestamp": at.timestamp(),
                }
            ]
        },
    )
    row = _parse("DescribeSpotPriceHistory", 200, body)["SpotPriceHistory"][0]  # type: ignore[index]
    assert row["Timestamp"] == at


def test_errors_parse_with_codes_and_statuses() -> None:
    status, body = wire.ec2_error("RequestLimitExceeded", "slow down")
    assert status == 503
    parsed = _parse("DescribeInstances", status, body)
    assert parsed["Error"] == {"Code": "RequestLimitExceeded", "Message": "slow down"}


def test_clock_runs_freezes_jumps_and_advances() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    c = clock.SimClock(start, speed=1000.0)
    time.sleep(0.02)
    assert c.now() - start >= timedelta(seconds=10)
    frozen = c.set(speed=0)
    time.sleep(0.01)
    assert c.now() == frozen
    assert c.advance(60) == frozen + timedelta(seconds=60)
    assert c.set(now=start).replace(tzinfo=UTC) == start
    with pytest.raises(ValueError):
        c.advance(-1)
    with pytest.raises(ValueError):
        clock.SimClock(speed=-1)


def test_fault_book_counts_and_probabilities() -> None:
    book = faults.FaultBook(seed=1)
    book.add(faults.FaultRule("RunInstances", "RequestLimitExceeded", count=2))
    assert [book.draw("RunInstances") for _ in range(3)] == [
        ("RequestLimitExceeded", faults.DEFAULT_MESSAGES["RequestLimitExceeded"]),
        ("RequestLimitExceeded", faults.DEFAULT_MESSAGES["RequestLimitExceeded"]),
        None,
    ]
    assert book.draw("DescribeInstances") is None
    book.add(faults.FaultRule("*", "InternalError", probability=0.5))
    hits = sum(book.draw("Anything") is not None for _ in range(400))
    assert 120 < hits < 280
    with pytest.raises(ValueError):
        book.add(faults.FaultRule("X", "Boom", count=1))
    with pytest.raises(ValueError):
        book.add(faults.FaultRule("X", "InternalError"))


def test_read_only_operations_are_not_mutating() -> None:
    assert not calllog.is_mutating("DescribeInstances")
    assert not calllog.is_mutating("GetSpotPlacementScores")
    assert calllog.is_mutating("RunInstances")
    assert calllog.is_mutating("CreateFleet")
