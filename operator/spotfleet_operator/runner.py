"""Running the operator: logging (scrubbed), then Kopf with the registry built from the
configuration. Blocking; the configuration is never published to the environment."""

from __future__ import annotations

import asyncio
import logging
import threading

from spotfleet_operator import config, scrub


def configure_logging(cfg: config.OperatorConfig) -> None:
    """One line per record on stderr, every record scrubbed of credential values."""
    logging.basicConfig(
        level=getattr(logging, cfg.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    scrub.install()
    quiet(logging.getLogger())


def quiet(root: logging.Logger) -> None:
    """Put the handlers' quiet filter on every handler of ``root``."""
    from spotfleet_operator import handlers

    for h in root.handlers:
        if not any(isinstance(f, handlers.QuietWakeFilter) for f in h.filters):
            h.addFilter(handlers.QuietWakeFilter())


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """glibc keeps one malloc arena per thread that allocated (up to 8 per core), each
    holding freed memory; the operator's thread pools make that tens of MiB. Cap them
    (``M_ARENA_MAX``; the same as MALLOC_ARENA_MAX=2). False where not glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-8, arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def run(
    cfg: config.OperatorConfig,
    kubeconfig: str | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    logs: bool = True,
) -> None:
    """Run the operator until interrupted (or ``stop_flag`` is set). Touches no
    environment variable, so it may run in a thread while another thread starts
    processes (changing the environment then races with fork/exec: EFAULT)."""
    import kopf

    from spotfleet_operator import handlers

    limit_malloc_arenas()
    if logs:
        configure_logging(cfg)
    else:
        scrub.install()
        quiet(logging.getLogger())
    registry = handlers.build_registry(cfg, kubeconfig)
    kopf.run(
        registry=registry,
        clusterwide=not cfg.namespaces,
        namespaces=list(cfg.namespaces),
        standalone=not cfg.peering_name,
        peering_name=cfg.peering_name,
        liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz" if cfg.health_port else None,
        stop_flag=stop_flag,
    )
