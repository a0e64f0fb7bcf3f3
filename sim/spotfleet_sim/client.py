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
    """The sim clock: ``now`` (the reported time, never later than the wall clock),
    ``history_now`` (the price-history point it maps to), ``speed`` (market seconds per
    wall second), ``offset_seconds`` (now - history_now at this instant), ``wall_now``."""

    now: datetime
    speed: float
    history_now: datetime
    offset_seconds: float
    wall_now: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Clock:
        return cls(
            now=datetime.fromisoformat(data["now"]),
            speed=float(data["speed"]),
            history_now=datetime.fromisoformat(data["history_now"]),
            offset_seconds=float(data["offset_seconds"]),
            wall_now=datetime.fromisoformat(data["wall_now"]) if data.get("wall_now") else None,
        )


@dataclass(frozen=True)
class CallCounts:
    """AWS calls the cloud received since the last reset, per operation and access key."""

    total: int
    by_operation: dict[str, int]
    by_access_key: dict[str, dict[str, int]]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CallCounts:
        return cls(
            total=int(data["total"]),
            by_operation={k: int(v) for k, v in data["by_operation"].items()},
            by_access_key={
                key: {k: int(v) for k, v in ops.items()}
                for key, ops in data["by_access_key"].items()
            },
        )

    def of(self, operation: str, access_key_id: str | None = None) -> int:
        """Calls to ``operation`` (by one access key id, or by all)."""
        if access_key_id is None:
            return self.by_operation.get(operation, 0)
        return self.by_access_key.get(access_key_id, {}).get(operation, 0)


#: "leave this quota as it is" in :meth:`SimClient.set_quota`.
KEEP: Any = object()


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
        """Make pools available again (lifting any limit on them)."""
        return self._capacity(pools, True)

    def run_dry_on_next_spot_launch(self, count: int = 1) -> list[Pool]:
        """Arm the scheduled fault ``dry_next_spot``: each of the next ``count`` spot
        CreateFleet requests finds the pool it would land in out of capacity (the request
        marks it unavailable, as :meth:`mark_unavailable`, and gets
        ``InsufficientInstanceCapacity`` for it). A shortage in whichever pool is wanted
        next, whatever the planner picks. Returns the pools unavailable now."""
        body = {"pools": [], "available": False, "dry_next_spot": count}
        return [Pool(**p) for p in self._call("POST", "capacity", body)["unavailable"]]

    def unavailable(self) -> list[Pool]:
        return [Pool(**p) for p in self._call("GET", "capacity")["unavailable"]]

    def limit_capacity(self, pool: Pool, remaining: int) -> dict[Pool, int]:
        """Let ``pool`` launch only ``remaining`` more instances (then it answers
        InsufficientInstanceCapacity; CreateFleet fills it part-way and reports it).
        :meth:`mark_available` lifts the limit. Returns every limited pool."""
        body = {
            "pools": [
                {
                    "instance_type": pool.instance_type,
                    "zone": pool.zone,
                    "market": pool.market,
                    "remaining": remaining,
                }
            ]
        }
        return _limits(self._call("POST", "capacity", body))

    def limited(self) -> dict[Pool, int]:
        """Limited pools and how many more instances each can launch."""
        return _limits(self._call("GET", "capacity"))

    def scheduled_faults(self) -> dict[str, int]:
        """Armed scheduled faults (``dry_next_spot``) and how many requests each will hit."""
        return {k: int(v) for k, v in self._call("GET", "capacity")["scheduled"].items()}

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
        access_key_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Fail the next ``count`` calls (or each with ``probability``) to ``operation``
        (``*`` = any; only those signed with ``access_key_id`` when given) with ``code``:
        RequestLimitExceeded, InsufficientInstanceCapacity, UnauthorizedOperation, AuthFailure,
        InternalError, ServiceUnavailable, BadGateway or GatewayTimeout."""
        body: dict[str, Any] = {"operation": operation, "code": code}
        if count is not None:
            body["count"] = count
        if probability is not None:
            body["probability"] = probability
        if message is not None:
            body["message"] = message
        if access_key_id is not None:
            body["access_key_id"] = access_key_id
        return list(self._call("POST", "faults", body)["faults"])

    def inject_5xx_burst(
        self,
        count: int,
        status: int = 503,
        operation: str = "*",
        access_key_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Answer the next ``count`` calls with HTTP ``status`` (500, 502, 503 or 504):
        500/503 as AWS errors (InternalError, ServiceUnavailable), 502/504 with a gateway's
        HTML page. botocore retries all four."""
        body: dict[str, Any] = {"operation": operation, "status": status, "count": count}
        if access_key_id is not None:
            body["access_key_id"] = access_key_id
        return list(self._call("POST", "faults", body)["faults"])

    def inject_hang(
        self,
        seconds: float,
        operation: str = "*",
        count: int | None = None,
        access_key_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Hold calls to ``operation`` (``*`` = all; only ``access_key_id``'s when given)
        for ``seconds`` of wall time before answering them normally; the next ``count``
        calls, or every call until :meth:`clear_hangs` (which releases held calls)."""
        body: dict[str, Any] = {"operation": operation, "seconds": seconds}
        if count is not None:
            body["count"] = count
        if access_key_id is not None:
            body["access_key_id"] = access_key_id
        return list(self._call("POST", "hangs", body)["hangs"])

    def hangs(self) -> list[dict[str, Any]]:
        """Hang rules with ``hung`` (calls held so far) and ``holding`` (held right now)."""
        return list(self._call("GET", "hangs")["hangs"])

    def clear_hangs(self) -> None:
        self._call("DELETE", "hangs")

    # quotas
    def set_quota(
        self,
        on_demand_vcpus: int | None = KEEP,
        spot_instances: int | None = KEEP,
        account: str = "*",
        region: str = "*",
    ) -> list[dict[str, Any]]:
        """Set (a number) or lift (None) the on-demand vCPU quota (``VcpuLimitExceeded``)
        and the spot instance quota (``MaxSpotInstanceCountExceeded``) of ``account`` in
        ``region`` (``*`` = any); an argument left out keeps its value."""
        body: dict[str, Any] = {"account": account, "region": region}
        if on_demand_vcpus is not KEEP:
            body["on_demand_vcpus"] = on_demand_vcpus
        if spot_instances is not KEEP:
            body["spot_instances"] = spot_instances
        return list(self._call("POST", "quotas", body)["quotas"])

    def quotas(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "quotas")["quotas"])

    def clear_quotas(self) -> None:
        self._call("DELETE", "quotas")

    # call counters
    def call_counts(self) -> CallCounts:
        """AWS calls received (every attempt, whatever its answer) since the last reset."""
        return CallCounts.from_json(self._call("GET", "counters"))

    def reset_call_counts(self) -> None:
        self._call("DELETE", "counters")

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

    def set_describe_index(self, enabled: bool) -> bool:
        """False: moto answers DescribeInstances itself (slow at scale; for comparisons)."""
        body = {"describe_index": enabled}
        return bool(self._call("POST", "config", body)["describe_index"])

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


def _limits(data: Mapping[str, Any]) -> dict[Pool, int]:
    return {
        Pool(p["instance_type"], p["zone"], p["market"]): int(p["remaining"])
        for p in data["limited"]
    }
