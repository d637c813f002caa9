"""delivery.previous_ref: the vendor message an event of the same lifecycle should edit in place

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("delivery", sa.Column("previous_ref", sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column("delivery", "previous_ref")
