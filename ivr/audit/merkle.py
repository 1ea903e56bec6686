"""The Merkle tree of RFC 9162 §2.1: hashes, tree heads, inclusion and consistency proofs.

Pure: no database, no Flask. Proof generation takes a `subtree(lo, hi)` function that gives
the Merkle tree hash of leaves lo..hi-1, so that a stored tree (ivr/storage/audit_tree.py) and an
in-memory list of leaf hashes (`MemoryTree`) produce the same proofs. Verification follows
the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 step by step and raises VerificationError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32

Subtree = Callable[[int, int], bytes]


class VerificationError(Exception):
    """A proof does not hold: says what was expected and what was found."""

    def __init__(self, what: str, expected: str, found: str):
        self.what = what
        self.expected = expected
        self.found = found
        super().__init__(f"{what}: expected {expected}, found {found}")


def leaf_hash(leaf: bytes) -> bytes:
    """SHA-256(0x00 || leaf)."""
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of a list of leaf hashes (MTH of RFC 9162 §2.1.1)."""
    if not hashes:
        return EMPTY_ROOT
    return _mth(hashes, 0, len(hashes))


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return hashes[lo]
    k = split(hi - lo)
    return node_hash(_mth(hashes, lo, lo + k), _mth(hashes, lo + k, hi))


class CompactRange:
    """The perfect subtrees on the right edge of a growing tree: append leaves in O(log n)
    memory and read the root at any size (what `audit verify` streams through)."""

    def __init__(self, size: int = 0, peaks: Iterable[bytes] = ()):
        self.size = size
        self.peaks = list(peaks)  # largest subtree first
        if len(self.peaks) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves has {size.bit_count()} peaks, "
                             f"not {len(self.peaks)}")

    def append(self, h: bytes, on_node: Callable[[int, int, bytes], None] | None = None) -> None:
        """Add one leaf hash; `on_node(level, index, hash)` hears of every completed node."""
        index = self.size
        self.size += 1
        level = 0
        while index & 1:
            h = node_hash(self.peaks.pop(), h)
            index >>= 1
            level += 1
            if on_node is not None:
                on_node(level, index, h)
        self.peaks.append(h)

    def root(self) -> bytes:
        """The root hash at the current size."""
        if not self.peaks:
            return EMPTY_ROOT
        h = self.peaks[-1]
        for p in reversed(self.peaks[:-1]):
            h = node_hash(p, h)
        return h


def peak_ranges(size: int) -> list[tuple[int, int]]:
    """The (level, index) of the perfect subtrees a tree of `size` leaves decomposes into."""
    out, lo = [], 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, lo >> level))
            lo += 1 << level
    return out


# --- proofs (RFC 9162 §2.1.3.1, §2.1.4.1) ----------------------------------------------


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """PATH(index, D[size]): the audit path of leaf `index` in the tree of `size` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split(hi - lo)
        if index < lo + k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo += k
    path.reverse()
    return path


def consistency_proof(old: int, new: int, subtree: Subtree) -> list[bytes]:
    """PROOF(old, D[new]): the consistency proof between two sizes of the tree."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if old == 0 or old == new:
        return []
    path: list[bytes] = []
    lo, hi, complete = 0, new, True
    m = old
    while m != hi - lo:
        k = split(hi - lo)
        if m <= k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo += k
            m -= k
            complete = False
    if not complete:
        path.append(subtree(lo, hi))
    path.reverse()
    return path


class MemoryTree:
    """A tree over leaf hashes held in memory: for tests and small evidence checks."""

    def __init__(self, hashes: Iterable[bytes] = ()):
        self.hashes = list(hashes)

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves lo..hi-1."""
        return _mth(self.hashes, lo, hi)

    def root(self, size: int | None = None) -> bytes:
        """The root hash at `size` (default: all leaves)."""
        return root_of(self.hashes[:len(self.hashes) if size is None else size])

    def inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        """The inclusion proof of leaf `index`."""
        return inclusion_proof(index, len(self.hashes) if size is None else size, self.subtree)

    def consistency(self, old: int, new: int | None = None) -> list[bytes]:
        """The consistency proof from `old` to `new` leaves."""
        return consistency_proof(old, len(self.hashes) if new is None else new, self.subtree)


# --- verification (RFC 9162 §2.1.3.2, §2.1.4.2) ----------------------------------------


def _check_hash(what: str, h: bytes) -> None:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
        raise VerificationError(what, f"a {HASH_SIZE}-byte hash",
                                f"{len(h) if isinstance(h, bytes | bytearray) else h!r} bytes")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that an inclusion proof leads to (RFC 9162 §2.1.3.2, steps 1-4)."""
    if not 0 <= index < size:
        raise VerificationError("inclusion proof", f"a leaf index below the tree size {size}",
                                f"index {index}")
    _check_hash("leaf hash", leaf)
    fn, sn, r = index, size - 1, leaf
    for i, p in enumerate(proof):
        _check_hash(f"inclusion proof element {i}", p)
        if sn == 0:
            raise VerificationError("inclusion proof", f"{i} elements for leaf {index} of {size}",
                                    f"{len(proof)} elements")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof", f"more elements for leaf {index} of {size}",
                                f"{len(proof)} elements")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes],
                     root: bytes) -> None:
    """Check that leaf hash `leaf` is at `index` in the tree of `size` whose root is `root`."""
    _check_hash("root hash", root)
    got = root_from_inclusion(index, size, leaf, proof)
    if got != root:
        raise VerificationError(f"inclusion proof of leaf {index} in tree size {size}",
                                f"root {root.hex()}", f"root {got.hex()}")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes,  # noqa: C901 - RFC 9162 §2.1.4.2's algorithm as written there
                       proof: Sequence[bytes]) -> None:
    """Check that the tree of `new` leaves (new_root) extends the tree of `old` (old_root)."""
    _check_hash("old root hash", old_root)
    _check_hash("new root hash", new_root)
    what = f"consistency proof from size {old} to {new}"
    if not 0 <= old <= new:
        raise VerificationError(what, "an old size no larger than the new one",
                                f"{old} > {new}")
    if old == new or old == 0:
        if proof:
            raise VerificationError(what, "an empty proof", f"{len(proof)} elements")
        if old == new and old_root != new_root:
            raise VerificationError(what, f"equal roots at equal sizes ({old_root.hex()})",
                                    new_root.hex())
        return
    if not proof:
        raise VerificationError(what, "a non-empty proof", "an empty proof")
    for i, p in enumerate(proof):
        _check_hash(f"consistency proof element {i}", p)
    path = list(proof)
    if old & (old - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(what, f"fewer than {len(proof)} elements",
                                    f"{len(proof)} elements")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(what, f"more than {len(proof)} elements",
                                f"{len(proof)} elements")
    if fr != old_root:
        raise VerificationError(what, f"old root {old_root.hex()}", f"{fr.hex()}")
    if sr != new_root:
        raise VerificationError(what, f"new root {new_root.hex()}", f"{sr.hex()}")
