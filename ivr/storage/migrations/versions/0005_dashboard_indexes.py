"""dashboard indexes: runs by start time and flow version, consents by flow version

The dashboard's notice drop-off reads the runs started in a period; the flow registry
reads each flow version's runs and the notice versions its consents heard.

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the three indexes."""
    op.create_index("ix_flow_runs_created_at", "flow_runs", ["created_at"])
    op.create_index("ix_flow_runs_flow_version", "flow_runs", ["flow_version", "created_at"])
    op.create_index("ix_consents_flow_version", "consents",
                    ["flow_version", "language", "notice_version"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_consents_flow_version", table_name="consents")
    op.drop_index("ix_flow_runs_flow_version", table_name="flow_runs")
    op.drop_index("ix_flow_runs_created_at", table_name="flow_runs")
