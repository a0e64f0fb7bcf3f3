"""What a backtest reports: per-strategy totals, the oracle capture, and how the
ranking moves when the scoring knobs move (so no one has to trust our defaults).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from spotfleet_engine.backtest import prices, replay

SPOTFLEET = "spotfleet"
ORACLE = "oracle"
#: Penalty (hours of on-demand price per reclaimed instance) values the sensitivity table tries.
SENSITIVITY_PENALTY_HOURS: tuple[float, ...] = (0.0, 1.0, 4.0)
#: Shortfall multiples (x cheapest on-demand USD per unit-hour) the sensitivity table tries.
SENSITIVITY_SHORTFALL_MULTIPLES: tuple[float, ...] = (1.0, 3.0, 10.0)


def rows(result: replay.ReplayResult) -> list[dict[str, Any]]:
    """One row per strategy (oracle last) under the result's scoring.

    ``cost`` is what EC2 billed (USD); ``on_demand_equivalent`` the same
    instance-seconds at on-demand prices; ``savings_pct`` 1 - cost/that;
    ``penalised_cost`` adds the interruption penalty and the shortfall charge;
    ``regret_to_best_baseline_pct`` is penalised cost over the best baseline's (every
    strategy but spotfleet and the oracle) minus 1, in percent, and
    ``regret_to_oracle_pct`` the same over the oracle's (None without one). A strategy
    that costs more than all-on-demand shows it here, whatever its savings_pct.
    ``moves`` counts the decisions with a voluntary termination, ``moves_paid_back_pct``
    the percent of them whose realised payback over the horizon was > 0 (None without
    moves) and ``move_payback_usd`` the sum of those paybacks (see
    :mod:`spotfleet_engine.backtest.replay`); all three are None for the oracle.
    """
    out: list[dict[str, Any]] = []
    every = [*result.strategies, *([result.oracle] if result.oracle else [])]
    pen = {s.name: s.penalised(result.scoring, result.ref_unit_od) for s in every}
    base = [v for k, v in pen.items() if k not in (SPOTFLEET, ORACLE)]
    best = min(base) if base else None
    oracle = pen.get(ORACLE) if result.oracle is not None else None
    for s in every:
        out.append(
            {
                "strategy": s.name,
                "cost": round(s.billed, 2),
                "on_demand_equivalent": round(s.on_demand_equivalent, 2),
                "savings_pct": round(s.savings_pct, 2),
                "interruptions": round(s.interruptions, 2),
                "shortfall_unit_h": round(s.shortfall_unit_h, 2),
                "replacements": s.replacements,
                "voluntary_terminations": s.voluntary_terminations,
                "failed_launches": s.failed_launches,
                "penalised_cost": round(pen[s.name], 2),
                "regret_to_best_baseline_pct": _regret(pen[s.name], best),
                "regret_to_oracle_pct": _regret(pen[s.name], oracle),
                **_moves(s, s is result.oracle),
            }
        )
    return out


def _moves(s: replay.StrategyResult, is_oracle: bool) -> dict[str, Any]:
    """The move-payback columns of one row (None for the oracle, which does not move)."""
    if is_oracle:
        return {"moves": None, "moves_paid_back_pct": None, "move_payback_usd": None}
    pct = None if s.moves == 0 else round(100.0 * s.moves_paid_back / s.moves, 2)
    return {
        "moves": s.moves,
        "moves_paid_back_pct": pct,
        "move_payback_usd": round(s.move_payback_usd, 2),
    }


def _regret(cost: float, reference: float | None) -> float | None:
    """100 x (cost / reference - 1), rounded to 3 decimals; None without a reference."""
    if reference is None or reference <= 0:
        return None
    return round(100.0 * (cost / reference - 1.0), 3)


def capture(result: replay.ReplayResult, name: str = SPOTFLEET) -> float | None:
    """Share (0..1) of the oracle's penalised saving over on-demand-only that
    ``name`` achieves; None without an oracle or an on-demand run."""
    if result.oracle is None:
        return None
    try:
        od = result.by_name("on-demand").penalised(result.scoring, result.ref_unit_od)
        me = result.by_name(name).penalised(result.scoring, result.ref_unit_od)
    except KeyError:
        return None
    best = result.oracle.penalised(result.scoring, result.ref_unit_od)
    if od - best <= 0:
        return None
    return (od - me) / (od - best)


def sensitivity(
    result: replay.ReplayResult,
    penalties: Sequence[float] = SENSITIVITY_PENALTY_HOURS,
    multiples: Sequence[float] = SENSITIVITY_SHORTFALL_MULTIPLES,
) -> list[dict[str, Any]]:
    """Ranking of the strategies (oracle excluded: it is a bound, computed under
    the default scoring only) by penalised cost for every pair of knobs."""
    out: list[dict[str, Any]] = []
    for pen, mult in itertools.product(penalties, multiples):
        sc = replay.Scoring(penalty_od_hours=pen, shortfall_od_multiple=mult)
        costs = {s.name: s.penalised(sc, result.ref_unit_od) for s in result.strategies}
        ranking = sorted(costs, key=lambda n: (costs[n], n))
        out.append(
            {
                "penalty_od_hours": pen,
                "shortfall_od_multiple": mult,
                "ranking": ranking,
                "penalised_cost": {n: round(c, 2) for n, c in costs.items()},
            }
        )
    return out


def advisor_in_force(result: replay.ReplayResult) -> list[dict[str, Any]]:
    """Which advisor snapshot the decisions saw, as runs: ``snapshot`` (its date, or
    None: before the first snapshot, no band known), ``from``/``to`` (UTC) and
    ``decisions``. Never a snapshot dated after the decision it served."""
    return [
        {
            "snapshot": None if d is None else d.isoformat(),
            "from": datetime.fromtimestamp(a, UTC).isoformat(),
            "to": datetime.fromtimestamp(b, UTC).isoformat(),
            "decisions": n,
        }
        for d, a, b, n in result.advisor_in_force
    ]


def notes(result: replay.ReplayResult) -> list[str]:
    """Lines a reader must see next to the table: the advisor snapshot in force and
    the price rows the loader dropped."""
    out: list[str] = []
    for run in advisor_in_force(result):
        which = (
            f"advisor snapshot {run['snapshot']}"
            if run["snapshot"]
            else "no advisor snapshot (none dated at or before; bands unknown)"
        )
        span = f"{run['from'][:16]} .. {run['to'][:16]}"
        out.append(f"{which} in force {span} ({run['decisions']} decisions)")
    if result.rejected_price_rows:
        text = prices.rejected_text(result.rejected_price_rows)
        out.append(f"dropped {text} (unusable spot prices)")
    return out


def to_dict(result: replay.ReplayResult) -> dict[str, Any]:
    """The whole report, JSON-safe."""
    cap = capture(result)
    return {
        "window": {
            "from": result.start.isoformat(),
            "to": result.end.isoformat(),
            "interval_s": int(result.interval.total_seconds()),
            "simulated_hours": result.simulated_hours,
        },
        "policy": {
            "region": result.policy.region,
            "target": result.policy.target,
            "unit": result.policy.unit.value,
        },
        "pools": {"spot": result.spot_pools, "on_demand": result.on_demand_pools},
        "scoring": asdict(result.scoring)
        | {
            "shortfall_usd_per_unit_h": round(
                result.scoring.shortfall_od_multiple * result.ref_unit_od, 6
            )
        },
        "interruption_model": asdict(result.config),
        "reclaims_by_source": result.reclaims_by_source,
        "advisor_in_force": advisor_in_force(result),
        "rejected_price_rows": dict(result.rejected_price_rows),
        "notes": notes(result),
        "strategies": rows(result),
        "spotfleet_oracle_capture": None if cap is None else round(cap, 4),
        "sensitivity": sensitivity(result),
        "timeline": {
            "t": result.grid[1:],
            "cumulative_penalised_cost": {
                s.name: [
                    round(x, 4)
                    for x in itertools.accumulate(
                        s.penalised_k(result.scoring, result.ref_unit_od).tolist()
                    )
                ]
                for s in [*result.strategies, *([result.oracle] if result.oracle else [])]
            },
            "cumulative_interruptions": {
                s.name: list(itertools.accumulate(s.interruptions_k)) for s in result.strategies
            },
        },
    }
