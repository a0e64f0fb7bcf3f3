"""The ``spotfleet`` command: run, recommend, backtest, train, evaluate, sim, demo.

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
) -> None:
    """Train the interruption-risk model on a time-ordered split and write its artifact."""
    from spotfleet_operator import risk_cli

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
) -> None:
    """Score the model and its baselines (AUC, AP, Brier, calibration) on price history."""
    from spotfleet_operator import risk_cli

    risk_cli.evaluate_command(model, prices, advisor, report, png, nthread)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
