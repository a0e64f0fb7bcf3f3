"""``SpotPolicy.status``: what the operator observed and decided (written only by the operator).

Money is decimal strings in USD per hour, capacity figures decimal strings in
``spec.capacity.unit`` (memory can be fractional), times RFC 3339 UTC. There is
no ``phase``: read the conditions (``Ready`` summarises the others).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import pydantic

from spotfleet_operator.api import base, spec

#: Decimal capacity figure: up to 7 integer and 3 fractional digits.
AMOUNT_PATTERN = r"^(0|[1-9][0-9]{0,6})(\.[0-9]{1,3})?$"
#: Percent with up to one decimal, may be negative (a mix dearer than on-demand).
PERCENT_PATTERN = r"^-?(0|[1-9][0-9]{0,5})(\.[0-9])?$"
CONDITION_TYPE_PATTERN = r"^[A-Z][A-Za-z0-9]{0,63}$"
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

Amount = Annotated[str, pydantic.StringConstraints(pattern=AMOUNT_PATTERN, max_length=11)]
Percent = Annotated[str, pydantic.StringConstraints(pattern=PERCENT_PATTERN, max_length=9)]
Reason = Annotated[str, pydantic.StringConstraints(pattern=REASON_PATTERN, max_length=1024)]
Message = Annotated[str, pydantic.StringConstraints(max_length=32_768)]
#: RFC 3339 time; parsed from strings too (strict mode would only take datetime objects).
Time = Annotated[datetime, pydantic.Field(strict=False)]
ConditionStatus = Literal["True", "False", "Unknown"]
MarketName = Literal["spot", "on-demand"]


class Condition(base.ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: Annotated[
        str, pydantic.StringConstraints(pattern=CONDITION_TYPE_PATTERN, max_length=64)
    ] = pydantic.Field(
        description=(
            "Condition type: Ready, CapacityFulfilled, CredentialsValid, Degraded or Progressing."
        )
    )
    status: ConditionStatus = pydantic.Field(description="`True`, `False` or `Unknown`.")
    reason: Reason = pydantic.Field(description="Why, as one CamelCase word (InvalidSpec...).")
    message: Message = pydantic.Field(default="", description="Human-readable detail.")
    observed_generation: int | None = pydantic.Field(
        default=None, ge=0, description="The spec generation this condition was computed from."
    )
    last_transition_time: Time = pydantic.Field(
        description="When `status` last changed (not when the condition was last written)."
    )


class MarketCapacity(base.ApiModel):
    """Capacity in `spec.capacity.unit`, split by market."""

    spot: Amount = pydantic.Field(default="0", description="Spot capacity.")
    on_demand: Amount = pydantic.Field(default="0", description="On-demand capacity.")
    total: Amount = pydantic.Field(default="0", description="Spot plus on-demand.")


class CapacityStatus(base.ApiModel):
    """Desired and fulfilled capacity."""

    unit: spec.Unit = pydantic.Field(description="The unit of every figure (spec.capacity.unit).")
    desired: MarketCapacity | None = pydantic.Field(
        default=None,
        description="What the plan for the current generation holds (absent until there is "
        "one: a plan made for an earlier spec is never shown as this one's).",
    )
    fulfilled: MarketCapacity = pydantic.Field(description="What is running now.")
    spot_percent: int = pydantic.Field(
        default=0, ge=0, le=100, description="Percent (0-100) of fulfilled capacity that is spot."
    )


class PoolAllocation(base.ApiModel):
    """Instances running in one pool (instance type x zone x market)."""

    instance_type: Annotated[str, pydantic.StringConstraints(max_length=64)] = pydantic.Field(
        description="EC2 instance type."
    )
    zone: Annotated[str, pydantic.StringConstraints(max_length=32)] = pydantic.Field(
        description="Availability zone."
    )
    market: MarketName = pydantic.Field(description="`spot` or `on-demand`.")
    count: int = pydantic.Field(ge=0, le=100_000, description="Number of instances.")
    price_per_hour: spec.Price = pydantic.Field(
        description="Current price of one instance, USD per hour."
    )


class CostStatus(base.ApiModel):
    """What the fleet costs now."""

    per_hour: spec.Price = pydantic.Field(description="Fleet cost, USD per hour.")
    on_demand_equivalent_per_hour: spec.Price = pydantic.Field(
        description="What the same instances would cost on-demand, USD per hour."
    )
    savings_percent: Percent = pydantic.Field(
        description="1 - perHour / onDemandEquivalentPerHour, in percent (one decimal)."
    )


class Alternative(base.ApiModel):
    """A mix the planner considered and did not choose."""

    summary: Annotated[str, pydantic.StringConstraints(max_length=1024)] = pydantic.Field(
        description="What the alternative was."
    )
    cost_per_hour: spec.Price | None = pydantic.Field(
        default=None, description="Its cost, USD per hour."
    )
    reason: Annotated[str, pydantic.StringConstraints(max_length=1024)] = pydantic.Field(
        description="Why it lost."
    )


class Decision(base.ApiModel):
    """The planner's most recent decision."""

    time: Time = pydantic.Field(description="When it was made.")
    generation: int | None = pydantic.Field(
        default=None, ge=0, description="The spec generation it was made for."
    )
    summary: Annotated[str, pydantic.StringConstraints(max_length=4096)] = pydantic.Field(
        description="What was decided and why, in one paragraph."
    )
    plan_hash: Annotated[str, pydantic.StringConstraints(max_length=64)] | None = pydantic.Field(
        default=None, description="Stable hash of the plan (identifies repeated decisions)."
    )
    alternatives: list[Alternative] | None = pydantic.Field(
        default=None, max_length=10, description="The best alternatives and why they lost."
    )


