"""The control API's routing (werkzeug Map/Rule): paths, methods, errors and reset."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from spotfleet_sim import client as sim_client
from tests.fixtures.cloud import Cloud

pytestmark = pytest.mark.integration


def _raw(cloud: Cloud, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(f"{cloud.endpoint_url}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_paths_methods_and_errors(cloud_reset: Cloud) -> None:
    assert _raw(cloud_reset, "GET", "/_spotfleet/health") == (
        200,
        {"ok": True, "history_region": "us-east-1"},
    )
    assert _raw(cloud_reset, "GET", "/_spotfleet/health/")[0] == 200  # trailing slash
    status, body = _raw(cloud_reset, "GET", "/_spotfleet/nothing")
    assert status == 404 and "no control endpoint GET /_spotfleet/nothing" in body["error"]
    status, body = _raw(cloud_reset, "DELETE", "/_spotfleet/clock")
    assert status == 405 and "GET" in body["error"] and "POST" in body["error"]
    status, body = _raw(cloud_reset, "POST", "/_spotfleet/faults", b'{"operation": "X"}')
    assert status == 400 and "code" in body["error"]
    status, body = _raw(cloud_reset, "POST", "/_spotfleet/clock", b"not json")
    assert status == 400
    status, body = _raw(cloud_reset, "POST", "/_spotfleet/quotas", b'{"spot_instances": -1}')
    assert status == 400 and ">= 0" in body["error"]
    status, body = _raw(cloud_reset, "GET", "/_spotfleet/log?since=0")
    assert status == 200 and set(body) == {"records", "last_seq"}
    assert _raw(cloud_reset, "GET", "/_spotfleet/hazard") == (
        200,
        {"enabled": False, "multiplier": 1.0},
    )


def test_reset_clears_every_book(cloud_reset: Cloud) -> None:
    sim = cloud_reset.client
    ec2 = cloud_reset.boto3_client("ec2")
    sim.inject_fault("DescribeVpcs", "InternalError", count=1)
    sim.inject_hang(30, operation="DescribeVpcs", count=1)
    sim.set_quota(spot_instances=1)
    sim.limit_capacity(sim_client.Pool("m5.large", "us-east-1a", "spot"), 1)
    sim.mark_unavailable(sim_client.Pool("c5.large", "us-east-1a"))
    sim.run_dry_on_next_spot_launch(2)
    sim.set_describe_index(False)
    ec2.describe_regions()
    assert sim.scheduled_faults() == {"dry_next_spot": 2}
    sim.reset()
    assert sim.faults() == [] and sim.hangs() == [] and sim.quotas() == []
    assert sim.limited() == {} and sim.unavailable() == []
    assert sim.scheduled_faults() == {"dry_next_spot": 0}
    assert sim.call_counts().total == 0 and sim.calls() == []
    assert _raw(cloud_reset, "GET", "/_spotfleet/config") == (
        200,
        {"notice_seconds": 2.0, "describe_index": True},
    )
