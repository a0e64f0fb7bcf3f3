"""The stand-in cloud never hands out a time later than the wall clock, at any speed, over
plain boto3: price timestamps, the control API's clock and EventBridge event times. A
fast market is compressed into real time, consistently with the replayed prices."""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fixtures.cloud import Cloud

pytestmark = pytest.mark.integration

PRICES = "spot_prices_us-east-1_2021-03-02_to_2021-05-31_linux.csv.gz"
#: types whose prices change about hourly in April 2021
TYPES = ["m4.4xlarge", "r4.4xlarge", "m5a.2xlarge", "r4.2xlarge"]
SPEED = 20_000.0  # history seconds per wall second: 5.5 hours a second


def _series() -> dict[tuple[str, str], list[tuple[float, str]]]:
    """The bundled CSV read independently of the sim: (type, zone) -> [(epoch, price)]."""
    ref = importlib.resources.files("spotfleet_engine").joinpath("data", PRICES)
    out: dict[tuple[str, str], list[tuple[float, str]]] = {}
    with ref.open("rb") as raw, gzip.open(raw, "rt", newline="") as text:
        for row in csv.DictReader(text):
            if row["instance_type"] in TYPES:
                at = datetime.fromisoformat(row["timestamp"]).timestamp()
                key = (row["instance_type"], row["availability_zone"])
                out.setdefault(key, []).append((at, row["spot_price"]))
    for points in out.values():
        points.sort()
    return out


def _history(ec2: Any, **kwargs: Any) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=TYPES, ProductDescriptions=["Linux/UNIX"], **kwargs
    )
    return [row for page in pages for row in page["SpotPriceHistory"]]


def _assert_not_after_wall(rows: list[dict[str, Any]]) -> None:
    wall = datetime.now(UTC)  # read after the answer arrived
    assert rows
    late = [r["Timestamp"] for r in rows if r["Timestamp"] > wall]
    assert late == [], f"{len(late)} timestamps after the wall clock {wall}: {late[:3]}"


def _wait_for_history(cloud: Cloud, since: datetime, amount: timedelta) -> None:
    deadline = time.monotonic() + 60
    while cloud.client.clock().history_now < since + amount:
        assert time.monotonic() < deadline, "the market clock did not move"
        time.sleep(0.05)


