"""search indexes: calls by time, consents by decision, consents without a call

The auditor's search lists calls newest first by coalesce(started_at, created_at), keyset-
paginated on (that time, call_sid); it finds calls by decision through their consents, and
lists the consents without a call (API withdrawals) by capture time.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the three indexes."""
    op.create_index("ix_calls_time", "calls",
                    [sa.text("coalesce(started_at, created_at)"), "call_sid"])
    op.create_index("ix_consents_decision", "consents", ["decision", "call_sid"])
    op.create_index("ix_consents_loose", "consents", ["captured_at", "id"],
                    postgresql_where=sa.text("call_sid IS NULL"))


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_consents_loose", table_name="consents")
    op.drop_index("ix_consents_decision", table_name="consents")
    op.drop_index("ix_calls_time", table_name="calls")
