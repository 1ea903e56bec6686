"""daily aggregates: counts per Istanbul day for the dashboard, the flow registry and the
drop-off, and the triggers that mark the days a write changed

Revision ID: 0012
Revises: 0011

Five tables (daily_consents, daily_notices, daily_runs, daily_hangups, aggregate_marks), a partial
index of the runs that hung up (the drop-off's list, newest first), and the triggers from
this migration's own frozen copy (0012_daily_aggregates.sql, written from
ivr/storage/sql/daily_aggregates.sql when this release was made). The tables start empty:
`python -m ivr db rebuild-aggregates` counts the stored calls into them (until then the
pages show only what was written after the upgrade).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent
_DROP = """
DROP TRIGGER IF EXISTS ivr_consents_mark ON consents;
DROP TRIGGER IF EXISTS ivr_consents_mark_update ON consents;
DROP TRIGGER IF EXISTS ivr_runs_mark ON flow_runs;
DROP TRIGGER IF EXISTS ivr_runs_mark_update ON flow_runs;
DROP TRIGGER IF EXISTS ivr_calls_mark ON calls;
DROP FUNCTION IF EXISTS ivr_consents_mark, ivr_runs_mark, ivr_calls_mark, ivr_mark_day,
  ivr_istanbul_day;
"""


def upgrade() -> None:
    """Create the aggregate tables, the hang-ups index and the triggers."""
    op.create_table(
        "daily_consents",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("agent_id", sa.String(length=100), nullable=False),
        sa.Column("flow_version", sa.String(length=64), nullable=False),
        sa.Column("notice_version", sa.String(length=64), nullable=False),
        sa.Column("consents", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "decision", "language", "origin", "agent_id",
                                "flow_version", "notice_version", name="pk_daily_consents"),
    )
    op.create_table(
        "daily_notices",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("flow_version", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("notice_version", sa.String(length=64), nullable=False),
        sa.Column("consents", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "flow_version", "language", "notice_version",
                                name="pk_daily_notices"),
    )
    op.create_table(
        "daily_runs",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("flow_version", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("hidden", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "flow_version", "language", name="pk_daily_runs"),
    )
    op.create_table(
        "daily_hangups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("phase", sa.String(length=100), nullable=False),
        sa.Column("hangups", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "language", "phase", name="pk_daily_hangups"),
    )
    op.create_table(
        "aggregate_marks",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_aggregate_marks"),
    )
    op.create_index("ix_aggregate_marks_day", "aggregate_marks", ["day"])
    op.create_index("ix_flow_runs_hangups", "flow_runs", ["created_at", "id"],
                    postgresql_where=sa.text("hangup_at IS NOT NULL"))
    op.get_bind().exec_driver_sql((HERE / "0012_daily_aggregates.sql").read_text("utf-8"))


def downgrade() -> None:
    """Drop the triggers, the index and the aggregate tables."""
    op.get_bind().exec_driver_sql(_DROP)
    op.drop_index("ix_flow_runs_hangups", table_name="flow_runs")
    op.drop_index("ix_aggregate_marks_day", table_name="aggregate_marks")
    for table in ("aggregate_marks", "daily_hangups", "daily_runs", "daily_notices",
                  "daily_consents"):
        op.drop_table(table)
