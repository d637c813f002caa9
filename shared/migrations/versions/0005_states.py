"""delivery state machine: superseded/waiting states, a pacing count and a budget clock per delivery

Revision ID: 0005_states
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_states"
down_revision = "0004"
branch_labels = None
depends_on = None

_STATES = ("pending", "sending", "retrying", "delivered", "dead", "skipped", "superseded", "waiting")
_OLD_STATES = ("pending", "sending", "retrying", "delivered", "dead", "skipped")


def upgrade() -> None:
    op.drop_constraint("delivery_state_valid", "delivery", type_="check")
    op.create_check_constraint("delivery_state_valid", "delivery", f"state IN {_STATES!r}")
    # Attempts that were the vendor pacing us (429/503 naming its wait): not counted against the retry budget.
    op.add_column("delivery", sa.Column("paced_count", sa.SmallInteger(), server_default="0", nullable=False))
    # When the current budget's first attempt was claimed (reset by a redrive): bounds pacing by elapsed time.
    op.add_column("delivery", sa.Column("budget_started_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("delivery", "budget_started_at")
    op.drop_column("delivery", "paced_count")
    op.drop_constraint("delivery_state_valid", "delivery", type_="check")
    op.create_check_constraint("delivery_state_valid", "delivery", f"state IN {_OLD_STATES!r}")
