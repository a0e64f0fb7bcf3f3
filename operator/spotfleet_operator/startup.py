"""Start-up wiring: Kopf settings, the dependencies reconcile needs (into Kopf's
memo), the metrics server, and the interruption-queue drainer."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import kopf
import prometheus_client

from spotfleet_engine import model
from spotfleet_engine.risk import advisor, combined, xgb
from spotfleet_engine.risk import protocol as risk_protocol
from spotfleet_operator import config, kube, metrics, reconcile
from spotfleet_operator import store as store_mod
from spotfleet_operator.aws import credentials, ec2, interruptions

log = logging.getLogger("spotfleet.startup")

MEMO_DEPS = "spotfleet_deps"
MEMO_KUBE = "spotfleet_kube"


def load_risk(name: str) -> risk_protocol.RiskModel:
    """'advisor' -> the advisor-band model; 'bundled' -> the bundled XGBoost spike
    model combined with the advisor band (:mod:`spotfleet_engine.risk.combined`);
    anything else -> a path to an XGBoost artifact, combined with the band the same
    way. No silent fallback: a model that cannot load is a start-up error."""
    if name == "advisor":
        return advisor.AdvisorBandRisk()
    if name == "bundled":
        return combined.load_bundled()
    return combined.CombinedRisk(xgb.load(Path(name).read_text(encoding="utf-8")))


def configure_settings(settings: kopf.OperatorSettings, cfg: config.OperatorConfig) -> None:
    """Kopf settings: watch timeouts (silent watch freezes are a known failure mode),
    a small diff-base annotation under our own prefix, event posting, peering off."""
    settings.watching.server_timeout = cfg.watch_server_timeout_seconds
    settings.watching.client_timeout = cfg.watch_client_timeout_seconds
    settings.watching.connect_timeout = 30
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="spotfleet.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="spotfleet.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "spotfleet.dev/finalizer"
    settings.posting.level = logging.INFO
    settings.peering.standalone = True
    settings.execution.max_workers = 8


async def build(
    memo: Any, cfg: config.OperatorConfig, kubeconfig: str | None = None
) -> reconcile.Deps:
    """Wire the dependencies once and keep them in ``memo``."""
    m = metrics.Metrics()
    sessions = credentials.SessionCache(region=cfg.aws_region, endpoint_url=cfg.aws_endpoint_url)

    def observer(op: str, code: str) -> None:
        m.aws_calls.labels(op, code).inc()

    def ec2_factory(creds: credentials.TenantCredentials, region: str) -> ec2.Ec2:
        return ec2.Ec2(sessions, creds, region, observer)

    k = kube.Kube(kube.api_client(kubeconfig))
    store = store_mod.Store(cfg.database_url)
    await store.open()
    deps = reconcile.Deps(
        config=cfg,
        ec2_factory=ec2_factory,
        secrets=k,
        risk=load_risk(cfg.risk_model),
        metrics=m,
        store=store,
        live_policy_uids=lambda: k.policy_uids(cfg.namespaces),
    )
    memo[MEMO_DEPS] = deps
    memo[MEMO_KUBE] = k
    memo["spotfleet_sessions"] = sessions
    if cfg.metrics_port:
        prometheus_client.start_http_server(cfg.metrics_port, registry=m.registry)
        log.info("metrics on :%d/metrics", cfg.metrics_port)
    if cfg.interruption_queue_url:
        q = interruptions.Queue(sessions, cfg.interruption_queue_url, cfg.aws_region)
        memo["spotfleet_queue_task"] = asyncio.create_task(drain(q, deps, k))
    return deps


async def drain(q: interruptions.Queue, deps: reconcile.Deps, k: kube.Kube) -> None:
    """Forever: read notices; for an owned instance, count it, treat it as gone (and its
    pool as dry on an interruption warning), and reconcile its policy at once."""
    while True:
        try:
            notices = await q.receive(wait_seconds=1)
        except Exception as e:  # keep draining through outages
            log.warning("interruption queue: %s", e)
            await asyncio.sleep(deps.config.interruption_poll_seconds)
            continue
        for n in notices:
            await handle_notice(n, deps, k)
        if not notices:
            await asyncio.sleep(deps.config.interruption_poll_seconds)


async def handle_notice(n: interruptions.Notice, deps: reconcile.Deps, k: kube.Kube) -> None:
    if not n.owner_uid or "/" not in n.owner_ref:
        return
    ns, name = n.owner_ref.split("/", 1)
    now = dt.datetime.now(dt.UTC)
    body = await k.get_policy(ns, name)
    if body is None or body["metadata"]["uid"] != n.owner_uid:
        return
    replace = ((body.get("spec") or {}).get("rebalance") or {}).get(
        "onRebalanceRecommendation", "ignore"
    ) == "replace"
    if n.kind == interruptions.INTERRUPTION:
        deps.metrics.interruptions.labels(ns, name).inc()
        deps.doomed[n.instance_id] = now + dt.timedelta(minutes=10)
        if n.pool_key:
            pool = model.Pool.parse(n.pool_key)
            deps.unavailable_pools((body.get("spec") or {}).get("region", "us-east-1")).mark(
                pool, now
            )
    else:
        deps.metrics.rebalance_recommendations.labels(ns, name).inc()
        if not replace:
            return
        deps.doomed[n.instance_id] = now + dt.timedelta(minutes=10)
    res = await reconcile.run(body, deps, now)
    res.events.insert(
        0,
        reconcile.Event(
            "Warning",
            "SpotInterruption"
            if n.kind == interruptions.INTERRUPTION
            else "RebalanceRecommendation",
            f"{n.kind} for {n.instance_id} ({n.pool_key}); replacing it now",
        ),
    )
    log.info("%s for %s (%s, %s): reconciled", n.kind, n.instance_id, n.owner_ref, n.pool_key)
    await k.patch_status(ns, name, res.status)
    for e in res.events:
        await k.post_event(body, e.type, e.reason, e.message)
