"""The stored Merkle tree: leaf hashes and complete interior nodes, by position, in audit_tree.

Reads work on a Session or a Connection alike. A subtree that is not a complete node (the
right edge of a tree whose size is not a power of two) is hashed from complete nodes, so a
proof costs O(log² n) point reads at worst and never a scan.
"""

from __future__ import annotations

from sqlalchemy import func, select

from ivr.storage.models import AuditEntry, AuditNode, AuditTreeHead

from . import merkle


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

    def compact(self, n: int) -> merkle.CompactRange:
        """The right edge of the tree of n leaves, to append to."""
        return merkle.CompactRange(n, [self._node(lv, i) for lv, i in merkle.peak_ranges(n)])

    def inclusion(self, index: int, n: int) -> list[bytes]:
        """The inclusion proof of leaf `index` in the tree of n leaves."""
        return merkle.inclusion_proof(index, n, self.subtree)

    def consistency(self, old: int, new: int) -> list[bytes]:
        """The consistency proof from `old` to `new` leaves."""
        return merkle.consistency_proof(old, new, self.subtree)


def latest_head(conn, at_least: int = 0) -> AuditTreeHead | None:
    """The newest signed checkpoint (of at least `at_least` leaves, if given)."""
    q = select(AuditTreeHead).order_by(AuditTreeHead.tree_size.desc(), AuditTreeHead.id.desc())
    if at_least:
        q = q.where(AuditTreeHead.tree_size >= at_least)
    row = conn.execute(q.limit(1)).first()
    return row[0] if row is not None and isinstance(row[0], AuditTreeHead) else (
        _head_from_row(row) if row is not None else None)


def _head_from_row(row) -> AuditTreeHead:
    return AuditTreeHead(id=row.id, tree_size=row.tree_size, root_hash=row.root_hash,
                         at=row.at, note=row.note)
