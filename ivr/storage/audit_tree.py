"""The stored Merkle tree: leaf hashes and complete interior nodes, by position, in audit_tree,
and the proofs handed to outside parties (hashes and leaf bytes in standard base64).

Reads work on a Session or a Connection alike. A subtree that is not a complete node (the
right edge of a tree whose size is not a power of two) is hashed from complete nodes, so a
proof costs O(log² n) point reads at worst and never a scan.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ivr.audit import merkle
from ivr.audit.errors import AuditError
from ivr.audit.proofs import b64

from .models import AuditEntry, AuditNode, AuditQueue, AuditTreeHead, Call


def size(conn) -> int:
    """The number of integrated leaves."""
    return conn.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0)))


def node(conn, level: int, idx: int) -> bytes:
    """The stored hash of a complete subtree (a leaf hash at level 0)."""
    h = conn.scalar(select(AuditNode.hash).where(AuditNode.level == level,
                                                 AuditNode.idx == idx))
    if h is None:
        raise LookupError(f"tree node ({level}, {idx}) is not stored")
    return bytes(h)


class StoredTree:
    """Proofs over the stored tree (nodes are cached for the life of the object)."""

    def __init__(self, conn):
        self.conn = conn
        self._cache: dict[tuple[int, int], bytes] = {}

    def _node(self, level: int, idx: int) -> bytes:
        key = (level, idx)
        if key not in self._cache:
            self._cache[key] = node(self.conn, level, idx)
        return self._cache[key]

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves lo..hi-1 (lo is always aligned as the proofs ask)."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self._node(n.bit_length() - 1, lo // n)
        k = merkle.split(n)
        return merkle.node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, n: int) -> bytes:
        """The root at size n."""
        return self.subtree(0, n) if n else merkle.EMPTY_ROOT

    def inclusion(self, index: int, n: int) -> list[bytes]:
        """The inclusion proof of leaf `index` in the tree of n leaves."""
        return merkle.inclusion_proof(index, n, self.subtree)

    def consistency(self, old: int, new: int) -> list[bytes]:
        """The consistency proof from `old` to `new` leaves."""
        return merkle.consistency_proof(old, new, self.subtree)


def latest_head(conn, at_least: int = 0, signed_before: datetime | None = None
                ) -> AuditTreeHead | None:
    """The newest signed checkpoint (of at least `at_least` leaves, and signed before
    `signed_before`, if given)."""
    q = select(AuditTreeHead).order_by(AuditTreeHead.tree_size.desc(), AuditTreeHead.id.desc())
    if at_least:
        q = q.where(AuditTreeHead.tree_size >= at_least)
    if signed_before is not None:
        q = q.where(AuditTreeHead.at < signed_before)
    row = conn.execute(q.limit(1)).first()
    return row[0] if row is not None and isinstance(row[0], AuditTreeHead) else (
        _head_from_row(row) if row is not None else None)


def _head_from_row(row) -> AuditTreeHead:
    return AuditTreeHead(id=row.id, tree_size=row.tree_size, root_hash=row.root_hash,
                         at=row.at, note=row.note)


def checkpoint_head(session: Session, *, checkpoint: int | None = None,
                    size: int | None = None) -> AuditTreeHead:
    """A signed checkpoint by its id (`#N` in `audit checkpoints`) or by its tree size; the
    latest when neither is given. Raises AuditError when there is none such."""
    if checkpoint is not None:
        head = session.get(AuditTreeHead, checkpoint)
        if head is None:
            raise AuditError(f"there is no signed checkpoint #{checkpoint} (see "
                             "`python -m ivr audit checkpoints`)")
        return head
    if size is not None:
        head = session.scalar(select(AuditTreeHead).where(AuditTreeHead.tree_size == size)
                              .order_by(AuditTreeHead.id.desc()).limit(1))
        if head is None:
            raise AuditError(f"no signed checkpoint has tree size {size} (see "
                             "`python -m ivr audit checkpoints`)")
        return head
    head = latest_head(session)
    if head is None:
        raise AuditError("no checkpoint has been signed yet (run `python -m ivr audit "
                         "integrate --once`)")
    return head


def prove_call(session: Session, call_sid: str, head: AuditTreeHead | None = None) -> dict:
    """The call's leaves with RFC 9162 inclusion proofs to a signed checkpoint.

    Without `head`: every leaf of the call, to the latest checkpoint; raises AuditError for an
    unknown call, or when a leaf is not yet in a checkpoint. With `head`: the call's leaves
    that checkpoint covers (a later leaf belongs to a later checkpoint), so the document for
    one checkpoint is the same whenever it is asked for.
    """
    q = select(AuditEntry.seq, AuditEntry.body).where(AuditEntry.ref == call_sid)
    if head is not None:
        q = q.where(AuditEntry.seq <= head.tree_size)
    rows = session.execute(q.order_by(AuditEntry.seq)).all()
    queued = None if head is not None else session.scalar(
        select(AuditQueue.id).where(AuditQueue.ref == call_sid).limit(1))
    if not rows and queued is None:
        known = session.get(Call, call_sid) is not None
        if head is not None and known:
            raise AuditError(f"checkpoint #{head.id} (tree size {head.tree_size}) covers no "
                             f"leaf of call {call_sid}")
        raise AuditError(f"no audit leaves refer to call {call_sid}" if known
                         else f"unknown call: {call_sid}")
    if queued is not None:
        raise AuditError(f"call {call_sid} has leaves still queued: they are integrated "
                         "within the MMD (or run `python -m ivr audit integrate --once`)")
    if head is None:
        head = latest_head(session)
        if head is None or rows[-1].seq > head.tree_size:
            raise AuditError(f"call {call_sid} has leaves beyond the latest checkpoint: the "
                             "next one covers them (or run `python -m ivr audit integrate "
                             "--once`)")
    tree = StoredTree(session)
    n = head.tree_size
    return {
        "checkpoint": head.note,
        "tree_size": n,
        "root_hash": b64(bytes.fromhex(head.root_hash)),
        "leaves": [{"index": r.seq - 1, "leaf": b64(r.body.encode()),
                    "proof": [b64(p) for p in tree.inclusion(r.seq - 1, n)]} for r in rows],
    }


def consistency(session: Session, old: int, new: int) -> dict:
    """The RFC 9162 consistency proof from `old` to `new` leaves, with both roots."""
    have = size(session)
    if not 0 < old <= new <= have:
        raise AuditError(f"sizes must satisfy 0 < OLD_SIZE <= NEW_SIZE <= {have} (the tree "
                         f"size); got {old} and {new}")
    tree = StoredTree(session)
    return {"old_size": old, "new_size": new, "old_root": b64(tree.root(old)),
            "new_root": b64(tree.root(new)),
            "proof": [b64(p) for p in tree.consistency(old, new)]}
