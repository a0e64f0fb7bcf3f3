"""``spotfleet backtest``: read the inputs (through :mod:`spotfleet_cli.inputs`), run
:func:`spotfleet_engine.backtest.run`, print a rich table and write
``backtest.json`` and ``backtest.png``. The engine side is pure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from spotfleet_cli import consoles, inputs
from spotfleet_engine import backtest, catalog, market, strategies
from spotfleet_engine.backtest import interruptions, prices, report, traces
from spotfleet_engine.risk import protocol as risk_protocol
from spotfleet_operator import api

STRATEGY_NAMES = (
    "on-demand",
    "lowest-price",
    "capacity-optimized",
    "price-capacity-optimized",
    "diversified",
    "spotfleet",
)


#: A problem with the command's inputs (shown to the user, exit code 2).
UsageError = inputs.InputError


def default_window(hist: market.PriceHistory) -> tuple[datetime, datetime]:
    """From the first whole hour after a warm-up (a quarter of the history, at
    most a day, so every pool has a price) to the last whole hour."""
    warm = min(timedelta(days=1), (hist.end - hist.start) / 4)
    a = hist.start + warm
    a = a.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    b = hist.end.replace(minute=0, second=0, microsecond=0)
    return a, b


def make_strategies(
    names: Sequence[str], risk: risk_protocol.RiskModel
) -> list[strategies.Strategy]:
    every: dict[str, strategies.Strategy] = {s.name: s for s in strategies.baselines(risk)}
    every["spotfleet"] = strategies.Spotfleet(risk)
    unknown = [n for n in names if n not in every]
    if unknown:
        raise UsageError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGY_NAMES)}")
    return [every[n] for n in names]


def render_table(result: backtest.ReplayResult) -> Table:
    table = Table(
        title=(
            f"backtest {result.start:%Y-%m-%d %H:%M} .. {result.end:%Y-%m-%d %H:%M} UTC, "
            f"target {result.policy.target:g} {result.policy.unit.value}, "
            f"{result.spot_pools} spot pools"
        )
    )
    for col in (
        "strategy",
        "cost $",
        "OD-equiv $",
        "savings %",
        "interruptions",
        "shortfall unit-h",
        "replacements",
        "penalised $",
        "vs best baseline %",
        "vs oracle %",
        "moves",
        "paid back %",
        "move payback $",
    ):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in report.rows(result):
        table.add_row(
            r["strategy"],
            f"{r['cost']:.2f}",
            f"{r['on_demand_equivalent']:.2f}",
            f"{r['savings_pct']:.1f}",
            f"{r['interruptions']:g}",
            f"{r['shortfall_unit_h']:.1f}",
            str(r["replacements"]),
            f"{r['penalised_cost']:.2f}",
            _pct(r["regret_to_best_baseline_pct"]),
            _pct(r["regret_to_oracle_pct"]),
            "-" if r["moves"] is None else str(r["moves"]),
            "-" if r["moves_paid_back_pct"] is None else f"{r['moves_paid_back_pct']:.1f}",
            "-" if r["move_payback_usd"] is None else f"{r['move_payback_usd']:+.2f}",
        )
    return table


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}"


def render_sensitivity(result: backtest.ReplayResult) -> Table:
    table = Table(title="ranking by penalised cost as the scoring varies (oracle excluded)")
    table.add_column("penalty OD-h", justify="right")
    table.add_column("shortfall x", justify="right")
    table.add_column("ranking, cheapest first")
    for s in report.sensitivity(result):
        table.add_row(
            f"{s['penalty_od_hours']:g}",
            f"{s['shortfall_od_multiple']:g}",
            " < ".join(s["ranking"]),
        )
    return table


def write_plot(doc: dict[str, Any], path: Path) -> None:
    """Cumulative penalised cost and cumulative interruptions over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = doc["timeline"]
    times = [datetime.fromtimestamp(t, UTC) for t in tl["t"]]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    for name, series in tl["cumulative_penalised_cost"].items():
        ax1.plot(times, series, label=name, linestyle="--" if name == "oracle" else "-")
    ax1.set_ylabel("cumulative penalised cost (USD)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    for name, series in tl["cumulative_interruptions"].items():
        ax2.step(times, series, where="post", label=name)
    ax2.set_ylabel("cumulative interruptions")
    ax2.set_ylim(bottom=0)
    ax2.grid(alpha=0.3)
    fig.suptitle(
        f"spotfleet backtest {doc['window']['from'][:16]} .. {doc['window']['to'][:16]}, "
        f"target {doc['policy']['target']:g} {doc['policy']['unit']}"
    )
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def command(
    *,
    price_files: Sequence[Path],
    policy_file: Path,
    advisor_file: Path | None = None,
    start: str | None,
    end: str | None,
    interval_minutes: float,
    out_dir: Path,
    seed: int,
    strategy_names: Sequence[str],
    risk_model: str,
    oracle: bool,
    penalty_od_hours: float,
    shortfall_od_multiple: float,
    drought_hours: float,
    hazard_scale: float,
    spike_probability: float,
    use_traces: bool,
    progress: bool,
    console: Console | None = None,
) -> int:
    """Run a backtest; returns the exit code (2 for a usage error)."""
    con = console or consoles.console()
    try:
        policy = api.to_engine_policy(inputs.load_policy_manifest(policy_file).spec)
        hist = inputs.load_history(price_files, policy.region)
        a, b = default_window(hist)
        t_from = prices.parse_time(start) if start else a
        t_to = prices.parse_time(end) if end else b
        if t_to <= t_from:
            raise UsageError(f"--to {t_to.isoformat()} is not after --from {t_from.isoformat()}")
        risk = inputs.load_risk(risk_model)
        strats = make_strategies(strategy_names or STRATEGY_NAMES, risk)
        config = interruptions.InterruptionConfig(
            seed=seed,
            hazard_scale=hazard_scale,
            drought_hours=drought_hours,
            spike_reclaim_probability=spike_probability,
            use_traces=use_traces,
        )
        bad = config.problems()
        if bad:
            raise UsageError("; ".join(bad))
        cat = catalog.load_bundled(policy.region)
        adv = inputs.load_advisor_history(advisor_file, policy.region)
    except (UsageError, ValueError) as exc:
        con.print(f"[red]error:[/red] {exc}")
        return 2
    scoring = backtest.Scoring(
        penalty_od_hours=penalty_od_hours, shortfall_od_multiple=shortfall_od_multiple
    )
    t0 = time.perf_counter()
    bar = Progress(
        TextColumn("replay"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} decisions"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=con,
        disable=not progress,
    )
    try:
        with bar:
            task = bar.add_task("replay", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = backtest.run(
                policy,
                cat,
                hist,
                strats,
                start=t_from,
                end=t_to,
                advisor=adv,
                interval=timedelta(minutes=interval_minutes),
                config=config,
                scoring=scoring,
                traces=traces.load_bundled_traces() if use_traces else (),
                oracle=oracle,
                progress=tick,
            )
    except ValueError as exc:
        con.print(f"[red]error:[/red] {exc}")
        return 2
    wall = time.perf_counter() - t0
    doc = report.to_dict(result)
    doc["replay_wall_s"] = round(wall, 3)
    doc["sim_hours_per_wall_s"] = round(result.simulated_hours / wall, 3) if wall > 0 else None
    doc["prices"] = [str(p) for p in price_files] or ["bundled:" + market.SPOT_PRICES_2021_FILE]
    doc["policy_file"] = str(policy_file)
    doc["advisor"] = str(advisor_file) if advisor_file else "bundled:" + market.ADVISOR_FILE
    doc["risk_model"] = risk.name
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "backtest.json").write_text(json.dumps(doc, indent=1))
    write_plot(doc, out_dir / "backtest.png")
    con.print(render_table(result))
    for line in report.notes(result):  # advisor snapshot in force, dropped price rows
        con.print(line, markup=False)
    cap = report.capture(result)
    if cap is not None and "spotfleet" in {s.name for s in result.strategies}:
        con.print(f"spotfleet captures {100 * cap:.1f}% of the oracle's penalised saving")
    con.print(render_sensitivity(result))
    con.print(
        f"{result.simulated_hours:.0f} simulated hours in {wall:.1f} s; "
        f"wrote {out_dir / 'backtest.json'} and {out_dir / 'backtest.png'}"
    )
    return 0
