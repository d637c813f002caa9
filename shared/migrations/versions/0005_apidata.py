"""API data: columns sized from the schemas, idempotency keys unique per project, lifecycle index, OAuth states

- `event.idempotency_key` held `project/key` in a String(200), but a project is up to 100 characters and a key
  up to 128, and the separator was ambiguous (`a` + `b/x` and `a/b` + `x` collided). The key is now stored as
  the client sent it, unique together with the project; existing rows lose their `project/` prefix.
- `event.lifecycle_key` reaches 512 characters for pipelines (shared/events.py), and is indexed: fan-out looks
  up the previous message of each lifecycle.
- `oauth_state`: the server-side half of an OAuth connect (a nonce consumed once, bound to the browser).

Revision ID: 0005_apidata
Revises: 0005_states
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_apidata"
down_revision = "0005_states"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("event", "lifecycle_key", type_=sa.String(length=512))
    op.drop_constraint("event_idempotency_key_key", "event", type_="unique")
    op.execute(
        "UPDATE event SET idempotency_key = substr(idempotency_key, length(project) + 2) "
        "WHERE starts_with(idempotency_key, project || '/')"
    )
    # Without the prefix every key fits the schema's 128 (the API's test events use 48).
    op.alter_column("event", "idempotency_key", type_=sa.String(length=128))
    op.create_unique_constraint("event_project_idempotency_key", "event", ["project", "idempotency_key"])
    op.create_index("event_lifecycle_key_idx", "event", ["lifecycle_key"])
    op.create_table(
        "oauth_state",
        sa.Column("state_hash", sa.String(length=64), primary_key=True),
        sa.Column("browser_hash", sa.String(length=64), nullable=False),
        sa.Column("vendor", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("project", sa.String(length=100), nullable=True),
        sa.Column("api_key_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("oauth_state_expires_idx", "oauth_state", ["expires_at"])


def downgrade() -> None:
    op.drop_table("oauth_state")
    op.drop_index("event_lifecycle_key_idx", table_name="event")
    op.drop_constraint("event_project_idempotency_key", "event", type_="unique")
    op.alter_column("event", "idempotency_key", type_=sa.String(length=255))
    op.execute("UPDATE event SET idempotency_key = project || '/' || idempotency_key")
    op.alter_column("event", "lifecycle_key", type_=sa.String(length=512))
    op.create_unique_constraint("event_idempotency_key_key", "event", ["idempotency_key"])
