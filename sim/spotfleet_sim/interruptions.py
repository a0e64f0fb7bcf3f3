"""EC2 events through EventBridge: spot interruptions, rebalance recommendations, state changes.

A control call (or the optional hazard mode) sends AWS's "EC2 Instance Rebalance
Recommendation" and/or "EC2 Spot Instance Interruption Warning" events for an
instance through the account's default EventBridge bus (so the user's rules and
SQS targets receive them exactly as on AWS), and, for a warning, terminates the
instance ``notice_seconds`` of market time later with state reason
``Server.SpotInstanceTermination``. A background thread drives due terminations
and the hazard draws; it follows the market clock, so a frozen clock delays them
and moving the clock forward fires them.

Every instance state change the layer sees (launches, TerminateInstances,
Stop/Start, spot terminations) is sent as AWS's "EC2 Instance State-change
Notification" (``detail: {"instance-id", "state"}``), one event per state AWS
passes through (a launch: ``pending`` then ``running``; a termination:
``shutting-down`` then ``terminated``). Event times are the reported clock's
(never later than the wall clock; see :mod:`spotfleet_sim.timeline`).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spotfleet_sim import backend, calllog, index, market, timeline

REBALANCE = "EC2 Instance Rebalance Recommendation"
WARNING = "EC2 Spot Instance Interruption Warning"
STATE_CHANGE = "EC2 Instance State-change Notification"
KINDS = ("rebalance", "interruption", "both")
DEFAULT_NOTICE_SECONDS = 120.0

#: The states AWS passes through between two states moto shows (None: a new instance).
_PATHS: dict[tuple[str | None, str], tuple[str, ...]] = {
    (None, "running"): ("pending", "running"),
    ("running", "terminated"): ("shutting-down", "terminated"),
    ("stopped", "terminated"): ("shutting-down", "terminated"),
    ("running", "stopped"): ("stopping", "stopped"),
    ("stopped", "running"): ("pending", "running"),
}


def states_between(old: str | None, new: str) -> tuple[str, ...]:
    """The states a state-change notification reports, in order, for ``old`` -> ``new``."""
    return _PATHS.get((old, new), ("pending", new) if old is None and new != "pending" else (new,))


@dataclass(frozen=True)
class Tracked:
    """A spot instance the layer launched (hazard mode draws over these)."""

    account: str
    region: str
    instance_type: str
    zone: str


class InterruptionError(ValueError):
    """The control call named an instance that cannot be interrupted."""


class Interrupter:
    """Sends the events, schedules and performs terminations, runs hazard mode."""

    def __init__(
        self,
        clock: timeline.Timeline,
        log: calllog.CallLog,
        advisor: Callable[[], market.Advisor],
        terminate: Callable[[str, str, str], None],
        notice_seconds: float = DEFAULT_NOTICE_SECONDS,
        tick_seconds: float = 0.05,
    ) -> None:
        """``terminate(account, region, instance_id)`` reclaims a spot instance (the layer
        does it under its state lock and sends the state changes)."""
        self.clock = clock
        self.log = log
        self._terminate = terminate
        self._advisor = advisor
        self.notice_seconds = notice_seconds
        self._tick = tick_seconds
        self._lock = threading.RLock()
        # (history epoch due, n, account, region, instance id)
        self._due: list[tuple[float, int, str, str, str]] = []
        self._n = 0
        self.tracked: dict[str, Tracked] = {}
        self.hazard_enabled = False
        self.hazard_multiplier = 1.0
        self._rng = random.Random(0)
        self._last_hazard: float | None = None  # history epoch of the last draw
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="spotfleet-sim-interrupts", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reset(self, notice_seconds: float) -> None:
        with self._lock:
            self._due.clear()
            self.tracked.clear()
            self.hazard_enabled = False
            self.hazard_multiplier = 1.0
            self._rng.seed(0)
            self._last_hazard = None
            self.notice_seconds = notice_seconds

    def track(self, instance_id: str, info: Tracked) -> None:
        with self._lock:
            self.tracked[instance_id] = info

    def set_hazard(self, enabled: bool, multiplier: float = 1.0, seed: int | None = None) -> None:
        """Hazard mode: each tracked running spot instance is interrupted at its advisor
        band's rate (band upper bound per 30 days) times ``multiplier``."""
        if multiplier <= 0:
            raise ValueError("multiplier must be > 0")
        with self._lock:
            self.hazard_enabled = enabled
            self.hazard_multiplier = multiplier
            if seed is not None:
                self._rng.seed(seed)
            self._last_hazard = self.clock.now().history

    def pending(self) -> list[dict[str, Any]]:
        """Scheduled terminations: ``terminate_at_history`` (market time, ISO) and
        ``terminate_at_epoch`` (reported time at the current speed; None when frozen)."""
        now = self.clock.now()
        with self._lock:
            due = sorted(self._due)
        return [
            {
                "instance_id": iid,
                "terminate_at_epoch": _projected(now, at),
                "terminate_at_history": datetime.fromtimestamp(at, UTC).isoformat(),
                "account": acct,
                "region": region,
            }
            for at, _n, acct, region, iid in due
        ]

    # -- the control call --------------------------------------------------
    def interrupt(
        self, instance_ids: list[str], kind: str = "both", notice_seconds: float | None = None
    ) -> dict[str, Any]:
        """Send the events now; for a warning, schedule the termination. All ids are checked
        first (running spot instances), so a bad id changes nothing."""
        if kind not in KINDS:
            raise InterruptionError(f"kind must be one of {KINDS}")
        notice = self.notice_seconds if notice_seconds is None else float(notice_seconds)
        if notice < 0:
            raise InterruptionError("notice_seconds must be >= 0")
        found = []
        for iid in instance_ids:
            hit = backend.find_instance(iid)
            if hit is None:
                raise InterruptionError(f"no instance {iid}")
            account, region, inst = hit
            if backend.instance_state(inst) != "running":
                raise InterruptionError(f"{iid} is {backend.instance_state(inst)}, not running")
            if inst.lifecycle != "spot":
                raise InterruptionError(f"{iid} is not a spot instance")
            found.append((account, region, iid))
        now = self.clock.now()
        sent = now.reported_dt
        due = now.history + notice
        delivered: dict[str, int] = {}
        with self._lock:
            for account, region, iid in found:
                arn = backend.instance_arn(account, region, iid)
                matched = 0
                if kind in ("rebalance", "both"):
                    event = backend.ec2_event(
                        account, region, REBALANCE, {"instance-id": iid}, sent, arn
                    )
                    matched += backend.emit(account, region, event)
                    self._record("RebalanceRecommendation", region, iid, sent)
                if kind in ("interruption", "both"):
                    event = backend.ec2_event(
                        account,
                        region,
                        WARNING,
                        {"instance-id": iid, "instance-action": "terminate"},
                        sent,
                        arn,
                    )
                    matched += backend.emit(account, region, event)
                    self._record("SpotInterruptionWarning", region, iid, sent)
                    self._n += 1
                    heapq.heappush(self._due, (due, self._n, account, region, iid))
                delivered[iid] = matched
        projected = _projected(now, due)
        return {
            "instance_ids": [f[2] for f in found],
            "kind": kind,
            "sent_at": sent.isoformat(),
            "terminate_at": (
                datetime.fromtimestamp(projected, UTC).isoformat()
                if kind != "rebalance" and projected is not None
                else None
            ),
            "terminate_at_history": (
                datetime.fromtimestamp(due, UTC).isoformat() if kind != "rebalance" else None
            ),
            "rules_matched": delivered,
        }

    def state_changed(self, changes: list[index.Change]) -> int:
        """Send the state-change notifications for ``changes``; returns deliveries."""
        if not changes:
            return 0
        sent = self.clock.now().reported_dt
        delivered = 0
        for change in changes:
            if not backend.has_rules(change.account, change.region):
                continue
            arn = backend.instance_arn(change.account, change.region, change.instance_id)
            for state in states_between(change.old, change.new):
                detail = {"instance-id": change.instance_id, "state": state}
                event = backend.ec2_event(
                    change.account, change.region, STATE_CHANGE, detail, sent, arn
                )
                delivered += backend.emit(change.account, change.region, event)
        return delivered

    def _record(self, operation: str, region: str, iid: str, now: datetime) -> None:
        self.log.append(
            wall_time=time.time(),
            sim_time=now.isoformat(),
            service="ec2",
            region=region,
            operation=operation,
            mutating=True,
            handled_by="sim",
            status=200,
            detail=iid,
        )

    # -- the background thread ---------------------------------------------
    def step(self) -> None:
        """Fire due terminations and hazard draws for the current sim time (one tick)."""
        now = self.clock.now()
        due: list[tuple[str, str, str]] = []
        with self._lock:
            while self._due and self._due[0][0] <= now.history:
                _at, _n, account, region, iid = heapq.heappop(self._due)
                due.append((account, region, iid))
        for account, region, iid in due:
            hit = backend.find_instance(iid)
            if hit is None or backend.instance_state(hit[2]) in ("terminated", "shutting-down"):
                continue
            self._terminate(account, region, iid)
            self._record("SpotTermination", region, iid, now.reported_dt)
        self._hazard(now.history)

    def _hazard(self, now: float) -> None:
        with self._lock:
            if not self.hazard_enabled:
                return
            last = now if self._last_hazard is None else self._last_hazard
            self._last_hazard = now
            dt = now - last
            if dt <= 0:
                return
            candidates = list(self.tracked.items())
        advisor = self._advisor()
        victims: list[str] = []
        for iid, info in candidates:
            rate = advisor.hazard_per_second(info.region, info.instance_type)
            p = 1.0 - math.exp(-rate * self.hazard_multiplier * dt)
            if self._rng.random() < p:
                victims.append(iid)
        for iid in victims:
            hit = backend.find_instance(iid)
            if hit is None or backend.instance_state(hit[2]) != "running":
                with self._lock:
                    self.tracked.pop(iid, None)
                continue
            with contextlib.suppress(InterruptionError):
                self.interrupt([iid], "both")
            with self._lock:
                self.tracked.pop(iid, None)

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                self.step()
            except Exception as exc:  # keep the thread alive; record what went wrong
                self.log.append(
                    wall_time=time.time(),
                    sim_time=self.clock.now().reported_dt.isoformat(),
                    service="sim",
                    region="",
                    operation="InterruptionTick",
                    mutating=False,
                    handled_by="sim",
                    status=500,
                    error_code="InternalError",
                    detail=repr(exc),
                )


def _projected(now: timeline.Instant, history_due: float) -> float | None:
    """Reported epoch at which market time ``history_due`` arrives at the current speed."""
    if now.speed <= 0:
        return None
    return now.reported + max(0.0, history_due - now.history) / now.speed
