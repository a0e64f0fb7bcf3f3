"""Start-up wiring: Kopf settings from the configuration, and the dependencies every
reconcile needs (built once, kept in Kopf's memo): the fleet state, the AWS clients and
thread pool, the Kubernetes client, the decision pool, the audit store's writer, the
metrics server and the interruption drainer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import kopf
import prometheus_client

import spotfleet_operator
from spotfleet_operator import config, drainer, kube, metrics, reconcile, riskmodels, state
from spotfleet_operator import store as store_mod
from spotfleet_operator.aws import credentials, ec2, queue

log = logging.getLogger("spotfleet.startup")

MEMO_KEY = "spotfleet"


@dataclass
class Runtime:
    """What start-up built, for the handlers and for clean-up."""

    deps: reconcile.Deps
    kube: kube.Kube
    calls: ec2.Calls
    store: store_mod.Store | None
    drainer: drainer.Drainer | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


def configure_settings(settings: kopf.OperatorSettings, cfg: config.OperatorConfig) -> None:
    """Kopf settings: watch timeouts (silent watch freezes are a known failure mode), our
    own finalizer and annotation prefix, Kopf's own Events only for errors (the operator
    posts its own, only when something changed), peering for HA when named."""
    settings.watching.server_timeout = cfg.watch_server_timeout_seconds
    settings.watching.client_timeout = cfg.watch_client_timeout_seconds
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="spotfleet.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="spotfleet.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "spotfleet.dev/finalizer"
    settings.posting.level = logging.WARNING
    if cfg.peering_name:
        settings.peering.name = cfg.peering_name
        settings.peering.standalone = False
        settings.peering.clusterwide = not cfg.namespaces
        settings.peering.mandatory = True
        # equal priorities freeze every peer: give each replica its own
        settings.peering.priority = random.randint(1, 2**31 - 1)
    else:
        settings.peering.standalone = True


async def build(memo: Any, cfg: config.OperatorConfig, kubeconfig: str | None) -> Runtime:
    """Wire the dependencies once and keep them in ``memo``; start the background tasks."""
    m = metrics.Metrics()
    m.build_info.labels(spotfleet_operator.__version__, cfg.risk_model).set(1)

    def on_client(service: str, client: Any) -> None:
        def after(event_name: str, parsed: Any = None, **_: Any) -> None:
            op = event_name.rsplit(".", 1)[-1]
            code = ""
            if isinstance(parsed, dict):
                code = str(parsed.get("Error", {}).get("Code", ""))
            m.aws_calls.labels(op, code).inc()

        client.meta.events.register(f"after-call.{service}", after)

    clients = credentials.ClientCache(
        cfg.aws_endpoint_url,
        credentials.client_config(
            cfg.aws_call_timeout_seconds, cfg.aws_max_attempts, cfg.aws_workers
        ),
        on_client=on_client,
    )
    calls = ec2.Calls(cfg.aws_workers, max(1, cfg.aws_workers // 4), cfg.aws_call_timeout_seconds)

    def cloud(creds: credentials.TenantCredentials, region: str) -> ec2.Ec2:
        return ec2.Ec2(clients, calls, creds, region)

    k = kube.Kube(
        kube.login(kubeconfig),
        cfg.kube_workers,
        cfg.secret_cache_seconds,
        connections=cfg.kube_connections + len(cfg.namespaces),
        observe=lambda kind, code: m.kube_requests.labels(kind, str(code)).inc(),
    )
    store: store_mod.Store | None = None
    if cfg.database_url:
        store = store_mod.Store(cfg.database_url, cfg.store_queue_size, m)
        await store.open()
    fleet = state.FleetState(
        market_lookback=dt.timedelta(hours=cfg.market_lookback_hours),
        market_max_age=dt.timedelta(seconds=cfg.market_cache_seconds),
        sweep_max_age=dt.timedelta(seconds=cfg.sweep_seconds),
        unavailable_ttl=dt.timedelta(seconds=cfg.unavailable_pool_ttl_seconds),
    )
    live = _LiveUids(k, cfg)
    deps = reconcile.Deps(
        config=cfg,
        state=fleet,
        cloud=cloud,
        secrets=k,
        writer=k,
        # the compiled forest scored by numpy: no xgboost or numba in the operator's memory
        risk=riskmodels.load(cfg.risk_model, scorer="numpy"),
        metrics=m,
        decide_pool=concurrent.futures.ThreadPoolExecutor(
            cfg.decide_workers, thread_name_prefix="decide"
        ),
        audit=store,
        record=store_mod.DecisionRecord,
        live_policy_uids=live.get,
        limiter=asyncio.Semaphore(cfg.max_concurrent_reconciles),
    )
    rt = Runtime(deps, k, calls, store)
    memo[MEMO_KEY] = rt
    if cfg.metrics_port:
        prometheus_client.start_http_server(cfg.metrics_port, registry=m.registry)
        log.info("metrics on :%d/metrics", cfg.metrics_port)
    if store is not None:
        rt.tasks.append(asyncio.create_task(store.run(), name="audit-writer"))
    if cfg.interruption_queue_url:
        q = queue.Queue(clients, calls, cfg.interruption_queue_url, cfg.aws_region)
        rt.drainer = drainer.Drainer(
            q,
            fleet,
            m,
            poll_seconds=cfg.interruption_poll_seconds,
            doomed_seconds=cfg.doomed_instance_seconds,
        )
        rt.tasks.append(asyncio.create_task(rt.drainer.run(), name="interruption-drainer"))
    return rt


class _LiveUids:
    """Every SpotPolicy uid across all shards, listed at most once per orphan scan period."""

    def __init__(self, k: kube.Kube, cfg: config.OperatorConfig) -> None:
        self.k, self.cfg = k, cfg
        self._at = -1e18
        self._uids: set[str] = set()
        self._lock = asyncio.Lock()

    async def get(self) -> set[str]:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if loop.time() - self._at >= self.cfg.orphan_scan_seconds:
                self._uids = await self.k.policy_uids(self.cfg.namespaces)
                self._at = loop.time()
            return self._uids


async def shutdown(rt: Runtime) -> None:
    """Flush the audit queue and stop the operator's own background tasks. The thread
    pools and the Kubernetes connection pool are left to the process's exit: Kopf may
    still be stopping daemons mid-reconcile (their last status patch needs them)."""
    if rt.store is not None:
        await rt.store.flush()
    for t in rt.tasks:
        t.cancel()
    await asyncio.gather(*rt.tasks, return_exceptions=True)
