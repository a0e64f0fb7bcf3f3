"""Benchmark ``planner.decide`` on the full bundled us-east-1 catalog.

Builds the catalog and market of 2021-04-15 00:00 UTC from the bundled data:
spot pools for every (type, zone) with a 2021 price plus on-demand pools for
the same types in every zone that offers them (about 2,500 pools), then runs
``decide`` for targets of 64, 1,000 and 10,000 vCPU under each objective, on
one CPU core, and compares each plan's objective (expected cost per hour)
with the unpruned MILP over every eligible pool.

Prints one line per case, then one JSON object (last line) with ``pools``,
``p50_ms``/``p99_ms`` of the 1,000-vCPU balanced case (wall clock; also
``cpu_p50_ms``/``cpu_p99_ms``, the process CPU time, which a busy shared
machine inflates less, and ``loadavg_1m`` to judge the figures by), ``max_gap_pct`` (worst
relative objective gap over all cases; negative means the pruned solve found
a cheaper plan within the solver's 0.01% gap tolerance) and ``cases``.

Usage: .venv/bin/python bench/decide.py [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from spotfleet_engine import catalog, market, model, planner
from spotfleet_engine.risk import advisor

NOW = datetime(2021, 4, 15, tzinfo=UTC)
TARGETS = (64.0, 1000.0, 10000.0)
OBJECTIVES: tuple[model.Objective, ...] = ("lowestCost", "balanced", "lowestInterruption")


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence C-level writes to fd 1 (scipy's bundled HiGHS prints a debug line)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[k]


#: Instance requirements per profile: "open" lets every type in (the full
#: catalog, the headline figures); "noBurstable" is a common production filter.
PROFILES: dict[str, model.Requirements] = {
    "open": model.Requirements(),
    "noBurstable": model.Requirements(burstable="exclude", vcpu_min=2),
}


def policy_for(target: float, objective: model.Objective, profile: str) -> model.Policy:
    """A typical production policy: vCPU target, 10% on-demand above base,
    at least 4 pools, none above 25% of capacity."""
    return model.Policy(
        region="us-east-1",
        target=target,
        unit=model.CapacityUnit.VCPU,
        objective=objective,
        on_demand_percentage_above_base=10.0,
        min_pools=4,
        max_pool_share_pct=25.0,
        requirements=PROFILES[profile],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=100, help="timed decisions per case")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    history = market.load_bundled_history()
    snap = market.snapshot_at(history, NOW)
    cat = catalog.load_bundled("us-east-1").restricted_to({t for t, _ in snap.spot_history})
    risk = advisor.AdvisorBandRisk(horizon_hours=24.0)
    fleet = model.Fleet()

    cases: list[dict[str, object]] = []
    pools = 0
    for profile, target, objective in itertools.product(PROFILES, TARGETS, OBJECTIVES):
        pol = policy_for(target, objective, profile)
        with quiet_stdout():
            plan = planner.decide(pol, cat, snap, fleet, risk, NOW)  # warm-up
            times: list[float] = []
            cpu: list[float] = []
            gc.collect()
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                again = planner.decide(pol, cat, snap, fleet, risk, NOW)
                cpu.append((time.process_time() - c0) * 1000.0)
                times.append((time.perf_counter() - t0) * 1000.0)
                assert again.plan_hash() == plan.plan_hash(), "decide is not deterministic"
            t0 = time.perf_counter()
            full = planner.decide(
                pol,
                cat,
                snap,
                fleet,
                risk,
                NOW,
                options=planner.Options(prune=False, presolve=True),
            )
            full_ms = (time.perf_counter() - t0) * 1000.0
        pools = plan.stats.pools_total
        ref = full.expected_cost_per_hour
        gap = 100.0 * (plan.expected_cost_per_hour - ref) / ref if ref > 0 else 0.0
        case: dict[str, object] = {
            "profile": profile,
            "pools": pools,
            "target_vcpu": target,
            "objective": objective,
            "outcome": plan.outcome,
            "pools_after_prune": plan.stats.pools_after_prune,
            "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(percentile(times, 99), 2),
            "cpu_p50_ms": round(statistics.median(cpu), 2),
            "cpu_p99_ms": round(percentile(cpu, 99), 2),
            "unpruned_ms": round(full_ms, 1),
            "expected_cost_per_hour": round(plan.expected_cost_per_hour, 6),
            "unpruned_expected_cost_per_hour": round(ref, 6),
            "gap_pct": round(gap, 4),
            "pools_used": len(plan.targets),
            "cost_per_hour": round(plan.cost_per_hour, 4),
            "savings_pct": round(plan.savings_pct, 2),
        }
        cases.append(case)
        print(
            f"{profile:<11} {target:>7g} vCPU {objective:<18} "
            f"pools {pools} -> {case['pools_after_prune']:>4}"
            f"  p50 {case['p50_ms']:6.2f} ms  p99 {case['p99_ms']:6.2f} ms"
            f"  (cpu {case['cpu_p50_ms']:6.2f}/{case['cpu_p99_ms']:6.2f})"
            f"  unpruned {case['unpruned_ms']:7.1f} ms  gap {gap:+.4f}%"
            f"  ${plan.cost_per_hour:.4f}/h in {len(plan.targets)} pools ({plan.outcome})",
            flush=True,
        )
    head = next(
        c
        for c in cases
        if c["profile"] == "open" and c["target_vcpu"] == 1000.0 and c["objective"] == "balanced"
    )
    print(
        json.dumps(
            {
                "pools": head["pools"],
                "p50_ms": head["p50_ms"],
                "p99_ms": head["p99_ms"],
                "cpu_p50_ms": head["cpu_p50_ms"],
                "cpu_p99_ms": head["cpu_p99_ms"],
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "max_gap_pct": max(float(str(c["gap_pct"])) for c in cases),
                "cases": cases,
            }
        )
    )


if __name__ == "__main__":
    main()
