"""The ``spotfleet`` toolbox: recommend, backtest, train, evaluate, sim, demo (and run).

Each sub-command is a thin shell over a function in its own module; heavy
imports happen inside the command so ``spotfleet --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    name="spotfleet",
    help="Run EC2 spot fleets from Kubernetes: the operator, its decision engine and tools.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the spotfleet version."""
    import spotfleet_operator

    typer.echo(spotfleet_operator.__version__)


@app.command()
def train(
    prices: list[Path] = typer.Option(
        None, "--prices", help="spot price CSV(s); default: bundled 2021 us-east-1"
    ),
    advisor: list[Path] = typer.Option(
        None, "--advisor", help="advisor CSV/JSON; default: bundled"
    ),
    out: Path = typer.Option(Path("model.json"), "--out", help="where to write the artifact"),
    horizon: float = typer.Option(24.0, help="label horizon, hours"),
    threshold: float = typer.Option(0.05, help="relative price rise that counts as a spike"),
    seed: int = typer.Option(0),
    nthread: int = typer.Option(2, help="threads (fixed for reproducible results)"),
    from_store: str | None = typer.Option(
        None,
        "--from-store",
        help="train on the price history ingested into this store (DATABASE_URL); writes "
        "a model_versions row and promotes the model when it passes the gate",
    ),
    region: str = typer.Option("us-east-1", "--region", help="region of the stored prices"),
    test_days: float = typer.Option(7.0, "--test-days", help="--from-store: held-out last days"),
    val_days: float = typer.Option(7.0, "--val-days", help="--from-store: validation days"),
    max_ece: float = typer.Option(
        0.05, "--max-ece", help="--from-store: promotion needs ECE at most this"
    ),
    report: Path | None = typer.Option(None, "--report", help="--from-store: verdict JSON"),
) -> None:
    """Train the interruption-risk model on a time-ordered split and write its artifact."""
    if from_store is not None:
        from spotfleet_cli.commands import train_store

        train_store.command(
            from_store,
            region,
            out,
            horizon,
            threshold,
            test_days,
            val_days,
            max_ece,
            seed,
            nthread,
            report=report,
        )
        return
    from spotfleet_cli.commands import risk as risk_cli

    risk_cli.train_command(prices, advisor, out, horizon, threshold, seed, nthread)


@app.command()
def evaluate(
    model: Path = typer.Option(None, "--model", help="artifact; default: the bundled model"),
    prices: list[Path] = typer.Option(
        None, "--prices", help="price CSV(s), each scored on its own"
    ),
    advisor: list[Path] = typer.Option(
        None, "--advisor", help="advisor CSV/JSON; default: bundled"
    ),
    report: Path = typer.Option(Path("risk_report.json"), "--report", help="JSON report path"),
    png: Path = typer.Option(Path("risk_report.png"), "--png", help="ROC + calibration PNG"),
    nthread: int = typer.Option(2),
    preemption: bool = typer.Option(
        True, help="also score the bundled SkyPilot/Bamboo preemption traces"
    ),
    preemption_horizon: float = typer.Option(24.0, help="SkyPilot preemption horizon, hours"),
    region: str = typer.Option(
        None, "--region", help="region of the price rows; default: each file's own"
    ),
) -> None:
    """Score the model and its baselines (AUC, AP, Brier, calibration) on price history,
    overall and on onset rows (no rise in the past 72 h)."""
    from rich.console import Console

    from spotfleet_cli import inputs
    from spotfleet_cli.commands import risk as risk_cli

    try:
        risk_cli.evaluate_command(
            model, prices, advisor, report, png, nthread, preemption, preemption_horizon, region
        )
    except (inputs.InputError, ValueError) as exc:  # a file the command cannot score
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def run(ctx: typer.Context) -> None:
    """Run the operator (Kopf). Its flags: `spotfleet run --help`."""
    from spotfleet_operator import main as operator_main

    raise typer.Exit(operator_main.run_command(ctx.args))


@app.command()
def recommend(
    file: Path = typer.Option(..., "--file", "-f", help="SpotPolicy manifest (YAML or JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    at: str | None = typer.Option(
        None, "--at", help="ISO time in the bundled 2021 history (default: its latest)."
    ),
    risk_model: str = typer.Option(
        "advisor", "--risk-model", help="'advisor', 'bundled' (XGBoost) or a model path."
    ),
) -> None:
    """Show the mix the engine would run for a SpotPolicy, on the bundled market data."""
    from spotfleet_cli.commands import recommend as recommend_mod

    raise typer.Exit(recommend_mod.command(file, as_json, at, risk_model))


