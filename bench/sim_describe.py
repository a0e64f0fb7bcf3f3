"""Benchmark DescribeInstances at scale: the stand-in cloud's index against plain moto.

Builds the same state in both (``--policies`` RunInstances of ``--per-policy`` instances,
each tagged like the operator tags its instances), then measures, with boto3's
paginator exactly as the operator calls it:

- one policy's instances: ``instance-state-name`` pending/running + ``tag:<uid>=<one uid>``;
- the all-owned sweep: ``instance-state-name`` pending/running + ``tag-key=<uid key>``
  (every page, moto's default page size of 100 reservations).

For each it prints wall time per call and the server process's CPU seconds per call
(from /proc, in clock ticks: measure enough calls for many ticks), and the ratio plain
moto / stand-in cloud measured in this run. The
stand-in cloud's first sweep after the build renders every instance once (moto's own
serializer) and is reported separately as "cold". The last line is one JSON object.

    .venv/bin/python bench/sim_describe.py [--policies 1000] [--per-policy 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sim as simbench  # bench/sim.py: server start and stop

UID = "spotfleet.dev/policy-uid"
OWNED = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build(client: Any, policies: int, per_policy: int) -> float:
    """Launch the fleet; returns wall seconds."""
    began = time.perf_counter()
    for p in range(policies):
        tags = {
            UID: f"uid-{p:05d}",
            "spotfleet.dev/policy": f"tenant-{p % 50}/policy-{p}",
            "spotfleet.dev/pool": "m5.large/us-east-1a/spot",
            "Name": f"policy-{p}",
        }
        client.run_instances(
            ImageId="ami-12c6146b",
            MinCount=per_policy,
            MaxCount=per_policy,
            InstanceType="m5.large",
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )
    return time.perf_counter() - began


def describe(client: Any, filters: list[dict[str, Any]]) -> int:
    """One paginated DescribeInstances; returns the instances seen."""
    seen = 0
    for page in client.get_paginator("describe_instances").paginate(Filters=filters):
        seen += sum(len(r["Instances"]) for r in page["Reservations"])
    return seen


def measure(
    client: Any, pid: int, filters_of: list[list[dict[str, Any]]], want: int
) -> tuple[float, float]:
    """(mean wall s, mean server CPU s) per call over ``filters_of``."""
    walls: list[float] = []
    cpu0 = cpu_seconds(pid)
    for filters in filters_of:
        began = time.perf_counter()
        seen = describe(client, filters)
        walls.append(time.perf_counter() - began)
        assert seen == want, (seen, want)
    cpu = (cpu_seconds(pid) - cpu0) / len(filters_of)
    return statistics.fmean(walls), cpu


def one_policy(policies: int, n: int, rng: random.Random) -> list[list[dict[str, Any]]]:
    return [
        [*OWNED, {"Name": f"tag:{UID}", "Values": [f"uid-{rng.randrange(policies):05d}"]}]
        for _ in range(n)
    ]


SWEEP = [*OWNED, {"Name": "tag-key", "Values": [UID]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--per-policy", type=int, default=4)
    parser.add_argument("--sim-policy-calls", type=int, default=200)
    parser.add_argument("--sim-sweeps", type=int, default=5)
    parser.add_argument("--moto-policy-calls", type=int, default=3)
    parser.add_argument("--moto-sweeps", type=int, default=1)
    args = parser.parse_args()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"spotfleet-bench-describe-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    total = args.policies * args.per_policy
    rng = random.Random(0)
    results: dict[str, Any] = {"policies": args.policies, "instances": total}

    moto_proc, moto_url, _ = simbench.start_moto()
    try:
        client = simbench.ec2(moto_url)
        results["moto_build_s"] = round(build(client, args.policies, args.per_policy), 2)
        wall, cpu = measure(
            client,
            moto_proc.pid,
            one_policy(args.policies, args.moto_policy_calls, rng),
            args.per_policy,
        )
        results["moto_policy_s"], results["moto_policy_cpu_s"] = round(wall, 4), round(cpu, 4)
        wall, cpu = measure(client, moto_proc.pid, [SWEEP] * args.moto_sweeps, total)
        results["moto_sweep_s"], results["moto_sweep_cpu_s"] = round(wall, 3), round(cpu, 3)
    finally:
        simbench.stop(moto_proc)
    print(
        f"plain moto: {total} instances built in {results['moto_build_s']} s; one policy "
        f"{results['moto_policy_s'] * 1000:.1f} ms/call ({results['moto_policy_cpu_s']:.3f} s "
        f"CPU), sweep {results['moto_sweep_s']:.2f} s/sweep ({results['moto_sweep_cpu_s']:.2f} "
        "s CPU)",
        flush=True,
    )

    sim_proc, sim_url, _ = simbench.start_sim(tmp)
    try:
        client = simbench.ec2(sim_url)
        results["sim_build_s"] = round(build(client, args.policies, args.per_policy), 2)
        wall, cpu = measure(client, sim_proc.pid, [SWEEP], total)
        results["sim_cold_sweep_s"], results["sim_cold_sweep_cpu_s"] = round(wall, 3), round(cpu, 3)
        wall, cpu = measure(
            client,
            sim_proc.pid,
            one_policy(args.policies, args.sim_policy_calls, rng),
            args.per_policy,
        )
        results["sim_policy_s"], results["sim_policy_cpu_s"] = round(wall, 5), round(cpu, 5)
        wall, cpu = measure(client, sim_proc.pid, [SWEEP] * args.sim_sweeps, total)
        results["sim_sweep_s"], results["sim_sweep_cpu_s"] = round(wall, 4), round(cpu, 4)
    finally:
        simbench.stop(sim_proc)
    print(
        f"stand-in cloud: built in {results['sim_build_s']} s; cold sweep "
        f"{results['sim_cold_sweep_s']:.2f} s; one policy {results['sim_policy_s'] * 1000:.2f} "
        f"ms/call ({results['sim_policy_cpu_s'] * 1000:.2f} ms CPU), sweep "
        f"{results['sim_sweep_s'] * 1000:.1f} ms/sweep ({results['sim_sweep_cpu_s'] * 1000:.1f} "
        "ms CPU)",
        flush=True,
    )
    for name in ("policy", "sweep"):
        for unit, label in (("s", "wall"), ("cpu_s", "cpu")):
            ours = results[f"sim_{name}_{unit}"]
            results[f"{name}_{label}_ratio_moto_over_sim"] = (
                round(results[f"moto_{name}_{unit}"] / ours, 1) if ours > 0 else None
            )
    print(
        "ratio plain moto / stand-in cloud: one policy "
        f"{results['policy_wall_ratio_moto_over_sim']}x wall, "
        f"{results['policy_cpu_ratio_moto_over_sim']}x server CPU; sweep "
        f"{results['sweep_wall_ratio_moto_over_sim']}x wall, "
        f"{results['sweep_cpu_ratio_moto_over_sim']}x server CPU (wall includes boto3 parsing "
        "the answer in this process)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
