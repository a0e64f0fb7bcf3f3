"""Every Kopf decorator of the operator. Each body is a few lines that delegate.

create/update(spec)/resume reconcile at once; a timer re-runs the same
reconcile on an interval (EC2 is the source of truth, so polling is the honest
way to see it); delete runs finalize behind the ``spotfleet.dev/finalizer``.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import kopf

from spotfleet_operator import api, config, finalize, kube, reconcile, startup

GROUP, VERSION, PLURAL = api.GROUP, api.VERSION, api.PLURAL
#: Read once at import (Kopf fixes timer intervals when the decorator runs).
INTERVAL = float(os.environ.get("SPOTFLEET_RECONCILE_INTERVAL_SECONDS", "60"))


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg = config.OperatorConfig.load()
    startup.configure_settings(settings, cfg)
    await startup.build(memo, cfg)


@kopf.on.cleanup()
async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("spotfleet_queue_task")
    if task is not None:
        task.cancel()
    deps: reconcile.Deps | None = memo.get(startup.MEMO_DEPS)
    if deps is not None and deps.store is not None:
        await deps.store.close()


async def _reconcile(body: kopf.Body, memo: kopf.Memo) -> None:
    deps: reconcile.Deps = memo[startup.MEMO_DEPS]
    k: kube.Kube = memo[startup.MEMO_KUBE]
    result = await reconcile.run(body, deps, dt.datetime.now(dt.UTC))
    await k.patch_status(body.metadata.namespace or "", body.metadata.name or "", result.status)
    for e in result.events:
        kopf.event(body, type=e.type, reason=e.reason, message=e.message)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile(body, memo)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, initial_delay=INTERVAL)
async def on_timer(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile(body, memo)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def on_delete(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    deps: reconcile.Deps = memo[startup.MEMO_DEPS]
    result = await finalize.run(body, deps, dt.datetime.now(dt.UTC), retry)
    for e in result.events:
        kopf.event(body, type=e.type, reason=e.reason, message=e.message)
    if not result.done:
        raise kopf.TemporaryError(result.events[-1].message, delay=result.retry_after)
