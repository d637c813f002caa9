"""delivery.provider_ref / previous_ref widened to 1024: an email's kept reference is its thread's References

An email lifecycle keeps, per delivered mail, the chain a reply to it carries (RFC 5322 References: the root's
Message-ID ... the mail's own), capped at 995 characters (providers/templates/email_thread.py); 255 held only
about five Message-IDs. Widening a varchar is a catalog change in PostgreSQL: no table rewrite, no long lock.

Revision ID: 0008_email_thread
Revises: 0008_circuits
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_email_thread"
down_revision = "0008_circuits"
branch_labels = None
depends_on = None

COLUMNS = ("provider_ref", "previous_ref")


def upgrade() -> None:
    for column in COLUMNS:
        op.alter_column("delivery", column, type_=sa.String(length=1024), existing_type=sa.String(length=255))


def downgrade() -> None:
    # A chain longer than 255 keeps its last Message-ID (the parent a next mail replies to).
    op.execute(
        "UPDATE delivery SET provider_ref = substring(provider_ref from '[^ ]+$') WHERE length(provider_ref) > 255"
    )
    op.execute(
        "UPDATE delivery SET previous_ref = substring(previous_ref from '[^ ]+$') WHERE length(previous_ref) > 255"
    )
    for column in COLUMNS:
        op.alter_column("delivery", column, type_=sa.String(length=255), existing_type=sa.String(length=1024))
