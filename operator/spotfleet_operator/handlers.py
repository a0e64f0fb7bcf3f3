"""Every Kopf handler of the operator, registered on a registry built from the config.

- one **daemon per policy** (:func:`policy_loop`) runs its reconcile loop: reconcile,
  then sleep for the interval, or the retry delay the failure table gave, or until
  woken (a spec change, an interruption notice, a follow-up after launching);
- a low-level **event** handler wakes that loop when the spec's generation changes
  (no annotation writes, unlike create/update handlers);
- **delete** runs finalize behind the ``spotfleet.dev/finalizer``;
- start-up, clean-up, login and a liveness probe.

Sharding: with ``shard_label_selector`` every handler only matches the policies whose
labels match, so several operator Deployments split the policies between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from spotfleet_operator import api, config, failures, finalize, kube, reconcile, startup

log = logging.getLogger("spotfleet.handlers")

LOOP_ID = "reconcile-loop"
WAKE_ID = "wake-on-spec-change"


class QuietWakeFilter(logging.Filter):
    """Drops Kopf's INFO line for every run of the wake-up event handler (it runs on
    every watch event of every policy: at a thousand policies, most of the log)."""

    _line = f"Handler {WAKE_ID!r} succeeded."

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage() == self._line)


def shard_filter(selector: str | None) -> dict[str, Any] | None:
    """A Kopf label filter for a label selector (``k=v``, ``k!=v``, ``k``, ``!k``, comma
    separated), or None for no selector."""
    if not selector:
        return None
    out: dict[str, Any] = {}
    for part in (p.strip() for p in selector.split(",")):
        if not part:
            continue
        if "!=" in part:
            k, v = part.split("!=", 1)

            def differs(value: Any, v: str = v, **_: Any) -> bool:
                return bool(value != v)

            out[k] = differs
        elif "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
        elif part.startswith("!"):
            out[part[1:]] = kopf.ABSENT
        else:
            out[part] = kopf.PRESENT
    return out


def next_delay(result: reconcile.Result, interval: float) -> float:
    """Seconds until the loop reconciles again: the Kopf error's delay, a recheck for a
    permanent error, a follow-up after acting, else the interval."""
    if isinstance(result.retry, kopf.TemporaryError):
        return float(result.retry.delay or interval)
    if isinstance(result.retry, kopf.PermanentError):
        return max(interval, failures.PERMANENT_RECHECK_SECONDS)
    if result.follow_up is not None:
        return min(result.follow_up, interval)
    return interval


async def _sleep(ps_wake: asyncio.Event, stopped: Any, seconds: float) -> None:
    """Until ``seconds`` pass, the policy is woken, or its daemon is stopped."""
    waiters = {
        asyncio.ensure_future(ps_wake.wait()),
        asyncio.ensure_future(stopped.wait()),
    }
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for w in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await w


async def policy_loop(body: kopf.Body, stopped: Any, rt: startup.Runtime) -> None:
    """A policy's reconcile loop, for as long as Kopf keeps its daemon (until deletion)."""
    deps = rt.deps
    meta = body.metadata
    ps = deps.state.policy(str(meta.uid), f"{meta.namespace}/{meta.name}")
    interval = deps.config.reconcile_interval_seconds
    last_retry: str | None = None
    while not stopped:
        ps.wake.clear()
        result = await reconcile.run(body, deps)
        if result.skipped:
            await stopped.wait()
            return
        retry = str(result.retry) if result.retry is not None else None
        if retry and retry != last_retry:
            log.warning("%s/%s: %s", meta.namespace, meta.name, retry)
        last_retry = retry
        await _sleep(ps.wake, stopped, next_delay(result, interval))


def build_registry(
    cfg: config.OperatorConfig, kubeconfig: str | None = None
) -> kopf.OperatorRegistry:
    """The operator's handlers for ``cfg`` (nothing is read from the environment)."""
    reg = kopf.OperatorRegistry()
    labels = shard_filter(cfg.shard_label_selector)
    g, v, p = api.GROUP, api.VERSION, api.PLURAL

    def rt_of(memo: Mapping[str, Any]) -> startup.Runtime:
        rt: startup.Runtime = memo[startup.MEMO_KEY]
        return rt

    @kopf.on.login(registry=reg)
    async def login(memo: kopf.Memo, **_: Any) -> kopf.AiohttpSession | kopf.ConnectionInfo:
        rt: startup.Runtime | None = memo.get(startup.MEMO_KEY)
        if rt is None:
            return kube.login(kubeconfig)
        return rt.kube.kopf_session()  # Kopf and the operator share one bounded pool

    @kopf.on.startup(registry=reg)
    async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        startup.configure_settings(settings, cfg)
        await startup.build(memo, cfg, kubeconfig)

    @kopf.on.cleanup(registry=reg)
    async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
        rt = memo.get(startup.MEMO_KEY)
        if rt is not None:
            await startup.shutdown(rt)

    @kopf.on.probe(id="interruption-drainer", registry=reg)
    def drainer_alive(memo: kopf.Memo, **_: Any) -> str:
        rt = memo.get(startup.MEMO_KEY)
        if rt is None or rt.drainer is None:
            return "off"
        if not rt.drainer.healthy():
            raise kopf.PermanentError("the interruption drainer is not draining")
        return "draining"

    @kopf.daemon(
        g,
        v,
        p,
        id=LOOP_ID,
        registry=reg,
        labels=labels,
        # on stop (deletion, shutdown) the loop leaves at once unless mid-reconcile:
        # give that reconcile time to finish and write its status before cancelling it
        cancellation_backoff=20.0,
        cancellation_timeout=30.0,
    )
    async def policy(body: kopf.Body, stopped: Any, memo: kopf.Memo, **_: Any) -> None:
        await policy_loop(body, stopped, rt_of(memo))

    @kopf.on.event(g, v, p, id=WAKE_ID, registry=reg, labels=labels)
    def spec_changed(body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any) -> None:
        rt = memo.get(startup.MEMO_KEY)
        if rt is None or type == "DELETED":
            return
        ps = rt.deps.state.policies.get(str(body.metadata.uid))
        if ps is not None and ps.reconciled_generation != body.metadata.get("generation"):
            ps.poke()

    @kopf.on.delete(g, v, p, id="finalize", registry=reg, labels=labels)
    async def on_delete(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
        rt = rt_of(memo)
        result = await finalize.run(body, rt.deps, dt.datetime.now(dt.UTC), retry)
        ref = reconcile.ref_of(body)
        for e in result.events:
            try:
                await rt.kube.post_event(ref, e.type, e.reason, e.message)
            except Exception as exc:  # an Event is best effort
                log.warning("event %s not posted: %s", e.reason, exc)
        if not result.done:
            raise kopf.TemporaryError(result.events[-1].message, delay=result.retry_after)

    return reg
