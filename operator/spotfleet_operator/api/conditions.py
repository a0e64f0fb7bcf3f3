"""Condition types, reasons and the helpers that update a conditions list.

The operator writes the same five types on every reconcile; ``Ready`` summarises
the others. Reasons are CamelCase words, stable (users alert on them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from spotfleet_operator.api import status as status_model

# -- types ------------------------------------------------------------------
READY = "Ready"
CAPACITY_FULFILLED = "CapacityFulfilled"
CREDENTIALS_VALID = "CredentialsValid"
DEGRADED = "Degraded"
PROGRESSING = "Progressing"
TYPES: tuple[str, ...] = (READY, CAPACITY_FULFILLED, CREDENTIALS_VALID, DEGRADED, PROGRESSING)

# -- statuses -----------------------------------------------------------------
TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"

# -- reasons ------------------------------------------------------------------
#: The spec failed to parse (admission let it through, e.g. an older CRD); see message.
INVALID_SPEC = "InvalidSpec"
RECONCILED = "Reconciled"
AS_EXPECTED = "AsExpected"
SUSPENDED = "Suspended"
DRY_RUN = "DryRun"
FULFILLED = "Fulfilled"
INSUFFICIENT_CAPACITY = "InsufficientCapacity"
BUDGET_EXCEEDED = "BudgetExceeded"
NO_ELIGIBLE_POOLS = "NoEligiblePools"
LAUNCHING = "Launching"
TERMINATING = "Terminating"
REBALANCING = "Rebalancing"
STABLE = "Stable"
CREDENTIALS_RESOLVED = "CredentialsResolved"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_INVALID = "SecretInvalid"
ASSUME_ROLE_FAILED = "AssumeRoleFailed"
ACCESS_DENIED = "AccessDenied"
THROTTLED = "Throttled"
AWS_ERROR = "AWSError"
RECONCILE_ERROR = "ReconcileError"
DELETING = "Deleting"
INVALID_LAUNCH_REQUEST = "InvalidLaunchRequest"
NO_MATCHING_SUBNETS = "NoMatchingSubnets"
QUOTA_EXCEEDED = "QuotaExceeded"
#: More capacity runs than the target plus one instance (scale-in pending, or a rule
#: such as minPools needs more); the message says which.
ABOVE_TARGET = "AboveTarget"
#: The target is held, part of it on-demand in place of spot that is out of capacity.
ON_DEMAND_FALLBACK = "OnDemandFallback"
#: Replacements were launched; the instances they replace are terminated once they run.
REPLACING = "Replacing"
#: A condition could not be computed for the current generation (message: why).
NOT_OBSERVED = "NotObserved"


def _as_condition(c: status_model.Condition | Mapping[str, Any]) -> status_model.Condition:
    return c if isinstance(c, status_model.Condition) else status_model.Condition.model_validate(c)


def set_condition(
    conditions: Sequence[status_model.Condition | Mapping[str, Any]],
    type: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[status_model.Condition]:
    """Return ``conditions`` with ``type`` set; the input is not modified.

    ``lastTransitionTime`` becomes ``now`` only when the condition is new or its
    status flips; a change of reason, message or generation alone keeps the old
    time. Order is kept; a new type is appended. Dict items (as read from a
    Kubernetes object) are parsed into :class:`status_model.Condition`.
    """
    out: list[status_model.Condition] = []
    found = False
    for raw in conditions:
        c = _as_condition(raw)
        if c.type != type:
            out.append(c)
            continue
        found = True
        changed = c.status != status
        out.append(
            status_model.Condition.model_validate(
                {
                    "type": type,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "observedGeneration": generation,
                    "lastTransitionTime": now if changed else c.last_transition_time,
                }
            )
        )
    if not found:
        out.append(
            status_model.Condition.model_validate(
                {
                    "type": type,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "observedGeneration": generation,
                    "lastTransitionTime": now,
                }
            )
        )
    return out


def get_condition(
    conditions: Sequence[status_model.Condition | Mapping[str, Any]], type: str
) -> status_model.Condition | None:
    """The condition of ``type``, or None."""
    for raw in conditions:
        c = _as_condition(raw)
        if c.type == type:
            return c
    return None


def is_true(conditions: Sequence[status_model.Condition | Mapping[str, Any]], type: str) -> bool:
    """True when the condition of ``type`` exists with status ``True``."""
    c = get_condition(conditions, type)
    return c is not None and c.status == TRUE


def to_json(conditions: Sequence[status_model.Condition]) -> list[dict[str, Any]]:
    """The list as JSON for a status patch."""
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]
