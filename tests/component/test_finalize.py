"""Component tests of deletion: Delete terminates, Orphan untags, outages retry with
backoff, permanent credential loss releases the finalizer after N attempts with a Warning."""

from __future__ import annotations

from spotfleet_operator import finalize, reconcile
from spotfleet_operator.aws import ec2, errors
from tests.component.fake_ec2 import FakeEc2
from tests.component.test_reconcile import MARKET_TIME, NOW, Secrets, make_deps, policy


async def _launched(
    spec: dict[str, object] | None = None,
) -> tuple[FakeEc2, reconcile.Deps, dict[str, object]]:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    body = policy(spec)
    await reconcile.run(body, deps, NOW)
    assert fake.running()
    return fake, deps, body


async def test_delete_terminates_everything_and_the_template() -> None:
    fake, deps, body = await _launched()
    n = len(fake.running())
    res = await finalize.run(body, deps, NOW, attempt=0)
    assert res.done and len(res.terminated) == n
    assert fake.running() == []
    assert fake.templates == {}
    again = await finalize.run(body, deps, NOW, attempt=0)  # idempotent
    assert again.done and again.terminated == []


async def test_orphan_untags_and_leaves_running() -> None:
    fake, deps, body = await _launched({"deletionPolicy": "Orphan"})
    ids = {i.instance_id for i in fake.running()}
    res = await finalize.run(body, deps, NOW, attempt=0)
    assert res.done and set(res.orphaned) == ids
    assert {i.instance_id for i in fake.running()} == ids
    for i in fake.running():
        assert not any(k in i.tags for k in ec2.OWNERSHIP_KEYS)


async def test_outage_retries_with_backoff_and_says_why() -> None:
    fake, deps, body = await _launched()
    fake.fail_next.append(
        errors.AwsError("DescribeInstances", "InternalError", "outage", errors.ErrorClass.TRANSIENT)
    )
    res = await finalize.run(body, deps, NOW, attempt=3)
    assert not res.done and res.retry_after >= 5
    assert res.events[-1].type == "Warning" and "outage" in res.events[-1].message
    assert fake.running()  # nothing lost: retried later
    ok = await finalize.run(body, deps, NOW, attempt=4)
    assert ok.done and fake.running() == []


async def test_permanently_missing_credentials_release_after_max_attempts() -> None:
    _, deps, body = await _launched()
    deps.secrets = Secrets({})
    early = await finalize.run(body, deps, NOW, attempt=0)
    assert not early.done
    last = await finalize.run(body, deps, NOW, attempt=deps.config.finalizer_max_attempts - 1)
    assert last.done
    assert last.events[-1].reason == "CleanupAbandoned"
    assert "uid-web-1" in last.events[-1].message
