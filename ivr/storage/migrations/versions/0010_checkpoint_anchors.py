"""checkpoint anchors: RFC 3161 time-stamp tokens and C2SP witness cosignatures

Revision ID: 0010
Revises: 0008

One table, audit_anchors: for each signed checkpoint (audit_tree_heads), the time-stamps and
cosignatures it is waiting for ('wanted') or has ('done', with the verified token or
cosignature line), with the retry schedule of the ones still wanted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create audit_anchors."""
    op.create_table(
        "audit_anchors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("head_id", sa.Integer(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("data", sa.Text(), nullable=True),
        sa.Column("anchored_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["head_id"], ["audit_tree_heads.id"],
                                name="fk_audit_anchors_head_id_audit_tree_heads"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_anchors"),
        sa.UniqueConstraint("head_id", "kind", "target",
                            name="uq_audit_anchors_head_id_kind_target"),
    )
    op.create_index("ix_audit_anchors_state_kind", "audit_anchors",
                    ["state", "kind", "tree_size"])


def downgrade() -> None:
    """Drop audit_anchors."""
    op.drop_index("ix_audit_anchors_state_kind", table_name="audit_anchors")
    op.drop_table("audit_anchors")
