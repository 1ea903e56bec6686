"""audit_log append-only triggers

The same SQL that Database.create_all() installs (ivr.storage.audit_store.guard_statements):
UPDATE, DELETE and TRUNCATE of audit_log are refused, and an INSERT must extend the head.
The statements are idempotent; a later change to the guard gets its own revision that runs
them again.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

from ivr.storage.audit_store import TRIGGERS, guard_statements

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PG_FUNCTIONS = ("audit_log_append_only", "audit_log_extend_head")


def upgrade() -> None:
    """Install the append-only triggers on audit_log."""
    bind = op.get_bind()
    # Driver-level execution: the PL/pgSQL bodies hold % and : that no bind layer may touch.
    for stmt in guard_statements():
        bind.exec_driver_sql(stmt)


def downgrade() -> None:
    """Remove the triggers and their functions."""
    bind = op.get_bind()
    for name in TRIGGERS:
        bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON audit_log")
    for fn in _PG_FUNCTIONS:
        bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS {fn}()")
