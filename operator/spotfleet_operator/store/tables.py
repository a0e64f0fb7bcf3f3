"""SQLModel tables of the audit store. Money is stored as text (exact decimals)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime
from sqlmodel import Field, SQLModel


class DecisionRecord(SQLModel, table=True):
    """One reconcile decision of one policy: what was planned, what it costs, what it saves."""

    __tablename__ = "decisions"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = Field(sa_type=DateTime(timezone=True), index=True)  # UTC
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
