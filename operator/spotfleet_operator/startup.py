"""Start-up wiring: Kopf settings from the configuration, and the dependencies every
reconcile needs (built once, kept in Kopf's memo): the fleet state, the AWS clients and
thread pool, the Kubernetes client, the decision pool, the audit store's writer, the
metrics server and the interruption drainer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import functools
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import kopf
import prometheus_client

import spotfleet_engine
import spotfleet_operator
from spotfleet_operator import config, drainer, jobs, kube, metrics, reconcile, riskmodels, state
from spotfleet_operator import store as store_mod
from spotfleet_operator.aws import credentials, ec2, queue

log = logging.getLogger("spotfleet.startup")

MEMO_KEY = "spotfleet"
#: Longest start-up waits for the store (migration, the promoted model), seconds.
STORE_OPEN_SECONDS = 15.0


@dataclass
class Runtime:
    """What start-up built, for the handlers and for clean-up."""

    deps: reconcile.Deps
    kube: kube.Kube
    calls: ec2.Calls
    store: store_mod.Store | None
    drainer: drainer.Drainer | None = None
    jobs: jobs.Jobs | None = None
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
        try:  # the store is auxiliary: when it is away the writer migrates once it is back
            await asyncio.wait_for(store.open(), STORE_OPEN_SECONDS)
        except Exception as e:
            log.warning(
                "store not migrated at start-up (%s); reconciling without waiting for it",
                type(e).__name__,
            )
    # the compiled forest scored by numpy: no xgboost or numba in the operator's memory
    risk, risk_name, risk_version = await _risk_model(cfg, store)
    m.build_info.labels(spotfleet_operator.__version__, risk_name, risk_version).set(1)
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
        risk=risk,
        metrics=m,
        decide_pool=concurrent.futures.ThreadPoolExecutor(
            cfg.decide_workers, thread_name_prefix="decide"
        ),
        audit=store,
        record=functools.partial(
            store_mod.DecisionRecord,
            engine_version=spotfleet_engine.__version__,
            model_version=risk_version,
        ),
        live_policy_uids=live.get,
        limiter=asyncio.Semaphore(cfg.max_concurrent_reconciles),
    )
    rt = Runtime(deps, k, calls, store)
    if store is not None:
        rt.jobs = jobs.Jobs(store, cloud, cfg, m)
        deps.on_observed = rt.jobs.targets.note
    memo[MEMO_KEY] = rt
    if cfg.metrics_port:
        prometheus_client.start_http_server(cfg.metrics_port, registry=m.registry)
        log.info("metrics on :%d/metrics", cfg.metrics_port)
    if store is not None:
        rt.tasks.append(asyncio.create_task(store.run(), name="audit-writer"))
    if rt.jobs is not None:
        rt.tasks.extend(rt.jobs.tasks())
    if cfg.interruption_queue_url:
        q = queue.Queue(clients, calls, cfg.interruption_queue_url, cfg.aws_region)
        rt.drainer = drainer.Drainer(
            q,
            fleet,
            m,
            poll_seconds=cfg.interruption_poll_seconds,
            doomed_seconds=cfg.doomed_instance_seconds,
            audit=store,
        )
        rt.tasks.append(asyncio.create_task(rt.drainer.run(), name="interruption-drainer"))
    return rt


async def _risk_model(
    cfg: config.OperatorConfig, store: store_mod.Store | None
) -> tuple[Any, str, str]:
    """(model, name, version): the store's promoted model when asked for and present,
    else ``cfg.risk_model`` (a store that cannot be read falls back, with a warning)."""
    if cfg.risk_model_from_store and store is not None:
        try:
            row = await asyncio.wait_for(store.promoted_model(), STORE_OPEN_SECONDS)
        except Exception as e:
            row = None
            log.warning("promoted risk model not read from the store (%s)", type(e).__name__)
        if row is not None:
            model = riskmodels.from_artifact(row.artifact, scorer="numpy")
            log.info(
                "risk model %s from the store (promoted %s)",
                row.artifact_sha256[:12],
                row.promoted_at,
            )
            return model, "store", row.artifact_sha256[:12]
        log.warning("no promoted risk model in the store; using %s", cfg.risk_model)
    model = riskmodels.load(cfg.risk_model, scorer="numpy")
    return model, cfg.risk_model, riskmodels.version_of(cfg.risk_model)


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