def test_at_speed_one_timestamps_and_clock_are_not_after_the_wall_clock(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    clock = cloud_reset.client.clock()
    assert clock.speed == 1.0
    assert clock.wall_now is not None and clock.now <= clock.wall_now
    assert clock.now <= datetime.now(UTC)
    _assert_not_after_wall(_history(ec2, StartTime=clock.now - timedelta(days=2)))
    _assert_not_after_wall(_history(ec2))  # default window: the last 90 days


def test_a_fast_market_is_compressed_into_real_time(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    switch = cloud_reset.client.set_clock(speed=SPEED)
    _wait_for_history(cloud_reset, switch.history_now, timedelta(hours=10))
    for _ in range(5):  # the running clock never reads later than the wall clock
        reading = cloud_reset.client.clock()
        assert reading.now <= datetime.now(UTC)
        assert reading.history_now - switch.history_now > reading.now - switch.now
    _assert_not_after_wall(_history(ec2, StartTime=switch.now - timedelta(days=1)))

    frozen = cloud_reset.client.set_clock(speed=0)  # compare exactly at one instant
    assert frozen.wall_now is not None and frozen.now <= frozen.wall_now
    rows = _history(ec2, StartTime=switch.now)
    _assert_not_after_wall(rows)
    # per pool, newest first; the last row is the price in effect at StartTime
    got: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        got.setdefault((r["InstanceType"], r["AvailabilityZone"]), []).append(r)
    series = _series()
    h0, r0 = switch.history_now.timestamp(), switch.now.timestamp()
    h1 = frozen.history_now.timestamp()
    compressed = 0
    for key, pool_rows in got.items():
        expected = [(at, p) for at, p in series[key] if h0 < at <= h1]
        in_window = list(reversed(pool_rows[:-1]))
        assert [r["SpotPrice"] for r in in_window] == [p for _at, p in expected], key
        for r, (at, _p) in zip(in_window, expected, strict=True):
            # reported at 1/SPEED of the history's spacing after the switch (ms precision)
            assert r["Timestamp"].timestamp() == pytest.approx(r0 + (at - h0) / SPEED, abs=2e-3)
        compressed += len(expected)
        in_effect = [p for at, p in series[key] if at <= h0]
        assert pool_rows[-1]["SpotPrice"] == in_effect[-1]
    assert compressed >= 10, "ten hours of history should hold price changes"
    # the price in effect at the reported now is the history's at history_now
    now_rows = ec2.describe_spot_price_history(
        InstanceTypes=TYPES, StartTime=frozen.now, EndTime=frozen.now
    )["SpotPriceHistory"]
    assert {(r["InstanceType"], r["AvailabilityZone"]): r["SpotPrice"] for r in now_rows} == {
        key: [p for at, p in points if at <= h1][-1]
        for key, points in series.items()
        if points[0][0] <= h1
    }


def test_jumps_move_the_market_but_not_the_clock_past_the_wall(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    c0 = cloud_reset.client.set_clock(speed=0)
    c1 = cloud_reset.client.set_clock(now=c0.now + timedelta(days=3))
    assert c1.wall_now is not None and c1.now <= c1.wall_now
    assert c1.history_now - c0.history_now == pytest.approx(timedelta(days=3), abs=timedelta(0.001))
    c2 = cloud_reset.client.advance(7200)
    assert c2.wall_now is not None and c2.now <= c2.wall_now
    assert c2.history_now - c1.history_now == timedelta(seconds=7200)
    _assert_not_after_wall(_history(ec2, StartTime=c0.now - timedelta(days=1)))
    series = _series()
    h2 = c2.history_now.timestamp()
    now_rows = ec2.describe_spot_price_history(
        InstanceTypes=TYPES, StartTime=c2.now, EndTime=c2.now
    )["SpotPriceHistory"]
    assert {(r["InstanceType"], r["AvailabilityZone"]): r["SpotPrice"] for r in now_rows} == {
        key: [p for at, p in points if at <= h2][-1]
        for key, points in series.items()
        if points[0][0] <= h2
    }


def test_event_times_are_not_after_the_wall_clock_at_high_speed(cloud_reset: Cloud) -> None:
    sqs, events = cloud_reset.boto3_client("sqs"), cloud_reset.boto3_client("events")
    url = sqs.create_queue(QueueName="clock-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="clock-events", EventPattern=json.dumps({"source": ["aws.ec2"]}))
    events.put_targets(Rule="clock-events", Targets=[{"Id": "q", "Arn": arn}])
    ec2 = cloud_reset.boto3_client("ec2")
    iid = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType="m5.large",
        InstanceMarketOptions={"MarketType": "spot"},
    )["Instances"][0]["InstanceId"]
    switch = cloud_reset.client.set_clock(speed=SPEED)
    _wait_for_history(cloud_reset, switch.history_now, timedelta(hours=2))
    cloud_reset.client.interrupt(iid, kind="both")  # 120 market seconds of notice
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
        e["detail-type"] == "EC2 Instance State-change Notification"
        and e["detail"]["state"] == "terminated"
        for e in seen
    ):
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            event = json.loads(m["Body"])
            received = datetime.now(UTC)
            sent = datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            assert sent <= received, event
            seen.append(event)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    kinds = [e["detail-type"] for e in seen]
    assert "EC2 Spot Instance Interruption Warning" in kinds
    assert "EC2 Instance Rebalance Recommendation" in kinds
    states = [e["detail"]["state"] for e in seen if "state" in e["detail"]]
    assert states[-2:] == ["shutting-down", "terminated"], states
