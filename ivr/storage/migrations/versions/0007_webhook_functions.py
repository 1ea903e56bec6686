"""webhook functions: each Twilio webhook's writes as one PostgreSQL function (issue 14)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

from ivr.storage import webhook_functions

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ivr_webhook_incoming, _gather, _status and _recording (PostgreSQL only: SQLite
    keeps the ORM verbs)."""
    for stmt in webhook_functions.create_statements(op.get_bind().dialect.name):
        op.get_bind().exec_driver_sql(stmt)


def downgrade() -> None:
    """Drop them; the webhooks take the ORM path again."""
    for stmt in webhook_functions.drop_statements(op.get_bind().dialect.name):
        op.get_bind().exec_driver_sql(stmt)
