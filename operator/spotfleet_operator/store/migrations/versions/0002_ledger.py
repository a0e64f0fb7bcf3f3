"""The ledger: the plan and its explanation on decisions (JSON), engine and model
versions; the actions, interruptions, price_observations, savings_ledger and
model_versions tables. Only adds: every existing decision row is kept as it was.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = AutoString
T = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("decisions") as b:
        b.add_column(sa.Column("plan", sa.JSON(), nullable=True))
        b.add_column(sa.Column("explanation", sa.JSON(), nullable=True))
        b.add_column(sa.Column("engine_version", S(), nullable=True))
        b.add_column(sa.Column("model_version", S(), nullable=True))
        b.add_column(sa.Column("unit", S(), nullable=True))
        b.add_column(sa.Column("capacity_spot", S(), nullable=True))
        b.add_column(sa.Column("capacity_on_demand", S(), nullable=True))

    op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", T, nullable=False),
        sa.Column("namespace", S(), nullable=False),
        sa.Column("policy", S(), nullable=False),
        sa.Column("policy_uid", S(), nullable=False),
        sa.Column("kind", S(), nullable=False),
        sa.Column("pool", S(), nullable=True),
        sa.Column("count_requested", sa.Integer(), nullable=False),
        sa.Column("instance_ids", sa.JSON(), nullable=False),
        sa.Column("request_id", S(), nullable=True),
        sa.Column("client_token", S(), nullable=True),
        sa.Column("outcome", S(), nullable=False),
        sa.Column("error_code", S(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("reason", S(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_actions_at", "actions", ["at"])
    op.create_index("ix_actions_namespace", "actions", ["namespace"])
    op.create_index("ix_actions_policy", "actions", ["policy"])

    op.create_table(
        "interruptions",
        sa.Column("id", S(), nullable=False),
        sa.Column("at", T, nullable=False),
        sa.Column("namespace", S(), nullable=False),
        sa.Column("policy", S(), nullable=False),
        sa.Column("policy_uid", S(), nullable=False),
        sa.Column("instance_id", S(), nullable=False),
        sa.Column("pool", S(), nullable=False),
        sa.Column("kind", S(), nullable=False),
        sa.Column("notice_at", T, nullable=False),
        sa.Column("replacement_ids", sa.JSON(), nullable=False),
        sa.Column("replaced_at", T, nullable=True),
        sa.Column("running_at", T, nullable=True),
        sa.Column("time_to_replace_seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_interruptions_at", "interruptions", ["at"])
    op.create_index("ix_interruptions_namespace", "interruptions", ["namespace"])
    op.create_index("ix_interruptions_policy", "interruptions", ["policy"])

    op.create_table(
        "price_observations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("region", S(), nullable=False),
        sa.Column("zone", S(), nullable=False),
        sa.Column("instance_type", S(), nullable=False),
        sa.Column("product", S(), nullable=False),
        sa.Column("at", T, nullable=False),
        sa.Column("price", S(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "region", "zone", "instance_type", "product", "at", name="uq_price_point"
        ),
    )
    op.create_index("ix_price_observations_region", "price_observations", ["region"])
    op.create_index("ix_price_observations_instance_type", "price_observations", ["instance_type"])
    op.create_index("ix_price_observations_at", "price_observations", ["at"])

    op.create_table(
        "savings_ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", S(), nullable=False),
        sa.Column("policy", S(), nullable=False),
        sa.Column("policy_uid", S(), nullable=False),
        sa.Column("hour", T, nullable=False),
        sa.Column("covered_hours", S(), nullable=False),
        sa.Column("cost", S(), nullable=False),
        sa.Column("on_demand_equivalent", S(), nullable=False),
        sa.Column("savings", S(), nullable=False),
        sa.Column("unit", S(), nullable=True),
        sa.Column("capacity_hours_spot", S(), nullable=False),
        sa.Column("capacity_hours_on_demand", S(), nullable=False),
        sa.Column("interruptions", sa.Integer(), nullable=False),
        sa.Column("replacements", sa.Integer(), nullable=False),
        sa.Column("launches", sa.Integer(), nullable=False),
        sa.Column("terminations", sa.Integer(), nullable=False),
        sa.Column("rate_per_hour", S(), nullable=False),
        sa.Column("rolled_up_at", T, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace", "policy", "hour", name="uq_ledger_hour"),
    )
    op.create_index("ix_savings_ledger_namespace", "savings_ledger", ["namespace"])
    op.create_index("ix_savings_ledger_policy", "savings_ledger", ["policy"])
    op.create_index("ix_savings_ledger_hour", "savings_ledger", ["hour"])

    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("artifact_sha256", S(), nullable=False),
        sa.Column("created_at", T, nullable=False),
        sa.Column("region", S(), nullable=False),
        sa.Column("name", S(), nullable=False),
        sa.Column("training_window", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.JSON(), nullable=False),
        sa.Column("promoted", sa.Boolean(), nullable=False),
        sa.Column("promoted_at", T, nullable=True),
        sa.Column("artifact", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_model_versions_artifact_sha256", "model_versions", ["artifact_sha256"], unique=True
    )


def downgrade() -> None:
    for name in ("model_versions", "savings_ledger", "price_observations", "interruptions"):
        op.drop_table(name)
    op.drop_table("actions")
    with op.batch_alter_table("decisions") as b:
        for col in (
            "capacity_on_demand",
            "capacity_spot",
            "unit",
            "model_version",
            "engine_version",
            "explanation",
            "plan",
        ):
            b.drop_column(col)
