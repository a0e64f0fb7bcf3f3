"""The interruption drainer: a supervised task that reads the EC2 event queue, records
each fact in the fleet state and wakes the policy it concerns.

It never reconciles and never writes a status: an interruption warning marks the
instance doomed and its pool avoided, a rebalance recommendation dooms the instance
when the policy says ``replace``, a state change to stopping/terminated removes the
instance from the sweep; then the policy's own loop wakes and reconciles (one writer).

Every message is handled in its own ``try``; a message that cannot be parsed, for
any reason, or is about an instance no policy owns is counted and deleted. A message
about an instance this operator does not know (another shard's, or one its sweeps
have not seen yet) is made visible again after a short delay, up to
``max_receives`` receptions, then deleted as foreign. Handled messages are deleted
only after they were handled. If the loop itself dies it is restarted (with a
counter), and :meth:`Drainer.healthy` is part of the operator's liveness.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from spotfleet_engine import model
from spotfleet_operator import audit as audit_mod
from spotfleet_operator import metrics as metrics_mod
from spotfleet_operator import state as state_mod
from spotfleet_operator.aws import queue as queue_mod
from spotfleet_operator.pipeline import AuditSink

log = logging.getLogger("spotfleet.drainer")

STOPPED_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


@dataclass
class Counts:
    received: int = 0
    handled: int = 0
    ignored: int = 0  # well-formed, but nothing to do (a recommendation for an "ignore" policy)
    malformed: int = 0
    foreign: int = 0
    released: int = 0
    restarts: int = 0


@dataclass
class Drainer:
    queue: queue_mod.Queue
    state: state_mod.FleetState
    metrics: metrics_mod.Metrics
    poll_seconds: float = 5.0
    doomed_seconds: float = 600.0
    max_receives: int = 5
    release_after_seconds: int = 10
    #: the store's writer queue: one row per notice (None: no store)
    audit: AuditSink | None = None
    counts: Counts = field(default_factory=Counts)
    _beat: float = field(default_factory=time.monotonic)

    def healthy(self, now: float | None = None) -> bool:
        """False when the loop has not come round for a long time (dead or stuck)."""
        now = time.monotonic() if now is None else now
        return now - self._beat < max(60.0, 6 * self.poll_seconds)

    async def run(self) -> None:
        """Forever: drain; if the loop dies, count it, log it and start it again."""
        while True:
            try:
                await self._loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.counts.restarts += 1
                self.metrics.drainer_restarts.inc()
                log.exception("interruption drainer failed; restarting it")
                await asyncio.sleep(min(30.0, self.poll_seconds))

    async def _loop(self) -> None:
        while True:
            self._beat = time.monotonic()
            try:
                got = await self.drain_once()
            except Exception as e:  # keep draining through outages
                log.warning("interruption queue: %s", e)
                await asyncio.sleep(self.poll_seconds)
                continue
            if not got:
                await asyncio.sleep(self.poll_seconds)

    async def drain_once(self) -> int:
        """One receive: handle each message, then delete the handled ones and make the
        released ones visible again, each in batches; returns how many were received."""
        messages = await self.queue.receive(wait_seconds=1)
        done: list[str] = []
        later: list[str] = []
        for m in messages:
            self.counts.received += 1
            try:
                (done if await self.handle(m) else later).append(m.receipt)
            except Exception:  # one bad message never stops the others
                self.counts.malformed += 1
                self.metrics.queue_messages.labels("malformed").inc()
                log.warning("interruption message %s could not be handled", m.message_id)
                done.append(m.receipt)
        if done:
            await self.queue.delete(done)
        if later:
            await self.queue.release(later, self.release_after_seconds)
        return len(messages)

    async def handle(self, m: queue_mod.Message, now: dt.datetime | None = None) -> bool:
        """Record one message's fact. True: delete it; False: release it for later (the
        caller makes it visible again after ``release_after_seconds``)."""
        now = now or dt.datetime.now(dt.UTC)
        notice = queue_mod.parse_event(m.body)
        if notice is None:
            self.counts.malformed += 1
            self.metrics.queue_messages.labels("malformed").inc()
            return True
        found = self.state.owner_of(notice.instance_id)
        ps = self.state.policies.get(found[0].policy_uid) if found else None
        if found is None or ps is None:
            if m.receive_count >= self.max_receives:
                self.counts.foreign += 1
                self.metrics.queue_messages.labels("foreign").inc()
                return True
            self.counts.released += 1
            return False
        owned, region, acct = found
        ns, name = ps.ref.split("/", 1)
        notice_at = audit_mod.event_time(m.body) or now
        if notice.kind == queue_mod.INTERRUPTION:
            audit_mod.interruption(self.audit, ps, owned, notice, notice_at, now)
            self.metrics.interruptions.labels(ns, name).inc()
            ps.doom(notice.instance_id, now + dt.timedelta(seconds=self.doomed_seconds))
            self.state.mark_unavailable(region, [owned.pool], now)
            self.state.region(region).penalties.note(owned.pool, now)
            ps.notices.append(
                (
                    "Warning",
                    "SpotInterruption",
                    f"interruption warning for {notice.instance_id} ({owned.pool.key()}); "
                    "replacing it now",
                )
            )
        elif notice.kind == queue_mod.REBALANCE:
            self.metrics.rebalance_recommendations.labels(ns, name).inc()
            if ps.on_rebalance != "replace" or notice.instance_id in ps.recommended:
                self.counts.ignored += 1
                self.metrics.queue_messages.labels("ignored").inc()
                return True
            if ps.replacements_last_hour(now) >= ps.max_replacements:
                ps.notices.append(
                    (
                        "Normal",
                        "RebalanceRecommendation",
                        f"rebalance recommendation for {notice.instance_id} "
                        f"({owned.pool.key()}); not replaced: maxReplacementsPerHour "
                        f"{ps.max_replacements} reached",
                    )
                )
                self.counts.ignored += 1
                self.metrics.queue_messages.labels("ignored").inc()
                ps.poke()
                return True
            ps.recommended.add(notice.instance_id)
            audit_mod.interruption(self.audit, ps, owned, notice, notice_at, now)
            ps.doom(notice.instance_id, now + dt.timedelta(seconds=self.doomed_seconds))
            ps.notices.append(
                (
                    "Normal",
                    "RebalanceRecommendation",
                    f"rebalance recommendation for {notice.instance_id} ({owned.pool.key()}); "
                    "replacing it before it is interrupted",
                )
            )
        else:
            if notice.state not in STOPPED_STATES:
                self.counts.ignored += 1
                self.metrics.queue_messages.labels("ignored").inc()
                return True
            iid = notice.instance_id
            if not (
                iid in ps.doomed
                or iid in ps.interruptions
                or iid in ps.terminating
                or acct.sweep.terminated_by_us(iid)
            ):
                # stopped without a warning, and not by us: an interruption too
                audit_mod.interruption(self.audit, ps, owned, notice, notice_at, now)
                if owned.pool.market is model.Market.SPOT:
                    self.state.region(region).penalties.note(owned.pool, now)
            acct.sweep.terminated([notice.instance_id], now)
        self.counts.handled += 1
        self.metrics.queue_messages.labels("handled").inc()
        ps.poke()
        return True
