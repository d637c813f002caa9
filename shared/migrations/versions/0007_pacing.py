"""pacing: an integration may override its destination's default rate (issue 12)

`pace_per_s`/`pace_burst` NULL: the provider's documented default (providers/destinations.py). Waiting
deliveries (paced, over a bulkhead) get a partial index: the sweeper wakes them by next_attempt_at.

Revision ID: 0007_pacing
Revises: 0006_lifecycle
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_pacing"
down_revision = "0006_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("integration", sa.Column("pace_per_s", sa.Float(), nullable=True))
    op.add_column("integration", sa.Column("pace_burst", sa.SmallInteger(), nullable=True))
    op.create_check_constraint("integration_pace_per_s_positive", "integration", "pace_per_s > 0")
    op.create_check_constraint("integration_pace_burst_positive", "integration", "pace_burst >= 1")
    op.create_index(
        "delivery_waiting_idx", "delivery", ["next_attempt_at"], postgresql_where=sa.text("state = 'waiting'")
    )


def downgrade() -> None:
    op.drop_index("delivery_waiting_idx", table_name="delivery")
    op.drop_constraint("integration_pace_burst_positive", "integration", type_="check")
    op.drop_constraint("integration_pace_per_s_positive", "integration", type_="check")
    op.drop_column("integration", "pace_burst")
    op.drop_column("integration", "pace_per_s")
