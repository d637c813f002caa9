"""circuits: a circuit per integration, operational-event rate limits, auto-disable reason (issue 12)

The circuit lives on the integration row, which every claim already loads (no extra read on the healthy path):
`circuit_state` closed | open | half_open, why (`circuit_reason`), since when it is (not) closed
(`circuit_since`), the run of consecutive retryable failures (`circuit_failures`), failed probes of this
episode (`circuit_probes`, which grow the probe interval), the next probe (or, half open, the probe's
deadline: `circuit_probe_at`) and the delivery sent as the probe (`circuit_probe_id`). `disabled_reason` says
why an integration was disabled automatically.

`operational_notice` remembers when each operational event was last emitted per subject (an integration, a
project), so they are rate limited across every worker and sweeper.

`delivery_backlog_idx`: an integration's unfinished deliveries oldest first, for choosing the probe and
releasing the backlog in order when a circuit closes (without walking the integration's delivered history).

Revision ID: 0008_circuits
Revises: 0008_console_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_circuits"
down_revision = "0008_console_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "integration", sa.Column("circuit_state", sa.String(16), nullable=False, server_default="closed")
    )
    op.add_column("integration", sa.Column("circuit_reason", sa.String(200), nullable=True))
    op.add_column(
        "integration",
        sa.Column("circuit_since", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.add_column(
        "integration", sa.Column("circuit_failures", sa.SmallInteger(), nullable=False, server_default="0")
    )
    op.add_column(
        "integration", sa.Column("circuit_probes", sa.SmallInteger(), nullable=False, server_default="0")
    )
    op.add_column("integration", sa.Column("circuit_probe_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("integration", sa.Column("circuit_probe_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.add_column("integration", sa.Column("disabled_reason", sa.String(200), nullable=True))
    op.create_check_constraint(
        "integration_circuit_state_valid", "integration", "circuit_state IN ('closed', 'open', 'half_open')"
    )
    op.create_index(
        "integration_circuit_idx",
        "integration",
        ["circuit_probe_at"],
        postgresql_where=sa.text("circuit_state <> 'closed'"),
    )
    op.create_table(
        "operational_notice",
        sa.Column("subject", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "delivery_backlog_idx",
        "delivery",
        ["integration_id", "created_at"],
        postgresql_where=sa.text("state IN ('pending', 'retrying', 'waiting')"),
    )


def downgrade() -> None:
    op.drop_index("delivery_backlog_idx", table_name="delivery")
    op.drop_table("operational_notice")
    op.drop_index("integration_circuit_idx", table_name="integration")
    op.drop_constraint("integration_circuit_state_valid", "integration", type_="check")
    for column in (
        "disabled_reason",
        "circuit_probe_id",
        "circuit_probe_at",
        "circuit_probes",
        "circuit_failures",
        "circuit_since",
        "circuit_reason",
        "circuit_state",
    ):
        op.drop_column("integration", column)
