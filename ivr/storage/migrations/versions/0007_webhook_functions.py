"""webhook functions: each Twilio webhook's writes, and the sequencer's integration pass, as
PostgreSQL functions

Revision ID: 0007
Revises: 0006

The SQL is this migration's own frozen copy (0007_webhook_functions.sql): a migration never
imports the live functions, so it means the same thing whatever later releases change.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    """Create ivr_webhook_incoming, _gather, _status, _recording and ivr_audit_integrate."""
    op.get_bind().exec_driver_sql((HERE / "0007_webhook_functions.sql").read_text("utf-8"))


def downgrade() -> None:
    """Drop them (for the previous release's code, which has its own paths without them)."""
    op.get_bind().exec_driver_sql(
        (HERE / "0007_webhook_functions.down.sql").read_text("utf-8"))
