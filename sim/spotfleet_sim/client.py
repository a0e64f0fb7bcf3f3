"""A typed client for the stand-in cloud's control API (``/_spotfleet/...``).

Standard library only, so tests, the operator's tests and ``spotfleet demo``
can use it without pulling in moto.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class SimError(RuntimeError):
    """The control API refused a call (HTTP status and its message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Pool:
    """A capacity pool; ``market`` is ``spot``, ``on-demand`` or ``*`` (both)."""

    instance_type: str
    zone: str
    market: str = "*"


@dataclass(frozen=True)
class Call:
    """One entry of the layer's call log (see ``spotfleet_sim.calllog.CallRecord``)."""

    seq: int
    wall_time: float
    sim_time: str
    service: str
    region: str
    operation: str
    mutating: bool
    handled_by: str
    status: int
    error_code: str | None
    injected: bool
    unimplemented: bool
    detail: str | None
    failure: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Call:
        fields: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__}
        return cls(**fields)


@dataclass(frozen=True)
class Clock:
    """The sim clock: ``now`` (sim time), ``history_now`` (the price-history point it maps to)."""

    now: datetime
    speed: float
    history_now: datetime
    offset_seconds: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Clock:
        return cls(
            now=datetime.fromisoformat(data["now"]),
            speed=float(data["speed"]),
            history_now=datetime.fromisoformat(data["history_now"]),
            offset_seconds=float(data["offset_seconds"]),
        )


class SimClient:
    """Drive a running stand-in cloud: ``SimClient("http://127.0.0.1:5000")``."""

    def __init__(self, endpoint_url: str, timeout: float = 30.0) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.endpoint_url}/_spotfleet/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error", raw.decode())
            except ValueError:
                message = raw.decode(errors="replace")
            raise SimError(exc.code, message) from None

    def health(self) -> bool:
        return bool(self._call("GET", "health")["ok"])

    def reset(self) -> None:
        """Empty moto; clear faults, capacity marks, idempotency, the log; re-anchor the clock."""
        self._call("POST", "reset", {})

    # clock
    def clock(self) -> Clock:
        return Clock.from_json(self._call("GET", "clock"))

    def set_clock(
        self,
        now: datetime | None = None,
        speed: float | None = None,
        history_time: datetime | None = None,
    ) -> Clock:
        """Jump sim time to ``now`` (the market moves with it), change ``speed``, or
        re-map the current sim time onto ``history_time`` in the price data."""
        body: dict[str, Any] = {}
        if now is not None:
            body["now"] = now.isoformat()
        if speed is not None:
            body["speed"] = speed
        if history_time is not None:
            body["history_time"] = history_time.isoformat()
        return Clock.from_json(self._call("POST", "clock", body))

    def advance(self, seconds: float) -> Clock:
        """Move sim time forward (due terminations fire on the next tick)."""
        return Clock.from_json(self._call("POST", "clock", {"advance_seconds": seconds}))

    # capacity
    def mark_unavailable(self, *pools: Pool) -> list[Pool]:
        return self._capacity(pools, False)

    def mark_available(self, *pools: Pool) -> list[Pool]:
        return self._capacity(pools, True)

    def run_dry_on_next_spot_launch(self, count: int = 1) -> list[Pool]:
        """The next ``count`` spot CreateFleet requests find their first pool out of
        capacity: it is marked unavailable (as :meth:`mark_unavailable`) and the request
        gets ``InsufficientInstanceCapacity`` for it. A shortage in whichever pool is
        wanted next, whatever the planner picks."""
        body = {"pools": [], "available": False, "dry_next_spot": count}
        return [Pool(**p) for p in self._call("POST", "capacity", body)["unavailable"]]

    def unavailable(self) -> list[Pool]:
        return [Pool(**p) for p in self._call("GET", "capacity")["unavailable"]]

    def _capacity(self, pools: Iterable[Pool], available: bool) -> list[Pool]:
        body = {
            "pools": [
                {"instance_type": p.instance_type, "zone": p.zone, "market": p.market}
                for p in pools
            ],
            "available": available,
        }
        return [Pool(**p) for p in self._call("POST", "capacity", body)["unavailable"]]

    # faults
    def inject_fault(
        self,
        operation: str,
        code: str,
        count: int | None = None,
        probability: float | None = None,
        message: str | None = None,
    ) -> list[dict[str, Any]]:
        """Fail the next ``count`` calls (or each with ``probability``) to ``operation``
        (``*`` = any) with ``code``: RequestLimitExceeded, InsufficientInstanceCapacity,
        UnauthorizedOperation or InternalError."""
        body: dict[str, Any] = {"operation": operation, "code": code}
        if count is not None:
            body["count"] = count
        if probability is not None:
            body["probability"] = probability
        if message is not None:
            body["message"] = message
        return list(self._call("POST", "faults", body)["faults"])

    def faults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "faults")["faults"])

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    # interruptions
    def interrupt(
        self, *instance_ids: str, kind: str = "both", notice_seconds: float | None = None
    ) -> dict[str, Any]:
        """Send rebalance and/or interruption-warning events now; terminate after the notice."""
        body: dict[str, Any] = {"instance_ids": list(instance_ids), "kind": kind}
        if notice_seconds is not None:
            body["notice_seconds"] = notice_seconds
        return dict(self._call("POST", "interrupt", body))

    def pending_interruptions(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "interruptions")["pending"])

    def set_notice_seconds(self, seconds: float) -> float:
        return float(self._call("POST", "config", {"notice_seconds": seconds})["notice_seconds"])

    def set_hazard(self, enabled: bool, multiplier: float = 1.0, seed: int | None = None) -> None:
        body: dict[str, Any] = {"enabled": enabled, "multiplier": multiplier}
        if seed is not None:
            body["seed"] = seed
        self._call("POST", "hazard", body)

    # the log
    def calls(self, since: int = 0) -> list[Call]:
        return [Call.from_json(r) for r in self._call("GET", f"log?since={since}")["records"]]

    def problems(self, since: int = 0) -> list[Call]:
        """Calls moto could not serve or that crashed (tests fail on any)."""
        return [c for c in self.calls(since) if c.unimplemented or c.failure]
