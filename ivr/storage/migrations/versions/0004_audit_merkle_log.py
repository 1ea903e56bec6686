"""audit log becomes a Merkle log: leaf queue, tree nodes, signed tree heads

Every existing entry is kept, in seq order, as the first leaves: its leaf hash,
SHA-256(0x00 || body), and the tree's complete nodes above them go to audit_tree. Its hash-chain
columns (prev_hash, hash) and the old checkpoints stay, so the chain stays verifiable.

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The guard as frozen when it was last changed (0004 installs the same file).
GUARD_SQL = Path(__file__).with_name("0002_audit_guard.sql")
TRIGGERS = ["audit_log_append_only", "audit_log_no_truncate", "audit_log_extend_head"]


def guard_statements() -> list[str]:
    """The guard's SQL, from the frozen file."""
    return [GUARD_SQL.read_text("utf-8")]


_BATCH = 5000


# RFC 9162's hashes, frozen here (the migration imports no live module): a leaf is
# SHA-256(0x00 || body), a node SHA-256(0x01 || left || right).
def _leaf_hash(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


class _RightEdge:
    """The perfect subtrees on the right edge of a growing tree; each completed node is
    handed to `on_node(level, index, hash)`."""

    def __init__(self):
        self.size = 0
        self.peaks: list[bytes] = []

    def append(self, h: bytes, on_node) -> None:
        index, level = self.size, 0
        self.size += 1
        while index & 1:
            h = hashlib.sha256(b"\x01" + self.peaks.pop() + h).digest()
            index >>= 1
            level += 1
            on_node(level, index, h)
        self.peaks.append(h)


def _drop_guard(bind) -> None:
    for name in TRIGGERS:
        bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON audit_log")


def upgrade() -> None:
    """Add the queue, the tree and the tree heads; give every entry its leaf hash."""
    bind = op.get_bind()
    op.create_table(
        "audit_queue",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_queue")),
    )
    with op.batch_alter_table("audit_queue", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_queue_ref"), ["ref"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_queue_queued_at"), ["queued_at"],
                              unique=False)
    op.create_table(
        "audit_tree",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_audit_tree")),
    )
    op.create_table(
        "audit_tree_heads",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_tree_heads")),
    )
    with op.batch_alter_table("audit_tree_heads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_tree_heads_tree_size"), ["tree_size"],
                              unique=False)

    # The append-only guard would refuse the new columns' rewrite: lift it meanwhile.
    _drop_guard(bind)
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("integrated_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=True)

    log = sa.table("audit_log", sa.column("seq", sa.BigInteger), sa.column("body", sa.Text))
    nodes = sa.table("audit_tree", sa.column("level", sa.SmallInteger),
                     sa.column("idx", sa.BigInteger), sa.column("hash", sa.LargeBinary))
    compact = _RightEdge()
    last = 0
    while True:
        rows = bind.execute(sa.select(log.c.seq, log.c.body).where(log.c.seq > last)
                            .order_by(log.c.seq).limit(_BATCH)).all()
        if not rows:
            break
        made = []
        for seq, body in rows:
            if seq != compact.size + 1:
                raise RuntimeError(f"audit_log has a gap before seq {seq}: run `audit verify` "
                                   "on the previous release and restore the log first")
            h = _leaf_hash(body.encode("utf-8"))
            made.append({"level": 0, "idx": seq - 1, "hash": h})
            compact.append(h, lambda lv, i, hh, out=made: out.append(
                {"level": lv, "idx": i, "hash": hh}))
        bind.execute(sa.insert(nodes), made)
        last = rows[-1][0]

    for stmt in guard_statements():
        bind.exec_driver_sql(stmt)


def downgrade() -> None:
    """Back to the hash chain alone (only while every entry is still a chain entry)."""
    bind = op.get_bind()
    merkle_only = bind.execute(sa.text("SELECT COUNT(*) FROM audit_log WHERE hash IS NULL")
                               ).scalar()
    queued = bind.execute(sa.text("SELECT COUNT(*) FROM audit_queue")).scalar()
    if merkle_only or queued:
        raise RuntimeError(f"{merkle_only} Merkle-only entries and {queued} queued leaves "
                           "have no place in a hash chain: downgrade refused")
    _drop_guard(bind)
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_column("integrated_at")
        batch_op.drop_column("queued_at")
    with op.batch_alter_table("audit_tree_heads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_tree_heads_tree_size"))
    op.drop_table("audit_tree_heads")
    op.drop_table("audit_tree")
    with op.batch_alter_table("audit_queue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_queue_queued_at"))
        batch_op.drop_index(batch_op.f("ix_audit_queue_ref"))
    op.drop_table("audit_queue")
    for stmt in guard_statements():
        bind.exec_driver_sql(stmt)
