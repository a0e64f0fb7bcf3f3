"""The ``spotfleet`` entry point.

``spotfleet run`` (the operator) is served here with nothing but the operator's own
dependencies, so the operator image needs no tool library. Every other sub-command
belongs to the toolbox (:mod:`spotfleet_cli`, the ``spotfleet[tools]`` extra) and is
handed to it; without it installed they fail with a clear message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import spotfleet_operator
from spotfleet_operator import config

TOOLS_MISSING = (
    "spotfleet: '{cmd}' is part of the toolbox, which is not installed here; "
    "this installation runs 'spotfleet run' only (pip install 'spotfleet[tools]' adds the rest)"
)


def run_parser() -> argparse.ArgumentParser:
    """The flags of ``spotfleet run``: one per :class:`config.OperatorConfig` field, grouped
    as the config groups them, plus ``--kubeconfig`` and ``--all-namespaces``."""
    p = argparse.ArgumentParser(
        prog="spotfleet run",
        description="Run the operator: watch SpotPolicies and keep their EC2 fleets at the "
        "cheapest safe shape. Every flag also reads SPOTFLEET_<NAME> from the environment.",
    )
    p.add_argument(
        "--kubeconfig", default=None, help="Kubeconfig (default: $KUBECONFIG, else in-cluster)."
    )
    groups = {key: p.add_argument_group(title) for key, title in config.GROUPS}
    fields = config.OperatorConfig.model_fields
    for name, info in fields.items():
        g = groups[config.OperatorConfig.group_of(name)]
        flag = config.OperatorConfig.flag_of(name)
        long = "--" + name.replace("_", "-")
        flags = [flag] if flag == long else [flag, long]
        env = config.ENV_PREFIX + name.upper()
        help_text = f"{info.description} [{env}; default: {info.default!r}]"
        if name == "namespaces":
            g.add_argument(
                "-n", "--namespace", dest=name, action="append", default=None, help=help_text
            )
            g.add_argument(
                "-A",
                "--all-namespaces",
                action="store_true",
                help="Watch every namespace (the default when no namespace is given).",
            )
            continue
        g.add_argument(*flags, dest=name, default=None, metavar=name.split("_")[-1].upper(),
                       help=help_text)  # fmt: skip
    return p


def parse_run_args(argv: Sequence[str]) -> tuple[config.OperatorConfig, str | None]:
    """(validated config, kubeconfig) from ``spotfleet run`` arguments and the environment.
    Raises :class:`config.ConfigError` naming every bad setting."""
    args = run_parser().parse_args(list(argv))
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k in config.OperatorConfig.model_fields
    }
    if args.all_namespaces:
        overrides["namespaces"] = ()
    elif overrides.get("namespaces") is not None:
        overrides["namespaces"] = tuple(overrides["namespaces"])
    return config.OperatorConfig.load(overrides), args.kubeconfig


#: Kubernetes client libraries Kopf loads when they are installed (to borrow their
#: login): the operator talks to Kubernetes through Kopf and its own small client only,
#: so these are kept out of its memory (about 43 MiB for ``kubernetes``) even where a
#: tools installation has them.
UNUSED_CLIENTS = ("kubernetes", "kubernetes_asyncio", "pykube")


def run_command(argv: Sequence[str]) -> int:
    """``spotfleet run ...``: validate the settings, then run until interrupted."""
    for name in UNUSED_CLIENTS:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    from spotfleet_operator import runner

    try:
        cfg, kubeconfig = parse_run_args(argv)
    except config.ConfigError as e:
        print(f"spotfleet run: {e}", file=sys.stderr)
        return 2
    runner.run(cfg, kubeconfig)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":
        raise SystemExit(run_command(args[1:]))
    if args and args[0] in ("--version", "version"):
        print(spotfleet_operator.__version__)
        return
    try:
        # handed over by name: the operator never imports the toolbox (import contract)
        app = importlib.import_module("spotfleet_cli.app")
    except ImportError:
        print(TOOLS_MISSING.format(cmd=args[0] if args else "--help"), file=sys.stderr)
        raise SystemExit(2) from None
    app.main(args)
