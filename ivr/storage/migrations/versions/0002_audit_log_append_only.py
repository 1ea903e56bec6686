"""audit_log append-only triggers

This migration's own frozen copy of the guard (0002_audit_guard.sql), as 0004 installs it:
UPDATE, DELETE and TRUNCATE of audit_log are refused, and an INSERT must extend the head.
The statements are idempotent; a later change to the guard gets its own revision that runs
them again.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The guard as frozen when it was last changed (0004 installs the same file).
GUARD_SQL = Path(__file__).with_name("0002_audit_guard.sql")
TRIGGERS = ["audit_log_append_only", "audit_log_no_truncate", "audit_log_extend_head"]


def guard_statements() -> list[str]:
    """The guard's SQL, from the frozen file."""
    return [GUARD_SQL.read_text("utf-8")]

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
