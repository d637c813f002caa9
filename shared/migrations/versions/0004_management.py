"""management API: route filters for pipeline events, attempt history across redrives, bulk dead-letter jobs

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for column in ("apps", "clusters", "pipelines"):
        op.add_column(
            "route",
            sa.Column(column, postgresql.ARRAY(sa.String(length=100)), server_default="{}", nullable=False),
        )
    op.add_column("attempt", sa.Column("redrives_ago", sa.SmallInteger(), server_default="0", nullable=False))
    # Same name, one more column: workers insert ON CONFLICT ON CONSTRAINT attempt_delivery_no_key.
    op.drop_constraint("attempt_delivery_no_key", "attempt", type_="unique")
    op.create_unique_constraint(
        "attempt_delivery_no_key", "attempt", ["delivery_id", "redrives_ago", "attempt_no"]
    )
    op.create_index(
        "delivery_dlq_updated_idx",
        "delivery",
        ["updated_at"],
        postgresql_where=sa.text("state IN ('dead', 'skipped')"),
    )
    op.create_index(
        "delivery_delivered_at_idx",
        "delivery",
        ["delivered_at"],
        postgresql_where=sa.text("state = 'delivered'"),
    )
    op.create_index("delivery_integration_created_idx", "delivery", ["integration_id", "created_at"])
    op.create_table(
        "bulk_job",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("filters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("matched", sa.Integer(), server_default="0", nullable=False),
        sa.Column("processed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("action IN ('redrive', 'purge')", name="bulk_job_action_valid"),
        sa.CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name="bulk_job_state_valid"),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("bulk_job")
    op.drop_index("delivery_integration_created_idx", table_name="delivery")
    op.drop_index("delivery_delivered_at_idx", table_name="delivery")
    op.drop_index("delivery_dlq_updated_idx", table_name="delivery")
    op.drop_constraint("attempt_delivery_no_key", "attempt", type_="unique")
    # Attempts from earlier budgets would collide on the old key; only the current budget survives a downgrade.
    op.execute("DELETE FROM attempt WHERE redrives_ago > 0")
    op.create_unique_constraint("attempt_delivery_no_key", "attempt", ["delivery_id", "attempt_no"])
    op.drop_column("attempt", "redrives_ago")
    for column in ("pipelines", "clusters", "apps"):
        op.drop_column("route", column)
