"""The decisions table exactly as release 0.1.0 created it (``SQLModel.metadata.create_all``).

A database made by that release has this table and no ``alembic_version``: start-up
stamps it at this revision (its rows stay) and upgrades from here.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = AutoString
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("namespace", s(), nullable=False),
        sa.Column("policy", s(), nullable=False),
        sa.Column("policy_uid", s(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("outcome", s(), nullable=False),
        sa.Column("plan_hash", s(), nullable=False),
        sa.Column("summary", s(), nullable=False),
        sa.Column("cost_per_hour", s(), nullable=False),
        sa.Column("on_demand_equivalent_per_hour", s(), nullable=False),
        sa.Column("savings_pct", s(), nullable=False),
        sa.Column("launches", sa.Integer(), nullable=False),
        sa.Column("terminations", sa.Integer(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_decisions_at", "decisions", ["at"])
    op.create_index("ix_decisions_policy", "decisions", ["policy"])
    op.create_index("ix_decisions_namespace", "decisions", ["namespace"])


def downgrade() -> None:
    op.drop_table("decisions")