class LastError(base.ApiModel):
    """The most recent error the operator hit for this policy."""

    time: Time = pydantic.Field(description="When it happened.")
    reason: Reason = pydantic.Field(description="CamelCase classification.")
    code: Annotated[str, pydantic.StringConstraints(max_length=256)] | None = pydantic.Field(
        default=None,
        description="What identifies the error (the AWS operation and error code), so the "
        "same error is reported once, not on every retry.",
    )
    message: Message = pydantic.Field(description="Detail (never contains credentials).")


class AvoidedPool(base.ApiModel):
    """A pool the operator avoids after a capacity or quota answer, or an interruption."""

    pool: Annotated[str, pydantic.StringConstraints(max_length=128)] = pydantic.Field(
        description="The pool, `type/zone/market`."
    )
    until: Time = pydantic.Field(description="When it is tried again.")


class SpotPolicyStatus(base.ApiModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = pydantic.Field(
        default=None, ge=0, description="The spec generation the status describes."
    )
    conditions: list[Condition] | None = pydantic.Field(
        default=None,
        max_length=16,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
        description="Standard conditions, one per type.",
    )
    capacity: CapacityStatus | None = pydantic.Field(
        default=None, description="Desired and fulfilled capacity by market."
    )
    allocation: list[PoolAllocation] | None = pydantic.Field(
        default=None, max_length=500, description="Running instances per pool."
    )
    cost: CostStatus | None = pydantic.Field(default=None, description="Current cost and savings.")
    last_decision: Decision | None = pydantic.Field(
        default=None, description="The planner's most recent decision."
    )
    last_error: LastError | None = pydantic.Field(
        default=None, description="The most recent error, cleared by a clean reconcile."
    )
    avoided_pools: list[AvoidedPool] | None = pydantic.Field(
        default=None,
        max_length=50,
        description="Pools of the region avoided now (the soonest retried first; kept here so "
        "an operator restart does not try them again at once).",
    )
    replacements: list[Time] | None = pydantic.Field(
        default=None,
        max_length=1000,
        description="When each rebalance replacement of the past hour started (the "
        "maxReplacementsPerHour budget; kept here so it survives an operator restart).",
    )

    def to_patch(self) -> dict[str, object]:
        """JSON body for a status patch (camelCase, unset fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
