"""lifecycle: a route's edit_in_place option, and each delivery's lifecycle group (issue 11)

`delivery.lifecycle_key` is the event's lifecycle key when its route edits in place (NULL otherwise): the
deliveries of one (lifecycle_key, integration) are ordered against each other (shared/delivery_lifecycles.py).

Revision ID: 0006_lifecycle
Revises: 0005_gateway
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_lifecycle"
down_revision = "0005_gateway"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("route", sa.Column("edit_in_place", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.add_column("delivery", sa.Column("lifecycle_key", sa.String(length=512), nullable=True))
    op.create_index(
        "delivery_lifecycle_idx",
        "delivery",
        ["lifecycle_key", "integration_id"],
        postgresql_where=sa.text("lifecycle_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("delivery_lifecycle_idx", table_name="delivery")
    op.drop_column("delivery", "lifecycle_key")
    op.drop_column("route", "edit_in_place")
