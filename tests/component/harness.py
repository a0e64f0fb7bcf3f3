"""What the component tests share: a policy body, in-memory Secrets and status writer,
and the real reconcile dependencies wired around the fake EC2."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
from collections.abc import Mapping
from typing import Any

from spotfleet_engine import catalog, model
from spotfleet_engine.risk import advisor
from spotfleet_operator import config, metrics, reconcile, state
from tests.component.fake_ec2 import FakeEc2
from tests.fixtures.operator import base_spec

MARKET_TIME = dt.datetime(2021, 5, 20, 12, tzinfo=dt.UTC)
NOW = MARKET_TIME
KEYS = {
    "aws_access_key_id": "AKIAFAKEFAKEFAKE0001",
    "aws_secret_access_key": "fake/secret/never/logged/0123456789abcd",
}
_DECIDE = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="decide-test")


class Secrets:
    """Secrets by (namespace, name); records every read."""

    def __init__(self, data: dict[tuple[str, str], dict[str, str]]) -> None:
        self.data = data
        self.reads: list[tuple[str, str]] = []
        self.forgotten: list[tuple[str, str]] = []

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.reads.append((namespace, name))
        return self.data.get((namespace, name))

    def forget_secret(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))


class Writer:
    """Records status patches and Events in order; ``in_flight`` proves writes never overlap."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str]] = []
        self.in_flight = 0
        self.overlaps = 0

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.in_flight += 1
        if self.in_flight > 1:
            self.overlaps += 1
        await asyncio.sleep(0)  # let a concurrent reconcile run if it could
        self.patches.append((namespace, name, dict(status)))
        self.in_flight -= 1

    async def post_event(
        self, ref: Mapping[str, str], type_: str, reason: str, message: str
    ) -> None:
        self.events.append((type_, reason, message))


def policy(spec_overrides: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    spec = base_spec()
    for k, v in (spec_overrides or {}).items():
        spec[k] = v
    return {
        "apiVersion": "spotfleet.dev/v1alpha1",
        "kind": "SpotPolicy",
        "metadata": {
            "name": "web",
            "namespace": "team-a",
            "uid": "uid-web-1",
            "generation": generation,
        },
        "spec": spec,
    }


def make_config(**overrides: Any) -> config.OperatorConfig:
    base: dict[str, Any] = {
        "unavailable_pool_ttl_seconds": 300,
        "market_cache_seconds": 0,
        "fleet_sweep_seconds": 0,
    }
    base.update(overrides)
    return config.OperatorConfig.load(base, env={})


def make_deps(
    fake: FakeEc2, secrets: Secrets | None = None, cfg: config.OperatorConfig | None = None
) -> reconcile.Deps:
    cfg = cfg or make_config()
    return reconcile.Deps(
        config=cfg,
        state=state.FleetState(
            market_lookback=dt.timedelta(hours=cfg.market_lookback_hours),
            market_max_age=dt.timedelta(seconds=cfg.market_cache_seconds),
            sweep_max_age=dt.timedelta(seconds=cfg.sweep_seconds),
            unavailable_ttl=dt.timedelta(seconds=cfg.unavailable_pool_ttl_seconds),
        ),
        cloud=lambda creds, region: fake,
        secrets=secrets or Secrets({("team-a", "aws"): KEYS}),
        writer=Writer(),
        risk=advisor.AdvisorBandRisk(),
        metrics=metrics.Metrics(),
        decide_pool=_DECIDE,
    )


def writer(deps: reconcile.Deps) -> Writer:
    w = deps.writer
    assert isinstance(w, Writer)
    return w


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def units(fake: FakeEc2, uid: str = "uid-web-1") -> dict[model.Market, float]:
    cat = catalog.load_bundled("us-east-1")
    out = {model.Market.SPOT: 0.0, model.Market.ON_DEMAND: 0.0}
    for i in fake.running(uid):
        out[i.pool.market] += cat.types[i.pool.instance_type].vcpus
    return out


def total(fake: FakeEc2, uid: str = "uid-web-1") -> float:
    return sum(units(fake, uid).values())


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what the API server does with a status merge patch)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def with_status(body: dict[str, Any], result: reconcile.Result) -> dict[str, Any]:
    """The body as the API server holds it after the reconcile's status patch."""
    out = dict(body)
    out["status"] = merge_patch(body.get("status") or {}, result.status)
    return out
