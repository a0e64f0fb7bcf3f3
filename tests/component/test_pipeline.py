"""Component tests of the pipeline's guarantees across triggers and restarts: one writer
per policy, interruption notices recorded as facts, churn limits that survive a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from spotfleet_engine import model
from spotfleet_operator import drainer, reconcile, state
from spotfleet_operator.aws import queue
from tests.component.fake_ec2 import FakeEc2
from tests.component.harness import (
    MARKET_TIME,
    NOW,
    cond,
    make_deps,
    policy,
    total,
    with_status,
    writer,
)


class FakeQueue:
    """The interruption queue: what was deleted and what was released."""

    def __init__(self) -> None:
        self.inbox: list[queue.Message] = []
        self.deleted: list[str] = []
        self.released: list[str] = []

    async def receive(self, wait_seconds: int = 1, max_messages: int = 10) -> list[queue.Message]:
        out, self.inbox = self.inbox[:max_messages], self.inbox[max_messages:]
        return out

    async def delete(self, receipts: Sequence[str]) -> None:
        self.deleted.extend(receipts)

    async def release(self, receipts: Sequence[str], after_seconds: int = 0) -> None:
        self.released.extend(receipts)


def event(kind: str, instance_id: str, **detail: Any) -> str:
    return json.dumps(
        {
            "source": "aws.ec2",
            "detail-type": kind,
            "detail": {"instance-id": instance_id, **detail},
        }
    )


async def test_interruption_and_timer_together_give_one_status_and_one_replacement() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    body = policy()
    first = await reconcile.run(body, deps, NOW)
    body = with_status(body, first)
    spot = sorted(
        (i for i in fake.running() if i.pool.market is model.Market.SPOT),
        key=lambda i: i.instance_id,
    )
    victim = spot[0]
    d = drainer.Drainer(FakeQueue(), deps.state, deps.metrics)  # type: ignore[arg-type]
    msg = queue.Message("m1", "r1", event(queue.INTERRUPTION, victim.instance_id), 1)
    assert await d.handle(msg, NOW + dt.timedelta(seconds=30))
    ps = deps.state.policies["uid-web-1"]
    assert ps.wake.is_set() and victim.instance_id in ps.doomed
    launches_before = fake.calls.count("launch")
    before_ids = {i.instance_id for i in fake.running()}
    when = NOW + dt.timedelta(seconds=31)
    timer, woken = await asyncio.gather(
        reconcile.run(body, deps, when), reconcile.run(body, deps, when)
    )
    w = writer(deps)
    assert w.overlaps == 0  # the two triggers were serialised under the policy's lock
    # one replacement, launched by whichever reconcile ran first; the other saw it
    acted = [r for r in (timer, woken) if r.plan is not None and r.plan.launches]
    assert len(acted) == 1
    assert fake.calls.count("launch") - launches_before == len(acted[0].plan.launches)
    new = [i for i in fake.running() if i.instance_id not in before_ids]
    assert new and all(i.pool != victim.pool for i in new)  # not into the interrupted pool
    assert sum(1 for e in timer.events + woken.events if e.reason == "SpotInterruption") == 1
    assert victim.pool in deps.state.region("us-east-1").unavailable.active(when)
    # and a graded penalty that decays: the pool's extra risk halves every half-life
    penalties = deps.state.region("us-east-1").penalties
    first = penalties.at(when)[victim.pool]
    assert first == 0.3
    assert 0 < penalties.at(when + penalties.half_life)[victim.pool] < first
    assert victim.pool not in penalties.at(when + 20 * penalties.half_life)
    fake.instances[victim.instance_id].state = "terminated"  # AWS takes it two minutes later
    assert total(fake) >= 32  # the replacement covers the interrupted instance
    # the second reconcile saw what the first did: no second launch for the same notice
    later = await reconcile.run(with_status(body, woken), deps, when + dt.timedelta(seconds=5))
    assert later.plan is not None and not later.plan.launches
    st = later.status
    assert cond(st, "CapacityFulfilled")["status"] == "True"
    assert cond(st, "Ready")["status"] == "True"


async def test_a_warning_read_after_the_instance_is_gone_is_still_its_policys() -> None:
    # the notice came late (AWS reclaimed the instance and a sweep missed it before the
    # drainer read the warning): it is still recorded, announced and replaced, not
    # released until it counts as foreign
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    body = policy()
    body = with_status(body, await reconcile.run(body, deps, NOW))
    victim = min(
        (i for i in fake.running() if i.pool.market is model.Market.SPOT),
        key=lambda i: i.instance_id,
    )
    body = with_status(body, await reconcile.run(body, deps, NOW + dt.timedelta(seconds=5)))
    fake.instances[victim.instance_id].state = "terminated"  # a sweep had shown it running
    body = with_status(body, await reconcile.run(body, deps, NOW + dt.timedelta(seconds=10)))
    seen = [
        o.instance_id
        for acct in deps.state.accounts.values()
        for o in acct.sweep.instances("uid-web-1", NOW + dt.timedelta(seconds=10))
    ]
    assert seen and victim.instance_id not in seen  # the sweep no longer shows it
    d = drainer.Drainer(FakeQueue(), deps.state, deps.metrics)  # type: ignore[arg-type]
    msg = queue.Message("m1", "r1", event(queue.INTERRUPTION, victim.instance_id), 1)
    assert await d.handle(msg, NOW + dt.timedelta(seconds=11))
    assert d.counts.released == 0 and d.counts.foreign == 0 and d.counts.handled == 1
    after = await reconcile.run(body, deps, NOW + dt.timedelta(seconds=12))
    assert [e.reason for e in after.events].count("SpotInterruption") == 1
    assert total(fake) >= 32
    # an instance gone for longer than GONE_KEEP is forgotten
    late = NOW + state.GONE_KEEP + dt.timedelta(minutes=5)
    await reconcile.run(with_status(body, after), deps, late)
    assert deps.state.owner_of(victim.instance_id) is None


async def test_malformed_and_foreign_messages_are_counted_and_deleted() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    await reconcile.run(policy(), deps, NOW)
    q = FakeQueue()
    d = drainer.Drainer(q, deps.state, deps.metrics, max_receives=3)  # type: ignore[arg-type]
    deep = "[" * 100_000 + "]" * 100_000  # RecursionError in json
    bad = [
        "not json",
        deep,
        json.dumps({"source": "aws.s3", "detail-type": queue.INTERRUPTION}),
        json.dumps({"source": "aws.ec2", "detail-type": queue.INTERRUPTION, "detail": []}),
        event(queue.INTERRUPTION, "not-an-instance-id"),
    ]
    for n, body in enumerate(bad):
        assert await d.handle(queue.Message(f"b{n}", f"rb{n}", body, 1), NOW)
    assert d.counts.malformed == len(bad)
    # an instance nobody here owns: released for another shard, then deleted as foreign
    stranger = event(queue.INTERRUPTION, "i-0123456789abcdef0")
    assert not await d.handle(queue.Message("s", "rs", stranger, 1), NOW)
    # one receive: the malformed deleted, the stranger released, each in one batch
    q.inbox = [queue.Message(f"b{n}", f"rb{n}", body, 1) for n, body in enumerate(bad)]
    q.inbox.append(queue.Message("s", "rs", stranger, 1))
    assert await d.drain_once() == len(bad) + 1
    assert q.deleted == [f"rb{n}" for n in range(len(bad))] and q.released == ["rs"]
    assert await d.handle(queue.Message("s", "rs", stranger, 3), NOW)
    assert d.counts.foreign == 1


async def test_rebalance_recommendation_follows_the_policy() -> None:
    for action, doomed in (("ignore", False), ("replace", True)):
        fake = FakeEc2(MARKET_TIME)
        deps = make_deps(fake)
        spec = {"rebalance": {"enabled": True, "onRebalanceRecommendation": action}}
        await reconcile.run(policy(spec), deps, NOW)
        victim = next(i for i in fake.running() if i.pool.market is model.Market.SPOT)
        d = drainer.Drainer(FakeQueue(), deps.state, deps.metrics)  # type: ignore[arg-type]
        msg = queue.Message("m", "r", event(queue.REBALANCE, victim.instance_id), 1)
        assert await d.handle(msg, NOW)
        ps = deps.state.policies["uid-web-1"]
        assert (victim.instance_id in ps.doomed) is doomed, action


async def test_churn_limit_holds_across_an_operator_restart() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    spec = {"rebalance": {"enabled": True, "minSavingsPercent": 5, "maxReplacementsPerHour": 2}}
    body = policy(spec)
    r = await reconcile.run(body, deps, NOW)
    body = with_status(body, r)
    assert r.plan is not None
    spot = {(p.instance_type, p.zone) for p in r.plan.targets if p.market is model.Market.SPOT}
    # the market moves: the pools the fleet runs in triple in price
    fake.price_factor = {k: 3.0 for k in spot}
    fake.price_moved_at = NOW + dt.timedelta(minutes=1)
    r = await reconcile.run(body, deps, NOW + dt.timedelta(minutes=2))
    body = with_status(body, r)
    assert r.plan is not None
    assert sum(1 for t in r.plan.terminations if t.reason == "rebalance") == 2
    assert len(body["status"]["replacements"]) == 2
    r = await reconcile.run(body, deps, NOW + dt.timedelta(minutes=3))  # the old ones go
    body = with_status(body, r)
    # a new operator process: nothing in memory, only the policy's status
    restarted = make_deps(fake)
    launches = fake.calls.count("launch")
    r = await reconcile.run(body, restarted, NOW + dt.timedelta(minutes=10))
    body = with_status(body, r)
    assert r.plan is not None
    assert not any(t.reason == "rebalance" for t in r.plan.terminations)
    assert fake.calls.count("launch") == launches  # the budget of 2 per hour is spent
    # an hour after the first replacements the budget is back
    r = await reconcile.run(body, restarted, NOW + dt.timedelta(minutes=63))
    assert r.plan is not None
    assert sum(1 for t in r.plan.terminations if t.reason == "rebalance") >= 1
