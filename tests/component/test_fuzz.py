"""Fuzz: whatever SpotPolicy body passes (or fails) parsing and whatever arrives on the
interruption queue, the operator never crashes: a body ends as a status (InvalidSpec
or a plan), a message is handled, counted or dropped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spotfleet_operator import drainer, reconcile
from spotfleet_operator.aws import queue
from tests.component.fake_ec2 import FakeEc2
from tests.component.harness import MARKET_TIME, NOW, make_deps, policy
from tests.component.test_pipeline import FakeQueue
from tests.unit.test_api_property import any_json, manifest, mutated_specs

_CONDITIONS = {"Ready", "CapacityFulfilled", "CredentialsValid", "Degraded", "Progressing"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_any_spec_ends_as_a_status_never_an_exception(spec: Any) -> None:
    body = manifest(spec)
    body["metadata"].update(namespace="team-a", uid="uid-fuzz", generation=1)
    if isinstance(spec, dict) and isinstance(spec.get("credentials"), dict):
        spec["credentials"] = {"secretRef": {"name": "aws"}}  # a Secret that exists
    fake = FakeEc2(MARKET_TIME)
    res = asyncio.run(reconcile.run(body, make_deps(fake), NOW))
    types = {c["type"] for c in res.status["conditions"]}
    assert types == _CONDITIONS
    assert res.status["observedGeneration"] == 1
    ready = next(c for c in res.status["conditions"] if c["type"] == "Ready")
    if ready["status"] == "True":
        assert res.plan is not None


_events = st.fixed_dictionaries(
    {
        "source": st.sampled_from(["aws.ec2", "aws.s3", "", None]),
        "detail-type": st.sampled_from([*queue.KINDS, "Something Else", None]),
        "detail": st.one_of(
            any_json,
            st.fixed_dictionaries(
                {
                    "instance-id": st.one_of(
                        st.just("i-0123456789abcdef0"), st.text(max_size=20), any_json
                    ),
                    "state": st.one_of(st.sampled_from(["terminated", "running"]), any_json),
                }
            ),
        ),
    }
)
_bodies = st.one_of(
    st.text(max_size=200),
    any_json.map(json.dumps),
    _events.map(json.dumps),
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies, st.integers(1, 10))
def test_any_queue_message_is_handled_counted_or_dropped(body: str, received: int) -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    asyncio.run(reconcile.run(policy(), deps, NOW))
    q = FakeQueue()
    d = drainer.Drainer(q, deps.state, deps.metrics, max_receives=5)  # type: ignore[arg-type]
    keep = asyncio.run(d.handle(queue.Message("m", "r", body, received), NOW))
    counted = d.counts.handled + d.counts.ignored + d.counts.malformed + d.counts.foreign
    if keep:
        assert counted == 1  # deleted: after it was handled, ignored, or counted as junk
    else:
        # to be released for another shard (drain_once makes it visible again)
        assert d.counts.released == 1 and received < 5