@app.command()
def sim(
    port: int = typer.Option(5000, "--port", help="Loopback port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    prices: Path | None = typer.Option(
        None, "--prices", help="Price-history CSV (default: bundled 2021 us-east-1 Linux)."
    ),
    history_start: str | None = typer.Option(
        None, "--history-start", help="History time the clock starts at (ISO-8601 UTC)."
    ),
    speed: float = typer.Option(1.0, "--speed", help="Sim seconds per wall second."),
    notice_seconds: float = typer.Option(
        120.0, "--notice-seconds", help="Sim seconds from interruption warning to termination."
    ),
    hazard: bool = typer.Option(False, "--hazard", help="Interrupt at advisor-band rates."),
    hazard_multiplier: float = typer.Option(1.0, "--hazard-multiplier", help="Scale hazard."),
    verbose: bool = typer.Option(False, "--verbose", help="Log every request."),
) -> None:
    """Run the stand-in cloud (moto + spot-market layer) for demos, trials and CI (docs/sim.md)."""
    import signal
    import subprocess
    import sys

    # The operator never imports the stand-in cloud (import-linter): run it as a process.
    argv = [sys.executable, "-m", "spotfleet_sim", "--port", str(port), "--host", host]
    argv += ["--speed", str(speed), "--notice-seconds", str(notice_seconds)]
    if prices is not None:
        argv += ["--prices", str(prices)]
    if history_start is not None:
        argv += ["--history-start", history_start]
    if hazard:
        argv += ["--hazard", "--hazard-multiplier", str(hazard_multiplier)]
    if verbose:
        argv.append("--verbose")
    proc = subprocess.Popen(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    raise typer.Exit(code)


@app.command()
def backtest(
    prices: list[Path] = typer.Option(
        [],
        "--prices",
        help="describe-spot-price-history CSV(s), gzip or plain; repeatable "
        "(default: the bundled 2021 us-east-1 Linux history).",
    ),
    policy: Path = typer.Option(..., "--policy", help="SpotPolicy manifest (YAML or JSON)."),
    advisor: Path | None = typer.Option(
        None, "--advisor", help="Spot Advisor snapshots CSV (default: the bundled ones)."
    ),
    start: str | None = typer.Option(None, "--from", help="Window start, ISO-8601 (UTC)."),
    end: str | None = typer.Option(None, "--to", help="Window end, ISO-8601 (UTC)."),
    interval_minutes: float = typer.Option(60.0, "--interval-minutes", help="Decision interval."),
    out: Path = typer.Option(Path("results"), "--out", help="Directory for JSON and PNG."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated reclaims."),
    strategy: list[str] = typer.Option(
        [], "--strategy", help="Strategies to run (repeatable; default: all)."
    ),
    risk_model: str = typer.Option(
        "bundled", "--risk-model", help="'bundled' (XGBoost), 'advisor' or a model path."
    ),
    no_oracle: bool = typer.Option(False, "--no-oracle", help="Skip the hindsight bound."),
    penalty_od_hours: float = typer.Option(
        1.0, "--penalty-od-hours", help="Penalty per interruption, in hours of its on-demand price."
    ),
    shortfall_od_multiple: float = typer.Option(
        3.0, "--shortfall-multiple", help="Shortfall charge, x cheapest on-demand $/unit-hour."
    ),
    drought_hours: float = typer.Option(
        2.0, "--drought-hours", help="Hours a pool has no capacity after a reclaim."
    ),
    hazard_scale: float = typer.Option(1.0, "--hazard-scale", help="Scale the advisor hazard."),
    spike_probability: float = typer.Option(
        0.5, "--spike-reclaim-probability", help="Reclaim chance per price spike (0 = off)."
    ),
    no_traces: bool = typer.Option(False, "--no-traces", help="Ignore real availability traces."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Replay spot price history and compare allocation strategies (docs/backtest.md)."""
    from spotfleet_cli.commands import backtest as backtest_cli

    raise typer.Exit(
        backtest_cli.command(
            price_files=prices,
            policy_file=policy,
            advisor_file=advisor,
            start=start,
            end=end,
            interval_minutes=interval_minutes,
            out_dir=out,
            seed=seed,
            strategy_names=strategy,
            risk_model=risk_model,
            oracle=not no_oracle,
            penalty_od_hours=penalty_od_hours,
            shortfall_od_multiple=shortfall_od_multiple,
            drought_hours=drought_hours,
            hazard_scale=hazard_scale,
            spike_probability=spike_probability,
            use_traces=not no_traces,
            progress=not no_progress,
        )
    )


@app.command()
def report(
    policy: str = typer.Option(..., "--policy", help="namespace/name"),
    start: str | None = typer.Option(
        None, "--from", help="ISO date/time, UTC (default: 30 days back)"
    ),
    end: str | None = typer.Option(None, "--to", help="ISO date/time, UTC (default: now)"),
    url: str | None = typer.Option(
        None, "--database-url", help="the store (default: $SPOTFLEET_DATABASE_URL)"
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts"),
    as_csv: bool = typer.Option(False, "--csv", help="CSV for finance"),
    refresh: bool = typer.Option(
        False, "--refresh", help="roll the ledger up to now first (writes the store)"
    ),
) -> None:
    """Cost, on-demand equivalent, savings, interruptions and replacements of a policy, per
    day and in total, from the store's savings ledger."""
    from spotfleet_cli.commands import report as report_mod

    raise typer.Exit(report_mod.command(url, policy, start, end, as_json, as_csv, refresh))


def _db_app() -> typer.Typer:
    from spotfleet_cli.commands import db as db_mod

    return db_mod.app


app.add_typer(_db_app(), name="db")


@app.command()
def demo(
    duration: float = typer.Option(
        20.0, help="Seconds to keep watching the fleets after the scenario."
    ),
    keep: bool = typer.Option(False, "--keep", help="Leave everything running until Ctrl-C."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the summary as JSON here."),
    live: bool = typer.Option(True, "--live/--no-live", help="Live table (on a terminal)."),
    speed: float = typer.Option(60.0, help="Market clock speed (market seconds per second)."),
) -> None:
    """The whole product locally: control plane, stand-in cloud, operator, two policies."""
    from spotfleet_cli.commands import demo as demo_mod

    demo_mod.run(
        demo_mod.Options(duration=duration, keep=keep, json_out=json_out, live=live, speed=speed)
    )


def main(argv: list[str] | None = None) -> None:
    """Run the toolbox on ``argv`` (default: the process's arguments); ``spotfleet``
    (:mod:`spotfleet_operator.main`) hands every sub-command but ``run`` here."""
    app(args=argv, prog_name="spotfleet")


if __name__ == "__main__":
    main()
