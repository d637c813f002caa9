"""console: server-side sessions of the browser console (issue 14)

The cookie carries a random token; the row holds its SHA-256 only, the API key it was exchanged for (deleting
the key deletes its sessions) and the expiry (expired rows are swept at login, served by the expiry index).

Revision ID: 0008_console
Revises: 0007_pacing
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0008_console"
down_revision = "0007_pacing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_session",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "api_key_id",
            UUID(as_uuid=True),
            sa.ForeignKey("api_key.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("console_session_expires_idx", "console_session", ["expires_at"])
    op.create_index("console_session_api_key_idx", "console_session", ["api_key_id"])


def downgrade() -> None:
    op.drop_index("console_session_api_key_idx", table_name="console_session")
    op.drop_index("console_session_expires_idx", table_name="console_session")
    op.drop_table("console_session")
