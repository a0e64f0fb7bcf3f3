"""Condition helpers: lastTransitionTime only moves when the status flips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spotfleet_operator.api import conditions, status

T0 = datetime(2021, 5, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(minutes=9)


def test_new_condition_is_appended_with_now() -> None:
    out = conditions.set_condition(
        [], conditions.READY, "False", conditions.INVALID_SPEC, "spec.x: bad", 3, T0
    )
    assert len(out) == 1
    c = out[0]
    assert (c.type, c.status, c.reason, c.message) == (
        "Ready",
        "False",
        "InvalidSpec",
        "spec.x: bad",
    )
    assert (c.observed_generation, c.last_transition_time) == (3, T0)


def test_same_status_keeps_transition_time_but_updates_the_rest() -> None:
    first = conditions.set_condition([], "Ready", "True", "Reconciled", "ok", 1, T0)
    second = conditions.set_condition(first, "Ready", "True", "Stable", "still ok", 2, T1)
    assert second[0].last_transition_time == T0
    assert (second[0].reason, second[0].message, second[0].observed_generation) == (
        "Stable",
        "still ok",
        2,
    )


def test_status_flip_moves_transition_time() -> None:
    first = conditions.set_condition([], "Ready", "True", "Reconciled", "ok", 1, T0)
    flipped = conditions.set_condition(first, "Ready", "False", "AccessDenied", "no", 1, T1)
    assert flipped[0].last_transition_time == T1
    back = conditions.set_condition(flipped, "Ready", "True", "Reconciled", "ok", 1, T2)
    assert back[0].last_transition_time == T2


def test_other_types_and_order_are_kept_and_input_is_not_modified() -> None:
    conds: list[status.Condition] = []
    for i, t in enumerate(conditions.TYPES):
        conds = conditions.set_condition(
            conds, t, "Unknown", "AsExpected", "", 1, T0 + timedelta(i)
        )
    before = [c.model_copy() for c in conds]
    out = conditions.set_condition(conds, conditions.DEGRADED, "True", "InvalidSpec", "m", 2, T1)
    assert conds == before
    assert [c.type for c in out] == list(conditions.TYPES)
    assert out[3].last_transition_time == T1
    for i in (0, 1, 2, 4):
        assert out[i] == conds[i]
    assert conditions.is_true(out, conditions.DEGRADED)
    assert not conditions.is_true(out, conditions.READY)
    assert conditions.get_condition(out, "Nope") is None


def test_dicts_read_from_kubernetes_are_accepted_and_json_round_trips() -> None:
    raw = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Reconciled",
            "message": "",
            "observedGeneration": 4,
            "lastTransitionTime": "2021-05-01T12:00:00Z",
        }
    ]
    out = conditions.set_condition(raw, "Ready", "True", "Reconciled", "again", 5, T2)
    assert out[0].last_transition_time == T0
    js = conditions.to_json(out)
    assert js == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Reconciled",
            "message": "again",
            "observedGeneration": 5,
            "lastTransitionTime": "2021-05-01T12:00:00Z",
        }
    ]


def test_status_model_serialises_camel_case_without_unset_fields() -> None:
    st = status.SpotPolicyStatus.model_validate(
        {
            "observedGeneration": 2,
            "conditions": conditions.to_json(
                conditions.set_condition([], "Ready", "True", "Reconciled", "", 2, T0)
            ),
            "cost": {
                "perHour": "1.234",
                "onDemandEquivalentPerHour": "4.1",
                "savingsPercent": "69.9",
            },
        }
    )
    patch = st.to_patch()
    assert patch["observedGeneration"] == 2
    assert patch["cost"] == {
        "perHour": "1.234",
        "onDemandEquivalentPerHour": "4.1",
        "savingsPercent": "69.9",
    }
    assert "capacity" not in patch and "lastError" not in patch
    assert status.SpotPolicyStatus.model_validate(patch) == st
