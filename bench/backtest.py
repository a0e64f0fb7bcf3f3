"""The standard backtest scenario; prints the tables and, as its last line, one JSON object.

Scenario: the bundled us-east-1 Linux spot history (2021-03-03 .. 2021-05-31,
hourly decisions), the bundled advisor snapshots and availability traces, seed
0, default scoring, two general-purpose policies (4 GiB per vCPU, x86_64, no
burstable, current generation): 64 vCPU (2-16 vCPU types, >= 2 pools, <= 50 %
per pool) and 1,000 vCPU (4-48 vCPU types, >= 4 pools, <= 25 % per pool),
objective ``balanced``. spotfleet runs the bundled risk model (the XGBoost
spike model combined with the advisor band, ``risk.combined``); the
capacity-optimized and price-capacity-optimized baselines rank pools by the
same model. Also replays the 64-vCPU policy on the risk model's test weeks
(2021-05-10 .. 05-31, after its training and validation windows), the only
part of the history it was not fitted on.

``--history 2015`` or ``--history 2023`` replays instead one of the two other price
histories the engine bundles, which no one here tuned to, with a policy fitted to the
only types they hold (the standard policies have no eligible pool there): 2015
(2015-03-12 .. 08-31, the pre-2017 spiky market; c3.xlarge, m3.medium and r3.large
are eligible) with ``legacy-64vcpu`` (64 vCPU of 1-4 vCPU types with 1.8-8 GiB per
vCPU, previous generations allowed, >= 2 pools, <= 50 % per pool), and 2023
(2023-11-12 .. 12-30; c5a.2xlarge in five zones) with ``c5a-64vcpu`` (64 vCPU of 8-vCPU
types with 2 GiB per vCPU, >= 2 pools, <= 50 % per pool). Same strategies, scoring,
risk model and advisor rule (a snapshot only once it is dated).

Usage: .venv/bin/python bench/backtest.py [--days N] [--json-out PATH]
       [--history 2021|2015|2023] [--seeds 0,1,... [--policy NAME]]
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import importlib.resources
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spotfleet_engine import backtest, catalog, market, model, strategies
from spotfleet_engine.backtest import interruptions, oracle, prices, report, traces
from spotfleet_engine.risk import combined

START = datetime(2021, 3, 3, tzinfo=UTC)
END = datetime(2021, 5, 31, tzinfo=UTC)
OOS_START = datetime(2021, 5, 10, tzinfo=UTC)


def general_purpose(
    target: float, vcpu_max: int, vcpu_min: int, min_pools: int, share: float
) -> model.Policy:
    return model.Policy(
        region="us-east-1",
        target=target,
        unit=model.CapacityUnit.VCPU,
        requirements=model.Requirements(
            vcpu_min=vcpu_min,
            vcpu_max=vcpu_max,
            memory_per_vcpu_min=4.0,
            memory_per_vcpu_max=4.0,
            architectures=frozenset({"x86_64"}),
            burstable="exclude",
            current_generation_only=True,
            exclude_bare_metal=True,
        ),
        objective="balanced",
        min_pools=min_pools,
        max_pool_share_pct=share,
    )


POLICIES = {
    "gp-64vcpu": general_purpose(64, 16, 2, 2, 50.0),
    "gp-1000vcpu": general_purpose(1000, 48, 4, 4, 25.0),
}


def fitted(vcpu: tuple[int, int], gib_per_vcpu: tuple[float, float], current: bool) -> model.Policy:
    """64 vCPU, >= 2 pools, <= 50 % per pool, of the types another history holds."""
    return model.Policy(
        region="us-east-1",
        target=64,
        unit=model.CapacityUnit.VCPU,
        requirements=model.Requirements(
            vcpu_min=vcpu[0],
            vcpu_max=vcpu[1],
            memory_per_vcpu_min=gib_per_vcpu[0],
            memory_per_vcpu_max=gib_per_vcpu[1],
            architectures=frozenset({"x86_64"}),
            burstable="exclude",
            current_generation_only=current,
            exclude_bare_metal=True,
        ),
        objective="balanced",
        min_pools=2,
        max_pool_share_pct=50.0,
    )


@dataclass(frozen=True)
class History:
    """A bundled price history, its replay window and the policies replayed on it."""

    file: str | None  # None: market.load_bundled_history() (the standard one)
    start: datetime
    end: datetime
    policies: dict[str, model.Policy]

    def load(self) -> market.PriceHistory:
        return _load_history(self.file)


@functools.lru_cache(maxsize=4)
def _load_history(file: str | None) -> market.PriceHistory:
    if file is None:
        return market.load_bundled_history()
    path = importlib.resources.files("spotfleet_engine") / "data" / file
    with path.open("rb") as raw, gzip.open(raw, "rt", newline="") as f:
        # the 2015 file names the OS in an "os" column: no product filter
        return prices.history_from_rows(csv.DictReader(f), "us-east-1", None)


HISTORIES = {
    "2021": History(None, START, END, POLICIES),
    "2015": History(
        "spot_price_history_us-east-1_2015-03-11_to_2015-08-31_15series.csv.gz",
        datetime(2015, 3, 12, 11, tzinfo=UTC),
        datetime(2015, 8, 31, 23, tzinfo=UTC),
        {"legacy-64vcpu": fitted((1, 4), (1.8, 8.0), current=False)},
    ),
    "2023": History(
        "spot_price_history_us-east-1_c5a.2xlarge_2023-11-11_to_2023-12-30.csv.gz",
        datetime(2023, 11, 12, 19, tzinfo=UTC),
        datetime(2023, 12, 30, 21, tzinfo=UTC),
        {"c5a-64vcpu": fitted((8, 8), (2.0, 2.0), current=True)},
    ),
}


def run_one(
    name: str,
    policy: model.Policy,
    start: datetime,
    end: datetime,
    config: interruptions.InterruptionConfig | None = None,
    history: str = "2021",
) -> tuple[backtest.ReplayResult, float]:
    cat = catalog.load_bundled("us-east-1")
    hist = HISTORIES[history].load()
    adv = market.load_bundled_advisor("us-east-1")
    risk = combined.load_bundled()
    strats = [*strategies.baselines(risk), strategies.Spotfleet(risk)]
    t0 = time.perf_counter()
    res = backtest.run(
        policy,
        cat,
        hist,
        strats,
        start=start,
        end=end,
        advisor=adv,
        config=config or interruptions.InterruptionConfig(),
        traces=traces.load_bundled_traces(),
    )
    return res, time.perf_counter() - t0


COLUMNS = (
    ("strategy", "{:26s}", "{:26s}"),
    ("cost", "{:>10s}", "{:10.2f}"),
    ("on_demand_equivalent", "{:>11s}", "{:11.2f}"),
    ("savings_pct", "{:>6s}", "{:6.1f}"),
    ("interruptions", "{:>6s}", "{:6.1f}"),
    ("shortfall_unit_h", "{:>10s}", "{:10.1f}"),
    ("replacements", "{:>5s}", "{:5d}"),
    ("penalised_cost", "{:>12s}", "{:12.2f}"),
    ("regret_to_best_baseline_pct", "{:>9s}", "{:+9.3f}"),
    ("regret_to_oracle_pct", "{:>9s}", "{:+9.3f}"),
    ("moves", "{:>5s}", "{:5d}"),
    ("moves_paid_back_pct", "{:>6s}", "{:6.1f}"),
    ("move_payback_usd", "{:>10s}", "{:+10.2f}"),
)
HEADS = ("strategy", "cost $", "OD-equiv $", "sav %", "intr", "short u-h", "repl", "penalised $",
         "vs base%", "vs orac%", "moves", "paid %", "payback $")  # fmt: skip
#: Per-strategy keys of the JSON's "strategies" dicts and of ``--seeds``' per-seed dicts.
MOVE_KEYS = ("moves", "moves_paid_back_pct", "move_payback_usd")


def table(name: str, res: backtest.ReplayResult) -> str:
    lines = [
        f"== {name}: {res.start:%Y-%m-%d} .. {res.end:%Y-%m-%d}, {res.spot_pools} spot pools, "
        f"reclaims {res.reclaims_by_source}",
        " ".join(h[1].format(t) for h, t in zip(COLUMNS, HEADS, strict=True)),
    ]
    for r in report.rows(res):
        lines.append(
            " ".join(
                fmt.format(r[key]) if r[key] is not None else head.format("-")
                for key, head, fmt in COLUMNS
            )
        )
    lines.extend(report.notes(res))  # the advisor snapshot in force, dropped price rows
    cap = report.capture(res)
    if cap is not None:
        lines.append(f"spotfleet captures {100 * cap:.1f}% of the oracle's penalised saving")
    lines.append("sensitivity (rank by penalised cost; oracle excluded):")
    for s in report.sensitivity(res):
        lines.append(
            f"  penalty {s['penalty_od_hours']:g} OD-h, shortfall x{s['shortfall_od_multiple']:g}: "
            + " < ".join(s["ranking"])
        )
    return "\n".join(lines)


def static_bound(
    policy: model.Policy, start: datetime, end: datetime, history: str = "2021"
) -> float:
    """USD of the cheapest fleet held unchanged over the whole window, in hindsight:
    the oracle's linear relaxation with each pool's real bill summed over the window,
    reclaims ignored. No strategy that never moves can pay less on price alone."""
    cat = catalog.load_bundled("us-east-1")
    grid = prices.decision_grid(start, end, timedelta(hours=1))
    u = prices.build_universe(policy, cat, HISTORIES[history].load(), grid)

    def od(t: str) -> float:
        return u.od_price.get(t, cat.on_demand_usd_per_hour.get(t, 0.0))

    def weight(t: str) -> float:
        return u.weight[t] if t in u.weight else cat.types[t].units(policy.unit)

    iv = oracle.HindsightOracle().interval(
        policy,
        (int(grid[-1]) - int(grid[0])) / 3600.0,
        u.spot,
        u.interval_cost.sum(axis=1).tolist(),
        [None] * len(u.spot),
        u.on_demand,
        od,
        weight,
        0.0,
        3.0 * u.ref_unit_od_price(),
    )
    return iv.billed


def goals(res: backtest.ReplayResult) -> dict[str, Any]:
    sc, ref = res.scoring, res.ref_unit_od
    sf = res.by_name("spotfleet")
    aws = ["lowest-price", "capacity-optimized", "price-capacity-optimized", "diversified"]
    cheaper = all(sf.penalised(sc, ref) < res.by_name(n).penalised(sc, ref) for n in aws)
    co = res.by_name("capacity-optimized").interruptions
    cap = report.capture(res)
    paid = 1.0 if sf.moves == 0 else sf.moves_paid_back / sf.moves
    return {
        "penalised_below_every_aws_baseline": cheaper,
        "interruptions_le_co_plus_10pct": sf.interruptions <= co * 1.10,
        "oracle_capture": None if cap is None else round(cap, 4),
        "oracle_capture_ge_90pct": cap is not None and cap >= 0.90,
        # voluntary moves (replay module doc: realised payback over the horizon)
        "spotfleet_moves": sf.moves,
        "spotfleet_moves_paid_back_pct": None if sf.moves == 0 else round(100 * paid, 2),
        "spotfleet_move_payback_usd": round(sf.move_payback_usd, 2),
        "moves_paid_back_ge_80pct": paid >= 0.80,
        "move_payback_sum_positive": sf.moves == 0 or sf.move_payback_usd > 0.0,
    }


def seeds(policy_name: str, seed_list: list[int], days: float | None, history: str) -> int:
    """Penalised cost and interruptions of one policy under several reclaim seeds."""
    h = HISTORIES[history]
    end = h.end if days is None else h.start + timedelta(days=days)
    out: dict[str, Any] = {"history": history, "policy": policy_name, "seeds": {}}
    for seed in seed_list:
        cfg = interruptions.InterruptionConfig(seed=seed)
        res, _wall = run_one(policy_name, h.policies[policy_name], h.start, end, cfg, history)
        print(table(f"{policy_name} seed {seed}", res), flush=True)
        out["seeds"][seed] = {
            r["strategy"]: {
                "penalised_cost": r["penalised_cost"],
                "interruptions": r["interruptions"],
            }
            | {k: r[k] for k in MOVE_KEYS}
            for r in report.rows(res)
        } | {"goals": goals(res)}
    out["mean"] = seed_means(out["seeds"])
    print(json.dumps(out, separators=(",", ":")))
    return 0


def seed_means(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per strategy, the mean penalised cost, interruptions, moves and move payback sum
    over the seeds (None where a seed has none: the oracle's moves), and the goals read
    on those means (the expectation the single standard seed samples once)."""
    names = [n for n in next(iter(per_seed.values())) if n != "goals"]
    n = len(per_seed)

    def avg(name: str, key: str) -> float | None:
        vals = [s[name].get(key) for s in per_seed.values()]
        if any(v is None for v in vals):
            return None
        return round(sum(vals) / n, 2)

    mean: dict[str, Any] = {
        name: {
            key: avg(name, key)
            for key in ("penalised_cost", "interruptions", "moves", "move_payback_usd")
        }
        for name in names
    }
    aws = ["lowest-price", "capacity-optimized", "price-capacity-optimized", "diversified"]
    sf = mean["spotfleet"]
    mean["goals"] = {
        "seeds": n,
        "penalised_below_every_aws_baseline": all(
            sf["penalised_cost"] < mean[a]["penalised_cost"] for a in aws
        ),
        "interruptions_le_co_plus_10pct": sf["interruptions"]
        <= 1.10 * mean["capacity-optimized"]["interruptions"],
        "seeds_spotfleet_interruptions_le_co_plus_10pct": sum(
            s["spotfleet"]["interruptions"] <= 1.10 * s["capacity-optimized"]["interruptions"]
            for s in per_seed.values()
        ),
    }
    print(
        f"mean over {n} seeds (penalised $ / interruptions): "
        + ", ".join(
            f"{k} {v['penalised_cost']:.2f} / {v['interruptions']:.2f}"
            for k, v in mean.items()
            if k != "goals"
        ),
        flush=True,
    )
    return mean


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=None, help="shorten the window (smoke runs)")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument(
        "--seeds",
        type=str,
        default=None,
        help="comma-separated reclaim seeds: replay only these seeds of --policy "
        "(robustness check; not the standard scenario)",
    )
    ap.add_argument(
        "--history",
        choices=sorted(HISTORIES),
        default="2021",
        help="the bundled price history to replay (module doc); 2021 is the standard scenario",
    )
    every = sorted({n for h in HISTORIES.values() for n in h.policies})
    ap.add_argument(
        "--policy", choices=every, default=None, help="with --seeds (default: the history's first)"
    )
    args = ap.parse_args()
    h = HISTORIES[args.history]
    if args.seeds is not None:
        name = args.policy or next(iter(h.policies))
        if name not in h.policies:
            ap.error(f"--policy {name} is not replayed on --history {args.history}: "
                     f"choose one of {', '.join(h.policies)}")  # fmt: skip
        return seeds(name, [int(x) for x in args.seeds.split(",")], args.days, args.history)
    end = h.end if args.days is None else h.start + timedelta(days=args.days)
    out: dict[str, Any] = {
        "scenario": {
            "history": args.history,
            "from": h.start.isoformat(),
            "to": end.isoformat(),
            "seed": 0,
        }
    }
    per_policy: dict[str, Any] = {}
    speeds: dict[str, float] = {}
    full: dict[str, Any] = {}
    runs = [(n, p, h.start, end) for n, p in h.policies.items()]
    if args.history == "2021":
        runs.append(("gp-64vcpu-oos", POLICIES["gp-64vcpu"], OOS_START, END))
    for name, pol, a, b in runs:
        res, wall = run_one(name, pol, a, b, history=args.history)
        print(table(name, res), flush=True)
        bound = static_bound(pol, a, b, args.history)
        print(
            f"best fleet held unchanged all window, in hindsight (price only, relaxed): "
            f"${bound:,.2f}",
            flush=True,
        )
        speeds[name] = round(res.simulated_hours / wall, 2)
        print(
            f"replay: {res.simulated_hours:.0f} simulated h in {wall:.1f} s wall "
            f"({speeds[name]} sim h/s)",
            flush=True,
        )
        per_policy[name] = {
            "strategies": {
                r["strategy"]: {
                    k: r[k]
                    for k in (
                        "cost",
                        "savings_pct",
                        "interruptions",
                        "shortfall_unit_h",
                        "penalised_cost",
                        *MOVE_KEYS,
                    )
                }
                for r in report.rows(res)
            },
            "goals": goals(res),
            "static_hindsight_bound": round(bound, 2),
            "wall_s": round(wall, 2),
        }
        full[name] = report.to_dict(res)
    out["policies"] = per_policy
    out["sim_hours_per_wall_s"] = speeds
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(full, indent=1))
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
