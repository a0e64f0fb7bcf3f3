"""The operator's store jobs: price ingestion, the ledger roll-up and retention pruning.

Each job is one supervised task of the operator (started with the store), runs every
N minutes (a setting each; 0 turns it off), bounds each run by ``job_timeout_seconds``
and exports runs (by outcome), rows and errors (``spotfleet_job_*``). A job never
touches a reconcile: it reads the store and EC2 through the operator's own AWS port
and writes the store directly (bulk statements, not the writer queue). When the
database is down a run fails, is counted, and the next run does the work.

- **prices**: for every (tenant credentials, region) a reconcile used, the instance
  types its policies may use (``candidates.eligible_types``), DescribeSpotPriceHistory
  from the newest stored point of each type (a type never seen: ``price_backfill_hours``
  back), paginated by the port, inserted with ON CONFLICT DO NOTHING: a second run
  inserts only the points that are new.
- **ledger**: every policy with decisions, each hour from its last ledger hour (rolled
  up again: it may have been in progress) to now, at most ``ledger_lookback_hours``
  back (:mod:`spotfleet_operator.store.ledger`).
- **retention**: rows older than ``store_retention_days`` are deleted (0: kept).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from spotfleet_engine import candidates, model
from spotfleet_engine import catalog as catalog_mod
from spotfleet_operator import config as config_mod
from spotfleet_operator import metrics as metrics_mod
from spotfleet_operator.aws import credentials, port
from spotfleet_operator.store import Store, ledger, tables

log = logging.getLogger("spotfleet.jobs")

PRODUCT = "Linux/UNIX"
CloudFactory = Callable[[credentials.TenantCredentials, str], port.CloudProvider]


@dataclass
class Target:
    """One (tenant, region) the policies use, and the instance types they may use there."""

    creds: credentials.TenantCredentials
    region: str
    types: set[str] = field(default_factory=set)
    seen: dt.datetime | None = None


@dataclass
class PriceTargets:
    """What the reconciles observed: (tenant fingerprint, region) -> :class:`Target`.
    Filled by ``Deps.on_observed``; a target no reconcile used for ``forget_after`` is
    dropped (its policies are gone)."""

    forget_after: dt.timedelta = dt.timedelta(hours=6)
    targets: dict[tuple[str, str], Target] = field(default_factory=dict)

    def note(
        self,
        creds: credentials.TenantCredentials,
        region: str,
        policy: model.Policy,
        catalog: catalog_mod.Catalog,
        now: dt.datetime | None = None,
    ) -> None:
        key = (credentials.fingerprint(creds), region)
        t = self.targets.get(key)
        if t is None:
            t = self.targets[key] = Target(creds, region)
        t.creds = creds  # the newest keys of the tenant (a rotated Secret)
        t.types.update(candidates.eligible_types(policy, catalog))
        t.seen = now or dt.datetime.now(dt.UTC)

    def current(self, now: dt.datetime) -> list[Target]:
        for key in [
            k for k, t in self.targets.items() if t.seen and now - t.seen > self.forget_after
        ]:
            del self.targets[key]
        return [t for _, t in sorted(self.targets.items())]


def price_rows(region: str, points: Any) -> list[dict[str, Any]]:
    """The port's price points as ``price_observations`` rows."""
    return [
        {
            "region": region,
            "zone": p.zone,
            "instance_type": p.instance_type,
            "product": PRODUCT,
            "at": p.at,
            "price": repr(float(p.price)),
        }
        for p in points
    ]


async def ingest_prices(
    store: Store,
    provider: port.CloudProvider,
    region: str,
    types: set[str],
    now: dt.datetime,
    backfill: dt.timedelta,
) -> int:
    """One (tenant, region): fetch what is new since the stored points; new rows inserted."""
    if not types:
        return 0
    last = await store.last_price_at(region)
    known = sorted(t for t in types if t in last)
    fresh = sorted(t for t in types if t not in last)
    new = 0
    if known:
        # the port returns the price in effect at StartTime too: that point is stored
        # already and is skipped by the unique constraint
        start = min(last[t] for t in known)
        new += await store.add_prices(
            price_rows(region, await provider.spot_price_history(start, None, known))
        )
    if fresh:
        new += await store.add_prices(
            price_rows(region, await provider.spot_price_history(now - backfill, None, fresh))
        )
    return new


