"""one write path: every case of every webhook in its function, and /voice/transfer's

Revision ID: 0008
Revises: 0007

Replaces 0007's webhook functions with this migration's own frozen copy
(0008_one_write_path.sql, written from ivr/storage/sql/webhook_functions.sql and the
declarations in ivr/storage/webhook_functions.py when this release was made; the tests
check that the newest migration's copy is the live one).
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent
# 0007's webhook functions (its down file also drops the sequencer's, which stays).
_OLD = ("DROP FUNCTION IF EXISTS ivr_webhook_incoming, ivr_webhook_gather, ivr_webhook_status,"
        " ivr_webhook_recording, ivr_queue_leaves, ivr_ordered_times;")


def upgrade() -> None:
    """Drop 0007's webhook functions and create this release's."""
    bind = op.get_bind()
    bind.exec_driver_sql(_OLD)
    bind.exec_driver_sql((HERE / "0008_one_write_path.sql").read_text("utf-8"))


def downgrade() -> None:
    """Back to 0007's webhook functions."""
    bind = op.get_bind()
    bind.exec_driver_sql((HERE / "0008_one_write_path.down.sql").read_text("utf-8"))
    bind.exec_driver_sql((HERE / "0007_webhook_functions.sql").read_text("utf-8"))
