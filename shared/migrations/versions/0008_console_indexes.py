"""console indexes: every list query of the console and the JSON API pages by an index (issue 14)

The listings (api/queries/) order newest first and page by a row comparison on (timestamp, id):
- events, all projects: `event_created_idx` (created_at, id); one project keeps event_project_created_idx;
- deliveries, all integrations: `delivery_created_idx` (created_at, id); one integration keeps
  delivery_integration_created_idx; one state (e.g. every `retrying` delivery): `delivery_state_created_idx`.
Dead letters, attempts and incidents/things were already served (delivery_dlq_updated_idx, delivery_dead_idx,
attempt_delivery_no_key, gateway_lifecycle_*_idx).

Revision ID: 0008_console_indexes
Revises: 0008_console
"""

from __future__ import annotations

from alembic import op

revision = "0008_console_indexes"
down_revision = "0008_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("event_created_idx", "event", ["created_at", "id"])
    op.create_index("delivery_created_idx", "delivery", ["created_at", "id"])
    op.create_index("delivery_state_created_idx", "delivery", ["state", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("delivery_state_created_idx", table_name="delivery")
    op.drop_index("delivery_created_idx", table_name="delivery")
    op.drop_index("event_created_idx", table_name="event")
