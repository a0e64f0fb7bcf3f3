"""SQLModel tables of the store. Money is stored as text (exact decimals, USD); times are
UTC. The schema is owned by the Alembic revisions in ``store/migrations`` (start-up runs
``upgrade head``); a change here needs a new revision, and ``tests`` check that the
revisions and these tables agree.

- ``decisions``: one reconcile decision of one policy (when it changed or acted).
- ``actions``: one launch (CreateFleet) or terminate (TerminateInstances) call.
- ``interruptions``: one notice about an owned instance, and its replacement.
- ``price_observations``: spot price points ingested from DescribeSpotPriceHistory.
- ``savings_ledger``: per policy per hour, what the fleet cost and saved.
- ``model_versions``: risk-model artifacts trained from the store, and their verdicts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _utc(**kw: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kw)


class DecisionRecord(SQLModel, table=True):
    """One reconcile decision of one policy: what was planned, what it costs, what it saves."""

    __tablename__ = "decisions"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = _utc(index=True)  # UTC
    namespace: str = Field(index=True)
    policy: str = Field(index=True)
    policy_uid: str
    generation: int
    outcome: str
    plan_hash: str
    summary: str
    cost_per_hour: str  # USD/h, decimal string
    on_demand_equivalent_per_hour: str  # USD/h, decimal string
    savings_pct: str  # percent, decimal string
    launches: int = 0
    terminations: int = 0
    dry_run: bool = False
    # -- revision 0002 ------------------------------------------------------------
    #: the plan's targets, launches, terminations and capacity (Plan fields as JSON)
    plan: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    #: the plan's explanation (chosen and rejected pools, notes)
    explanation: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    engine_version: str | None = None
    model_version: str | None = None
    unit: str | None = None  # the policy's capacity unit
    capacity_spot: str | None = None  # planned capacity on spot, in ``unit``
    capacity_on_demand: str | None = None  # planned capacity on-demand, in ``unit``


class ActionRecord(SQLModel, table=True):
    """One call that changed EC2 for a policy: a launch into one pool, or a terminate."""

    __tablename__ = "actions"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = _utc(index=True)
    namespace: str = Field(index=True)
    policy: str = Field(index=True)
    policy_uid: str
    kind: str  # "launch" | "terminate"
    pool: str | None = None  # Pool.key() (launch); None for a terminate of several pools
    count_requested: int = 0
    instance_ids: list[str] = Field(default_factory=list, sa_type=JSON)  # got / terminated
    request_id: str | None = None  # AWS request id, when the answer carried one
    client_token: str | None = None  # the launch's idempotency token
    outcome: str  # "ok" | "partial" | "failed" | "error"
    error_code: str | None = None
    duration_seconds: float = 0.0
    reason: str | None = None  # terminate: scale-in / rebalance / not-eligible (joined)


class InterruptionRecord(SQLModel, table=True):
    """One interruption notice about an owned instance and what replaced it. Written at the
    notice, then again (same ``id``) when the replacement is launched and when it runs."""

    __tablename__ = "interruptions"

    id: str = Field(primary_key=True)  # "<instance>/<kind>/<notice time>"
    at: dt.datetime = _utc(index=True)  # when the operator received the notice
    namespace: str = Field(index=True)
    policy: str = Field(index=True)
    policy_uid: str
    instance_id: str
    pool: str  # Pool.key()
    kind: str  # "warning" | "rebalance" | "state-change"
    notice_at: dt.datetime = _utc()  # the event's own time
    replacement_ids: list[str] = Field(default_factory=list, sa_type=JSON)
    replaced_at: dt.datetime | None = _utc(default=None)  # replacements launched
    running_at: dt.datetime | None = _utc(default=None)  # every replacement running
    time_to_replace_seconds: float | None = None  # notice -> replacements running


class PriceObservation(SQLModel, table=True):
    """One spot price point (USD per instance-hour); unique per point."""

    __tablename__ = "price_observations"
    __table_args__ = (
        UniqueConstraint("region", "zone", "instance_type", "product", "at", name="uq_price_point"),
    )

    id: int | None = Field(default=None, primary_key=True)
    region: str = Field(index=True)
    zone: str
    instance_type: str = Field(index=True)
    product: str  # "Linux/UNIX"
    at: dt.datetime = _utc(index=True)
    price: str  # USD/h, decimal string as EC2 returned it


class SavingsLedgerRow(SQLModel, table=True):
    """One policy's hour: cost, on-demand-equivalent cost, capacity-hours by market and
    interruptions, rolled up from decisions, actions and interruptions."""

    __tablename__ = "savings_ledger"
    __table_args__ = (UniqueConstraint("namespace", "policy", "hour", name="uq_ledger_hour"),)

    id: int | None = Field(default=None, primary_key=True)
    namespace: str = Field(index=True)
    policy: str = Field(index=True)
    policy_uid: str
    hour: dt.datetime = _utc(index=True)  # start of the hour, UTC
    covered_hours: str  # how much of the hour the roll-up covered (0..1; < 1: in progress)
    cost: str  # USD
    on_demand_equivalent: str  # USD
    savings: str  # USD (on-demand equivalent - cost)
    unit: str | None = None
    capacity_hours_spot: str = "0"  # unit-hours
    capacity_hours_on_demand: str = "0"
    interruptions: int = 0
    replacements: int = 0
    launches: int = 0
    terminations: int = 0
    rate_per_hour: str = "0"  # USD/h in force at the end of the covered span
    rolled_up_at: dt.datetime = _utc()


class ModelVersion(SQLModel, table=True):
    """A risk-model artifact trained from the store: its hash, window, metrics, verdict."""

    __tablename__ = "model_versions"

    id: int | None = Field(default=None, primary_key=True)
    artifact_sha256: str = Field(index=True, unique=True)
    created_at: dt.datetime = _utc()
    region: str
    name: str
    training_window: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    verdict: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    promoted: bool = False
    promoted_at: dt.datetime | None = _utc(default=None)
    artifact: str = Field(sa_type=Text)  # the artifact JSON


#: Every table, in the order the revisions create them.
TABLES = (
    DecisionRecord,
    ActionRecord,
    InterruptionRecord,
    PriceObservation,
    SavingsLedgerRow,
    ModelVersion,
)
