"""The stand-in cloud's market: real price history and placement scores over plain boto3."""

from __future__ import annotations

import csv
import gzip
import importlib.resources
from datetime import UTC, datetime, timedelta

import pytest

from spotfleet_sim import client as sim_client
from tests.fixtures.cloud import Cloud

pytestmark = pytest.mark.integration

PRICES = "spot_prices_us-east-1_2021-03-02_to_2021-05-31_linux.csv.gz"


def _csv_series(instance_type: str) -> dict[str, list[tuple[datetime, str]]]:
    """The bundled CSV read independently of the sim: zone -> [(time, price)] ascending."""
    ref = importlib.resources.files("spotfleet_engine").joinpath("data", PRICES)
    out: dict[str, list[tuple[datetime, str]]] = {}
    with ref.open("rb") as raw, gzip.open(raw, "rt", newline="") as text:
        for row in csv.DictReader(text):
            if row["instance_type"] == instance_type:
                at = datetime.fromisoformat(row["timestamp"])
                out.setdefault(row["availability_zone"], []).append((at, row["spot_price"]))
    for series in out.values():
        series.sort()
    return out


def _price_at(series: list[tuple[datetime, str]], at: datetime) -> str | None:
    current = None
    for when, price in series:
        if when <= at:
            current = price
    return current


def _current_prices(ec2: object, instance_type: str, now: datetime) -> dict[str, str]:
    rows = ec2.describe_spot_price_history(  # type: ignore[attr-defined]
        InstanceTypes=[instance_type], StartTime=now, EndTime=now
    )["SpotPriceHistory"]
    return {r["AvailabilityZone"]: r["SpotPrice"] for r in rows}


def test_prices_come_from_the_real_history_and_vary_by_zone_and_time(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    clock = cloud_reset.client.set_clock(speed=0)  # freeze: answers are a pure function of time
    series = _csv_series("m5.large")

    now_prices = _current_prices(ec2, "m5.large", clock.now)
    expected = {z: _price_at(s, clock.history_now) for z, s in series.items()}
    assert now_prices == {z: p for z, p in expected.items() if p is not None}
    assert len(set(now_prices.values())) > 1, "zones should differ in price"

    later = cloud_reset.client.set_clock(now=clock.now + timedelta(days=20))
    later_prices = _current_prices(ec2, "m5.large", later.now)
    assert later_prices == {
        z: p for z, s in series.items() if (p := _price_at(s, later.history_now)) is not None
    }
    assert later_prices != now_prices, "20 days of history should move some m5.large price"


def test_history_window_timestamps_are_sim_time_and_newest_first(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    clock = cloud_reset.client.set_clock(speed=0)
    start = clock.now - timedelta(days=3)
    rows = ec2.describe_spot_price_history(
        InstanceTypes=["c5.xlarge"], AvailabilityZone="us-east-1b", StartTime=start
    )["SpotPriceHistory"]
    assert rows, "three days of c5.xlarge in us-east-1b should have data"
    times = [r["Timestamp"] for r in rows]
    assert times == sorted(times, reverse=True)
    assert all(t <= clock.now for t in times)
    # every row but the oldest lies in the window; the oldest is the price in effect at start
    assert all(t > start for t in times[:-1])
    assert {r["AvailabilityZone"] for r in rows} == {"us-east-1b"}
    series = _csv_series("c5.xlarge")["us-east-1b"]
    offset = clock.now - clock.history_now
    in_window = [(at + offset, p) for at, p in series if start - offset < at <= clock.history_now]
    assert [
        (r["Timestamp"].astimezone(UTC).replace(microsecond=0), r["SpotPrice"]) for r in rows[:-1]
    ] == [(t.replace(microsecond=0), p) for t, p in reversed(in_window)]


def test_filters_and_pagination_match_one_big_page(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    clock = cloud_reset.client.set_clock(speed=0)
    args = {
        "StartTime": clock.now - timedelta(days=2),
        "Filters": [
            {"Name": "instance-type", "Values": ["m5.*"]},
            {"Name": "availability-zone", "Values": ["us-east-1a", "us-east-1c"]},
        ],
        "ProductDescriptions": ["Linux/UNIX"],
    }
    whole = ec2.describe_spot_price_history(MaxResults=1000, **args)
    assert "NextToken" not in whole or not whole["NextToken"]
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        PaginationConfig={"PageSize": 7}, **args
    )
    paged = [row for page in pages for row in page["SpotPriceHistory"]]
    assert len(whole["SpotPriceHistory"]) > 7
    assert paged == whole["SpotPriceHistory"]
    assert {r["AvailabilityZone"] for r in paged} == {"us-east-1a", "us-east-1c"}
    assert all(r["InstanceType"].startswith("m5.") for r in paged)
    windows = ec2.describe_spot_price_history(
        ProductDescriptions=["Windows"], StartTime=clock.now - timedelta(days=1)
    )
    assert windows["SpotPriceHistory"] == []


def test_placement_scores_are_modelled_and_drop_for_marked_pools(cloud_reset: Cloud) -> None:
    ec2 = cloud_reset.boto3_client("ec2")
    zones = {
        z["ZoneName"]: z["ZoneId"] for z in ec2.describe_availability_zones()["AvailabilityZones"]
    }
    scores = ec2.get_spot_placement_scores(
        InstanceTypes=["m5.large"],
        TargetCapacity=1,
        SingleAvailabilityZone=True,
        RegionNames=["us-east-1"],
    )["SpotPlacementScores"]
    by_zone = {s["AvailabilityZoneId"]: s["Score"] for s in scores}
    assert by_zone and all(1 <= v <= 10 for v in by_zone.values())
    assert [s["Score"] for s in scores] == sorted((s["Score"] for s in scores), reverse=True)
    best_zone = next(name for name, zid in zones.items() if by_zone.get(zid, 0) > 1)
    cloud_reset.client.mark_unavailable(sim_client.Pool("m5.large", best_zone, "spot"))
    after = ec2.get_spot_placement_scores(
        InstanceTypes=["m5.large"],
        TargetCapacity=1,
        SingleAvailabilityZone=True,
        RegionNames=["us-east-1"],
    )["SpotPlacementScores"]
    assert {s["AvailabilityZoneId"]: s["Score"] for s in after}[zones[best_zone]] == 1
    regional = ec2.get_spot_placement_scores(
        InstanceTypes=["m5.large"], TargetCapacity=1, RegionNames=["us-east-1", "eu-west-1"]
    )["SpotPlacementScores"]
    assert {s["Region"] for s in regional} == {"us-east-1", "eu-west-1"}
    assert all("AvailabilityZoneId" not in s for s in regional)
