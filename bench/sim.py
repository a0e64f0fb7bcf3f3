"""Benchmark the stand-in cloud: start-up time and the launch-call rate it sustains.

Starts ``python -m spotfleet_sim --port 0`` (and, as a baseline, plain
``python -m moto.server``) on loopback, times start-up to the first healthy
answer, then runs a bounded number of RunInstances and CreateFleet(instant)
calls with boto3 and reports calls per second. Stops by itself; the last line
is one JSON object.

    .venv/bin/python bench/sim.py [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import botocore.config

REPO = Path(__file__).resolve().parents[1]
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    roots = [str(REPO / "sim"), str(REPO / "engine"), str(REPO / "operator")]
    env["PYTHONPATH"] = os.pathsep.join([*roots, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"no answer from {url} in {timeout}s") from None
            time.sleep(0.02)


def start_sim(tmp: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    out = tmp / "sim.out"
    began = time.perf_counter()
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spotfleet_sim", "--port", "0"],
            stdout=fh,
            stderr=subprocess.DEVNULL,
            env=_env(),
        )
    url = None
    while url is None:
        if proc.poll() is not None:
            raise SystemExit("spotfleet_sim exited")
        for line in out.read_text().splitlines():
            if line.startswith("spotfleet-sim listening on "):
                url = line.rsplit(" ", 1)[1]
        time.sleep(0.01)
    _wait_http(f"{url}/_spotfleet/health", proc)
    return proc, url, time.perf_counter() - began


def start_moto() -> tuple[subprocess.Popen[bytes], str, float]:
    port = _free_port()
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/moto-api/", proc)
    return proc, url, time.perf_counter() - began


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def ec2(url: str) -> Any:
    cfg = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1})
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=url, config=cfg, **CREDS)


def rate_run_instances(client: Any, calls: int) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        client.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="m5.large",
            InstanceMarketOptions={"MarketType": "spot"},
        )
    return calls / (time.perf_counter() - began)


def rate_create_fleet(client: Any, calls: int) -> float:
    tid = client.create_launch_template(
        LaunchTemplateName=f"bench-{time.monotonic_ns()}",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    overrides = [
        {"InstanceType": t, "AvailabilityZone": z}
        for t in ("m5.large", "c5.large")
        for z in ("us-east-1a", "us-east-1b", "us-east-1c")
    ]
    began = time.perf_counter()
    for _ in range(calls):
        resp = client.create_fleet(
            Type="instant",
            LaunchTemplateConfigs=[
                {
                    "LaunchTemplateSpecification": {"LaunchTemplateId": tid, "Version": "$Latest"},
                    "Overrides": overrides,
                }
            ],
            TargetCapacitySpecification={
                "TotalTargetCapacity": 2,
                "DefaultTargetCapacityType": "spot",
            },
            SpotOptions={"AllocationStrategy": "price-capacity-optimized"},
        )
        assert resp["Instances"], resp["Errors"]
    return calls / (time.perf_counter() - began)


def reset(url: str, path: str) -> None:
    req = urllib.request.Request(f"{url}{path}", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=30):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200, help="calls per measured loop")
    args = parser.parse_args()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"spotfleet-bench-sim-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)

    moto_proc, moto_url, moto_start = start_moto()
    try:
        ec2(moto_url).describe_regions()  # warm
        moto_run = rate_run_instances(ec2(moto_url), args.calls)
    finally:
        stop(moto_proc)
    print(f"plain moto: start-up {moto_start:.2f} s, RunInstances {moto_run:.1f} calls/s")

    sim_proc, sim_url, sim_start = start_sim(tmp)
    try:
        client = ec2(sim_url)
        client.describe_regions()  # warm
        sim_run = rate_run_instances(client, args.calls)
        reset(sim_url, "/_spotfleet/reset")
        sim_fleet = rate_create_fleet(client, args.calls)
    finally:
        stop(sim_proc)
    print(f"stand-in cloud: start-up {sim_start:.2f} s (process start to healthy)")
    print(
        f"stand-in cloud: RunInstances {sim_run:.1f} calls/s ({sim_run / moto_run:.2f}x plain moto)"
    )
    print(f"stand-in cloud: CreateFleet(instant, 6 overrides, 2 instances) {sim_fleet:.1f} calls/s")
    print(
        json.dumps(
            {
                "calls_per_loop": args.calls,
                "sim_startup_s": round(sim_start, 3),
                "moto_startup_s": round(moto_start, 3),
                "sim_run_instances_per_s": round(sim_run, 1),
                "moto_run_instances_per_s": round(moto_run, 1),
                "run_instances_ratio_vs_moto": round(sim_run / moto_run, 3),
                "sim_create_fleet_per_s": round(sim_fleet, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
