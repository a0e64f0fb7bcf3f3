"""Component tests of deletion: Delete terminates, Orphan untags, outages retry with
backoff, never-launched policies go at once, permanent credential loss releases the
finalizer after N attempts with a Warning, the force annotation releases it now, and
the policy's runtime state is released."""

from __future__ import annotations

from typing import Any

from spotfleet_operator import finalize, reconcile
from spotfleet_operator.aws import errors, port
from tests.component.fake_ec2 import FakeEc2
from tests.component.harness import MARKET_TIME, NOW, Secrets, make_deps, policy, with_status


async def _launched(
    spec: dict[str, object] | None = None,
) -> tuple[FakeEc2, reconcile.Deps, dict[str, Any]]:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    body = policy(spec)
    res = await reconcile.run(body, deps, NOW)
    assert fake.running()
    return fake, deps, with_status(body, res)


async def test_delete_terminates_everything() -> None:
    fake, deps, body = await _launched()
    n = len(fake.running())
    res = await finalize.run(body, deps, NOW, attempt=0)
    assert res.done and len(res.terminated) == n
    assert fake.running() == []
    again = await finalize.run(body, deps, NOW, attempt=0)  # idempotent
    assert again.done and again.terminated == []


async def test_the_per_policy_template_of_an_earlier_release_is_deleted() -> None:
    fake, deps, body = await _launched()
    legacy = port.launch_template_name("uid-web-1")
    fake.templates[legacy] = (port.LaunchSpec(), port.TemplateInfo(legacy, "lt-legacy", "x"))
    acct = next(iter(deps.state.accounts.values()))
    assert acct.templates is not None
    acct.templates[legacy] = fake.templates[legacy][1]
    res = await finalize.run(body, deps, NOW, attempt=0)
    assert res.done and legacy not in fake.templates


async def test_deletion_releases_the_policy_state() -> None:
    _, deps, body = await _launched()
    uid = body["metadata"]["uid"]
    assert uid in deps.state.policies
    acct = next(iter(deps.state.accounts.values()))
    assert acct.sweep.instances(uid, NOW)
    res = await finalize.run(body, deps, NOW, attempt=0)
    assert res.done
    assert uid not in deps.state.policies
    assert acct.sweep.instances(uid, NOW) == []
    assert 'policy="web"' not in deps.metrics.exposition().decode().split("spotfleet_launches")[0]


async def test_orphan_untags_and_leaves_running() -> None:
    fake, deps, body = await _launched({"deletionPolicy": "Orphan"})
    ids = {i.instance_id for i in fake.running()}
    res = await finalize.run(body, deps, NOW, attempt=0)
    assert res.done and set(res.orphaned) == ids
    assert {i.instance_id for i in fake.running()} == ids
    for i in fake.running():
        assert not any(k.startswith(port.TAG_PREFIX) for k in i.tags)


async def test_outage_retries_with_backoff_and_says_why() -> None:
    fake, deps, body = await _launched()
    fake.fail_next.append(
        errors.AwsError("DescribeInstances", "InternalError", "outage", errors.ErrorClass.TRANSIENT)
    )
    res = await finalize.run(body, deps, NOW, attempt=3)
    assert not res.done and res.retry_after == deps.config.retry_delay(4)
    assert res.events[-1].type == "Warning" and "outage" in res.events[-1].message
    assert fake.running()  # nothing lost: retried later
    ok = await finalize.run(body, deps, NOW, attempt=4)
    assert ok.done and fake.running() == []


async def test_never_valid_credentials_delete_at_once() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake, Secrets({}))
    body = policy()
    res = await reconcile.run(body, deps, NOW)  # SecretNotFound: nothing launched
    body = with_status(body, res)
    done = await finalize.run(body, deps, NOW, attempt=0)
    assert done.done
    assert fake.calls == []
    assert "nothing to clean up" in done.events[-1].message


async def test_permanently_missing_credentials_release_after_max_attempts() -> None:
    _, deps, body = await _launched()
    deps.secrets = Secrets({})
    early = await finalize.run(body, deps, NOW, attempt=0)
    assert not early.done
    assert "force-delete" in early.events[-1].message  # says how to force it
    last = await finalize.run(body, deps, NOW, attempt=deps.config.finalizer_max_attempts - 1)
    assert last.done
    assert last.events[-1].reason == "CleanupAbandoned"
    assert "uid-web-1" in last.events[-1].message


async def test_force_annotation_releases_at_once() -> None:
    fake, deps, body = await _launched()
    deps.secrets = Secrets({})
    body["metadata"]["annotations"] = {finalize.FORCE_ANNOTATION: "true"}
    res = await finalize.run(body, deps, NOW, attempt=0)
    assert res.done and res.events[-1].reason == "CleanupForced"
    assert "spotfleet.dev/policy-uid=uid-web-1" in res.events[-1].message
    assert fake.running()  # left as it was: the Event says how to find them
