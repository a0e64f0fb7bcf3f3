"""``spotfleet run``: validate the configuration, then run Kopf with our handlers."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from spotfleet_operator import config


def apply_overrides(overrides: Mapping[str, Any], kubeconfig: str | None) -> config.OperatorConfig:
    """Validate every setting at once, then publish them as SPOTFLEET_* variables for the
    handlers (Kopf reads timer intervals at import). Raises ConfigError."""
    cfg = config.OperatorConfig.load(overrides)
    for name, value in cfg.model_dump().items():
        if value is None:
            continue
        key = config.ENV_PREFIX + name.upper()
        os.environ[key] = ",".join(value) if isinstance(value, tuple) else str(value)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    return cfg


def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    kubeconfig: str | None,
    overrides: Mapping[str, Any],
    stop_flag: asyncio.Event | threading.Event | None = None,
    configure_logging: bool = True,
) -> None:
    """Blocking: validate and publish the settings, then run the operator until
    interrupted (or ``stop_flag`` is set)."""
    ns = () if all_namespaces else namespaces  # no namespace given: cluster-wide
    cfg = apply_overrides({**overrides, "namespaces": ns or None}, kubeconfig)
    if configure_logging:
        logging.basicConfig(
            level=getattr(logging, cfg.log_level),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    run_kopf(cfg, stop_flag)


def run_kopf(
    cfg: config.OperatorConfig, stop_flag: asyncio.Event | threading.Event | None = None
) -> None:
    """Run Kopf with our handlers for ``cfg`` (already published by :func:`apply_overrides`).
    Touches no environment variable, so it may run in a thread while another thread
    starts processes (changing the environment then races with fork/exec: EFAULT)."""
    import kopf

    from spotfleet_operator import handlers  # registers the handlers

    assert handlers.GROUP
    ns = cfg.namespaces
    kopf.run(
        clusterwide=not ns,
        namespaces=list(ns),
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz" if cfg.health_port else None,
        stop_flag=stop_flag,
    )
