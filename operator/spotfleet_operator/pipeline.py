"""What the steps of a reconcile share: their dependencies (:class:`Deps`, wired once
at start-up), the context of one reconcile (:class:`Ctx`) and how a step ends it early
with a failure (:class:`Stop`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine.risk import protocol as risk_protocol
from spotfleet_operator import api, config, failures, marketdata, metrics, state
from spotfleet_operator.aws import credentials, port


class SecretReader(Protocol):
    """Reads a Secret's decoded data from the POLICY'S OWN namespace (None: absent)."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None: ...

    def forget_secret(self, namespace: str, name: str) -> None: ...


class StatusWriter(Protocol):
    """Writes a policy's status and posts its Events (the Kubernetes client)."""

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...

    async def post_event(
        self, ref: Mapping[str, str], type_: str, reason: str, message: str
    ) -> None: ...


class AuditSink(Protocol):
    """Takes audit rows without waiting (the store's writer queue)."""

    def submit(self, row: Any) -> object: ...


CloudFactory = Callable[[credentials.TenantCredentials, str], port.CloudProvider]


@dataclass
class Deps:
    """Everything reconcile needs, wired once at start-up (kept in Kopf's memo)."""

    config: config.OperatorConfig
    state: state.FleetState
    cloud: CloudFactory
    secrets: SecretReader
    writer: StatusWriter
    risk: risk_protocol.RiskModel
    metrics: metrics.Metrics
    decide_pool: concurrent.futures.Executor
    catalog_for: Callable[[str], catalog_mod.Catalog] = catalog_mod.load_bundled
    audit: AuditSink | None = None
    record: Callable[..., Any] | None = None  # builds an audit row (the store's table)
    #: UIDs of every SpotPolicy that exists, across shards (None: orphan detection off)
    live_policy_uids: Callable[[], Awaitable[set[str]]] | None = None
    limiter: asyncio.Semaphore | None = None
    #: told what each reconcile observed: (credentials, region, policy, catalog) (the
    #: price-ingestion job's registry of what is in use; None: no job)
    on_observed: (
        Callable[
            [credentials.TenantCredentials, str, Any, catalog_mod.Catalog],
            None,
        ]
        | None
    ) = None
    _scored: dict[str, marketdata.SnapshotRisk] = field(default_factory=dict)

    def scored(
        self, region: str, snapshot: market_mod.MarketSnapshot, catalog: catalog_mod.Catalog
    ) -> marketdata.SnapshotRisk:
        """The risk of ``snapshot``'s pools, scored once for every policy of the region."""
        hit = self._scored.get(region)
        if hit is None or hit.snapshot is not snapshot:
            hit = self._scored[region] = marketdata.SnapshotRisk(self.risk, snapshot, catalog)
        return hit


@dataclass
class Ctx:
    body: Mapping[str, Any]
    deps: Deps
    ps: state.PolicyState
    now: dt.datetime
    namespace: str
    name: str
    uid: str
    generation: int | None
    previous: Mapping[str, Any]


class Stop(Exception):
    """A step ends the reconcile here with ``failure`` (a value, never an error)."""

    def __init__(self, failure: failures.Failure) -> None:
        self.failure = failure


def ref_of(body: Mapping[str, Any]) -> dict[str, str]:
    meta = body.get("metadata", {})
    return {
        "apiVersion": str(body.get("apiVersion", api.API_VERSION)),
        "kind": str(body.get("kind", api.KIND)),
        "namespace": str(meta.get("namespace", "")),
        "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")),
    }
