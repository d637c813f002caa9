"""gateway: channels (PushGo credentials), incident/thing lifecycle state, dispatches with op_id idempotency

Revision ID: 0005_gateway
Revises: 0005_apidata
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_gateway"
down_revision = "0005_apidata"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("project", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    op.create_index("channel_project_idx", "channel", ["project"])
    op.create_table(
        "gateway_lifecycle",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=256)),
        sa.Column("description", sa.String(length=4096)),
        sa.Column("status", sa.String(length=24)),
        sa.Column("message", sa.String(length=512)),
        sa.Column("severity", sa.String(length=16)),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("attrs", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("details", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("last_event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("kind", "object_id", name="gateway_lifecycle_kind_object_key"),
        sa.CheckConstraint("kind IN ('incident', 'thing')", name="gateway_lifecycle_kind_valid"),
    )
    op.create_index("gateway_lifecycle_list_idx", "gateway_lifecycle", ["kind", "created_at", "id"])
    op.create_index(
        "gateway_lifecycle_channel_idx", "gateway_lifecycle", ["kind", "channel_id", "created_at", "id"]
    )
    op.create_index(
        "gateway_lifecycle_project_idx", "gateway_lifecycle", ["kind", "project", "created_at", "id"]
    )
    op.create_table(
        "gateway_dispatch",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("channel_id", sa.String(length=64), nullable=False),
        sa.Column("op_id", sa.String(length=128), nullable=False),
        sa.Column("route", sa.String(length=32), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("lifecycle_id", postgresql.UUID(as_uuid=True)),
        sa.Column("sequence", sa.Integer()),
        sa.Column("event_row_id", postgresql.UUID(as_uuid=True)),
        sa.Column("event_time", sa.DateTime(timezone=True)),
        sa.Column("response", postgresql.JSONB()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("channel_id", "op_id", name="gateway_dispatch_op_key"),
    )
    op.create_index("gateway_dispatch_lifecycle_idx", "gateway_dispatch", ["lifecycle_id", "sequence"])


def downgrade() -> None:
    op.drop_table("gateway_dispatch")
    op.drop_table("gateway_lifecycle")
    op.drop_table("channel")