async def rollup_ledger(store: Store, now: dt.datetime, lookback: dt.timedelta) -> int:
    """Every policy's ledger hours from its last stored hour (again) to now."""
    written = 0
    floor = ledger.hour_of(now - lookback)
    for ns, name, uid in await store.policies_since(floor):
        rows = await store.ledger(ns, name, floor)
        start = rows[-1].hour if rows else floor
        start = max(ledger._utc(start), floor)
        decisions = await store.decisions(ns, name, start, now + ledger.HOUR)
        in_force = await store.decision_in_force(ns, name, start)
        if not decisions and in_force is None:
            continue
        if in_force is None and decisions:
            start = max(start, ledger.hour_of(decisions[0].at))
        acts = await store.actions(ns, name, start, now + ledger.HOUR)
        ints = await store.interruptions(ns, name, start - ledger.HOUR, now + ledger.HOUR)
        out = ledger.rollup(ns, name, uid, decisions, in_force, acts, ints, start, now)
        written += await store.put_ledger(out)
    return written


@dataclass
class Jobs:
    """The three jobs over one store; :meth:`tasks` starts them."""

    store: Store
    cloud: CloudFactory
    config: config_mod.OperatorConfig
    metrics: metrics_mod.Metrics
    targets: PriceTargets = field(default_factory=PriceTargets)
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))

    async def _measure(self, job: str, work: Callable[[], Awaitable[int]]) -> int | None:
        t0 = time.perf_counter()
        try:
            rows = await asyncio.wait_for(work(), self.config.job_timeout_seconds)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.metrics.job_runs.labels(job, "error").inc()
            self.metrics.job_errors.labels(job).inc()
            log.warning("%s job failed: %s: %s", job, type(e).__name__, e)
            return None
        finally:
            self.metrics.job_duration.labels(job).observe(time.perf_counter() - t0)
        self.metrics.job_runs.labels(job, "ok").inc()
        self.metrics.job_rows.labels(job).inc(rows)
        return rows

    async def prices_once(self) -> int | None:
        """One ingestion run over every target; new rows (None: the run failed)."""
        now = self.clock()
        backfill = dt.timedelta(hours=self.config.price_backfill_hours)

        async def work() -> int:
            total, failed = 0, 0
            for t in self.targets.current(now):
                try:
                    total += await ingest_prices(
                        self.store, self.cloud(t.creds, t.region), t.region, t.types, now, backfill
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # one tenant's failure never stops the others
                    failed += 1
                    self.metrics.job_errors.labels("prices").inc()
                    log.warning("price ingestion in %s: %s: %s", t.region, type(e).__name__, e)
            if failed and not total:
                raise RuntimeError(f"{failed} target(s) failed")
            return total

        return await self._measure("prices", work)

    async def ledger_once(self) -> int | None:
        lookback = dt.timedelta(hours=self.config.ledger_lookback_hours)
        return await self._measure(
            "ledger", lambda: rollup_ledger(self.store, self.clock(), lookback)
        )

    async def retention_once(self) -> int | None:
        days = self.config.store_retention_days
        if days <= 0:
            return 0

        async def work() -> int:
            gone = await self.store.prune(self.clock() - dt.timedelta(days=days))
            return sum(gone.values())

        return await self._measure("retention", work)

    async def _every(self, minutes: float, once: Callable[[], Awaitable[int | None]]) -> None:
        while True:
            await once()
            await asyncio.sleep(minutes * 60.0)

    def tasks(self) -> list[asyncio.Task[Any]]:
        """Start every job whose period is above 0."""
        c = self.config
        out = []
        for name, minutes, once in (
            ("job-prices", c.price_ingestion_minutes, self.prices_once),
            ("job-ledger", c.ledger_rollup_minutes, self.ledger_once),
            ("job-retention", c.retention_minutes, self.retention_once),
        ):
            if minutes > 0:
                out.append(asyncio.create_task(self._every(minutes, once), name=name))
        return out


__all__ = ["Jobs", "PriceTargets", "Target", "ingest_prices", "rollup_ledger", "tables"]
