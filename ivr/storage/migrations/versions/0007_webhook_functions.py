"""webhook functions: each Twilio webhook's writes, and the sequencer's integration pass, as
PostgreSQL functions (issue 14)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

from ivr.storage import audit_functions, webhook_functions

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ivr_webhook_incoming, _gather, _status, _recording and ivr_audit_integrate."""
    for stmt in webhook_functions.create_statements() + audit_functions.create_statements():
        op.get_bind().exec_driver_sql(stmt)


def downgrade() -> None:
    """Drop them (for the previous release's code, which has its own paths without them)."""
    for stmt in webhook_functions.drop_statements() + audit_functions.drop_statements():
        op.get_bind().exec_driver_sql(stmt)
