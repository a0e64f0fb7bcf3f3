"""The ``spotfleet`` command: run, recommend, backtest, train, evaluate, sim, demo.

Each sub-command is a thin shell over a function in its own module; heavy
imports happen inside the command so ``spotfleet --help`` stays fast.
"""

from __future__ import annotations

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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
