"""Verifying the audit log over iterables, with no database: the Merkle tree from its leaves,
its signed checkpoints, and the result types.

`verify_leaves` checks leaves streamed in order in constant memory and raises
VerificationError at the first problem, naming the leaf index and the kind of tampering; it
never returns False. Each leaf's hash is also stored by position (audit_tree, level 0), apart
from the leaf rows, so a leaf that was changed, removed, added or moved is told apart by
comparing a row with the stored hashes around it; the signed checkpoints catch a rewrite of
both. The hash chain that preceded the Merkle log is checked by ivr/audit/legacy.py; the
database is read by ivr/services/audit_verify.py. Every key is an argument.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypedDict

from . import merkle, note
from .errors import (
    CHECKPOINT_FORGED,
    LEAF_DELETED,
    LEAF_INSERTED,
    LEAF_MODIFIED,
    LEAVES_SWAPPED,
    ROOT_MISMATCH,
    SPLIT_VIEW,
    TREE_NODE_MODIFIED,
    VerificationError,
)

BATCH = 5000
DEFAULT_MAX_QUEUE_AGE = 60.0

# A stored checkpoint: (id, tree size, root hash hex, note text); id 0 for one kept outside.
HeadRow = tuple[int, int, str, str]
# A leaf: (seq, body, kind, ref, the leaf hash stored at its index or None).
LeafRow = tuple[int, str, str, str | None, bytes | None]
Progress = Callable[[int], object]  # called with the leaves checked so far


class ConsistencyProofs(Protocol):
    """The stored tree, as far as consistency proofs go (ivr/storage/audit_tree.py)."""

    def consistency(self, old: int, new: int) -> list[bytes]:
        """The RFC 9162 consistency proof from `old` to `new` leaves."""
        ...


@dataclass
class VerifySummary:
    """What a successful verification covered."""

    entries: int
    checkpoints: int
    head_seq: int
    head_hash: str
    seconds: float = 0.0
    chain_entries: int = 0
    chain_checkpoints: int = 0
    chain_head: str = ""
    tree_checkpoints: int = 0
    queued: int = 0
    # An incremental run (`audit verify --from-checkpoint N`): where it started, what it read.
    from_checkpoint: int | None = None
    from_size: int = 0
    latest_checkpoint: int | None = None

    def line(self) -> str:
        """The summary `audit verify` prints: the Merkle log, then the former hash chain."""
        root = f"root {self.head_hash[:16]}…" if self.entries else "empty log"
        if self.from_checkpoint is not None:
            nxt = (f"; next run: --from-checkpoint {self.latest_checkpoint}"
                   if self.latest_checkpoint is not None else "")
            return (f"ok: {self.entries - self.from_size} leaves after checkpoint "
                    f"#{self.from_checkpoint} (tree size {self.from_size}) of {self.entries}, "
                    f"{self.tree_checkpoints} checkpoints from it, consistent; {root}; "
                    f"{self.queued} queued{nxt}")
        out = (f"ok: {self.entries} leaves, {self.tree_checkpoints} signed checkpoints, "
               f"{root}; {self.queued} queued")
        if self.chain_entries:
            out += (f"; hash chain (before the Merkle log): {self.chain_entries} entries, "
                    f"{self.chain_checkpoints} checkpoints, head {self.chain_head[:16]}…")
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {"ok": True, "entries": self.entries, "checkpoints": self.checkpoints,
                "tree_size": self.entries, "root_hash": self.head_hash,
                "tree_checkpoints": self.tree_checkpoints, "queued": self.queued,
                "head_seq": self.head_seq, "head_hash": self.head_hash,
                "chain": {"entries": self.chain_entries, "checkpoints": self.chain_checkpoints,
                          "head_hash": self.chain_head},
                **({"from_checkpoint": self.from_checkpoint, "from_size": self.from_size,
                    "leaves_checked": self.entries - self.from_size,
                    "latest_checkpoint": self.latest_checkpoint}
                   if self.from_checkpoint is not None else {}),
                "seconds": round(self.seconds, 3)}


def leaf_error(index: int, problem: str, expected: str, found: str,
               detail: str = "") -> VerificationError:
    """A VerificationError that names a leaf index."""
    return VerificationError(index, problem, expected, found, detail, unit="index")


@dataclass
class Head:
    """A stored checkpoint, verified and parsed."""

    id: int
    size: int
    root: bytes
    note: str

    @property
    def source(self) -> str:
        """Where it came from, for messages."""
        return f"checkpoint #{self.id}" if self.id else "checkpoint file"


def open_heads(rows: Iterable[HeadRow], verifiers: list[note.Verifier],
               origin: str | None, unsigned: frozenset[int] = frozenset()) -> list[Head]:
    """Check every stored checkpoint's signature and that its columns equal its note (for
    the ids in `unsigned`, only the latter: their roots are checked against the leaves)."""
    out: list[Head] = []
    for cp_id, size, root_hex, text in rows:
        what = f"checkpoint #{cp_id}" if cp_id else "checkpoint file"
        try:
            cp = (_parse_checkpoint(text, origin, what) if cp_id in unsigned
                  else note.open_checkpoint(text, verifiers, origin, what))
        except merkle.VerificationError as e:
            raise leaf_error(size, CHECKPOINT_FORGED, e.expected, e.found, what) from None
        if (cp.size, cp.root.hex()) != (size, root_hex):
            raise leaf_error(size, CHECKPOINT_FORGED,
                             f"columns equal to the signed note (size {cp.size}, root "
                             f"{cp.root.hex()[:16]}…)", f"size {size}, root {root_hex[:16]}…", what)
        out.append(Head(cp_id, cp.size, cp.root, text))
    return out


def _parse_checkpoint(text: str, origin: str | None, what: str) -> note.Checkpoint:
    try:
        cp = note.parse_checkpoint(note.parse_note(text).text)
    except note.NoteError as e:
        raise merkle.VerificationError(what, "a signed checkpoint note", str(e)) from None
    if origin is not None and cp.origin != origin:
        raise merkle.VerificationError(what, f"origin {origin!r}", f"origin {cp.origin!r}")
    return cp


def check_split_views(heads: list[Head]) -> None:
    """Two signed checkpoints of one tree size must sign one root."""
    for a, b in itertools.pairwise(heads):
        if a.size == b.size and a.root != b.root:
            raise leaf_error(a.size, SPLIT_VIEW, f"root {a.root.hex()} ({a.source})",
                             f"root {b.root.hex()} ({b.source}) for the same tree size {a.size}",
                             "two signed checkpoints show two different logs")


class _Leaves:
    """The leaves, checked one by one against the hashes stored by position."""

    def __init__(self, rows: Iterator[LeafRow], heads: list[Head], progress: Progress | None,
                 tree_check: Callable[[int], bytes | None],
                 start: merkle.CompactRange | None = None,
                 start_head: Head | None = None) -> None:
        self.rows = rows
        self.heads = heads
        self.progress = progress
        self.tree_check = tree_check  # (size) -> stored root, only read on a failure
        self.compact = start if start is not None else merkle.CompactRange()
        self.start_head = start_head

    def run(self) -> None:
        # This loop runs once per leaf of the log: the two hashes are written out here
        # (merkle.leaf_hash, merkle.node_hash and CompactRange.append, inlined), and the
        # checkpoints are looked at only when the tree reaches the next one's size.
        sha256 = hashlib.sha256
        leaf_prefix, node_prefix = merkle.LEAF_PREFIX, merkle.NODE_PREFIX
        compact = self.compact
        peaks = compact.peaks
        heads = iter(self.heads)
        head = next(heads, None)
        due = head.size if head is not None else -1
        matched = self.start_head
        rows = self.rows
        progress, every = self.progress, BATCH * 20
        n = compact.size
        for seq, body, kind, ref, stored in rows:
            if seq != n + 1:
                raise leaf_error(n, LEAF_DELETED, f"a leaf at index {n}",
                                 f"the next leaf at index {seq - 1}",
                                 f"missing: {n}" + (f"..{seq - 2}" if seq - 2 > n else ""))
            h = sha256(leaf_prefix + body.encode()).digest()
            if h != stored or not _columns_agree(body, kind, ref):
                _diagnose(n, body, kind, ref, h, stored, next(rows, None))
            i = n
            while i & 1:
                h = sha256(node_prefix + peaks.pop() + h).digest()
                i >>= 1
            peaks.append(h)
            n += 1
            if n == due:
                compact.size = n
                while head is not None and head.size == n:
                    root = compact.root()
                    if root != head.root:
                        self._root_mismatch(head, root, matched)
                    matched = head
                    head = next(heads, None)
                due = head.size if head is not None else -1
            if progress is not None and n % every == 0:
                progress(n)
        compact.size = n
        if head is not None:
            raise leaf_error(n, LEAF_DELETED, f"{head.size} leaves ({head.source})",
                             f"{n} leaves", "leaves were removed from the end")

    def _root_mismatch(self, head: Head, root: bytes, matched: Head | None) -> None:
        first = matched.size if matched else 0
        stored = self.tree_check(head.size)
        if stored == root:
            raise leaf_error(head.size, SPLIT_VIEW,
                             f"root {root.hex()} (the log's leaves and stored tree at size "
                             f"{head.size})", f"root {head.root.hex()} ({head.source})",
                             "the checkpoint signs a tree this log never had"
                             + (f"; it is not consistent with {matched.source}" if matched else ""))
        raise leaf_error(first, ROOT_MISMATCH, f"root {head.root.hex()} ({head.source})",
                         f"root {root.hex()} recomputed from the leaves",
                         f"leaves {first}..{head.size - 1} were rewritten together with their "
                         "stored hashes")


def _columns_agree(body: str, kind: str, ref: str | None) -> bool:
    tail = f'"kind":"{kind}","ref":' + ("null" if ref is None else f'"{ref}"')
    return body.endswith(tail + "}") or (tail + ',"seq":') in body


def _diagnose(i: int, body: str, kind: str, ref: str | None, h: bytes, stored: bytes | None,
              nxt: LeafRow | None) -> None:
    """Name what happened at index i, whose leaf does not hash to the hash stored there."""
    stored = bytes(stored) if stored is not None else None
    if nxt is not None:
        nxt_stored = bytes(nxt[4]) if nxt[4] is not None else None
        nxt_h = merkle.leaf_hash(nxt[1].encode())
        if h == nxt_stored and nxt_h == stored:
            raise leaf_error(i, LEAVES_SWAPPED, f"the leaf of index {i}",
                             f"the leaf of index {i + 1}",
                             f"indexes {i} and {i + 1} hold each other's leaves")
        if h == nxt_stored:
            raise leaf_error(i, LEAF_DELETED, f"the leaf of index {i}",
                             f"the leaf of index {i + 1}",
                             f"the leaf at index {i} was removed and the rest moved up")
        if nxt_h == stored:
            raise leaf_error(i, LEAF_INSERTED, f"the leaf of index {i} next",
                             f"a leaf the log never integrated, then the leaf of index {i}",
                             f"a leaf was inserted at index {i}")
    if stored is None:
        raise leaf_error(i, LEAF_INSERTED, f"a stored leaf hash at index {i}", "none",
                         f"a leaf was added at index {i} outside the sequencer")
    if h == stored:
        raise leaf_error(i, LEAF_MODIFIED, f"kind {kind!r}, ref {ref!r} in the body too",
                         "a body that says otherwise", "the row's kind/ref columns were changed")
    raise leaf_error(i, LEAF_MODIFIED, f"leaf hash {stored.hex()}", f"{h.hex()} over the leaf",
                     "the leaf's bytes were changed")


def merkle_size(text: str) -> int:
    """The tree size a checkpoint note states (0 if it is unreadable; verification says why)."""
    try:
        return note.parse_checkpoint(note.parse_note(text).text).size
    except note.NoteError:
        return 0


def note_root_hex(text: str) -> str:
    """The root hash (hex) a checkpoint note states (empty if it is unreadable)."""
    try:
        return note.parse_checkpoint(note.parse_note(text).text).root.hex()
    except note.NoteError:
        return ""


def check_consistency(stored: ConsistencyProofs, heads: list[Head]) -> None:
    """Consecutive checkpoints: the RFC 9162 consistency proof the stored tree serves holds."""
    for a, b in itertools.pairwise(heads):
        if a.size == b.size or a.size == 0:
            continue
        try:
            proof = stored.consistency(a.size, b.size)
            merkle.verify_consistency(a.size, b.size, a.root, b.root, proof)
        except (LookupError, merkle.VerificationError) as e:
            raise leaf_error(a.size, TREE_NODE_MODIFIED,
                             f"a consistency proof from {a.source} to {b.source}",
                             str(e), "the stored tree nodes that proofs are made of were changed"
                             ) from None


def verify_leaves(rows: Iterator[LeafRow], heads: list[Head], progress: Progress | None = None,
                  stored_root: Callable[[int], bytes | None] = lambda n: None,
                  start: merkle.CompactRange | None = None, start_head: Head | None = None
                  ) -> merkle.CompactRange:
    """Check (seq, body, kind, ref, stored leaf hash) rows in seq order against their stored
    hashes and the checkpoints' roots; the compact range of the whole tree.

    `stored_root(n)` gives the stored tree's root at size n, read only to name a failure.
    From `start` (a verified compact range, see `start_range`), the rows begin after its
    leaves and `heads` are the checkpoints beyond `start_head`.
    """
    leaves = _Leaves(rows, heads, progress, stored_root, start, start_head)
    leaves.run()
    return leaves.compact


def start_range(head: Head, peaks: list[bytes]) -> merkle.CompactRange:
    """The compact range of `head`'s tree from the stored hashes of its perfect subtrees
    (merkle.peak_ranges), checked against the root the checkpoint signs: leaves appended to
    it then recompute every later root without reading the leaves `head` covers."""
    compact = merkle.CompactRange(head.size, peaks)
    root = compact.root()
    if root != head.root:
        raise leaf_error(head.size, TREE_NODE_MODIFIED, f"root {head.root.hex()} ({head.source})",
                         f"root {root.hex()} from the stored subtrees of its {head.size} leaves",
                         "the stored tree nodes the incremental check starts from were changed")
    return compact


# --- a few leaves, for the call page --------------------------------------------------


class CoveringCheckpoint(TypedDict):
    """The signed checkpoint a few leaves were checked against (`EntriesStatus`)."""

    id: int
    seq: int
    tree_size: int
    at: str
    key_id: str


@dataclass
class EntriesStatus:
    """The inclusion status of a few leaves (a call's): checked with proofs, for display."""

    ok: bool
    checked: int
    first_seq: int | None = None
    last_seq: int | None = None
    problem: VerificationError | None = None
    checkpoint: CoveringCheckpoint | None = None
    seqs: list[int] = field(default_factory=list)
    queued: int = 0
    uncovered: int = 0

    @property
    def message(self) -> str:
        """One line for a page."""
        if self.problem is not None:
            return f"inclusion check FAILED: {self.problem}"
        if not self.checked and not self.queued:
            return "no audit entries"
        parts = []
        if self.checked and self.first_seq is not None and self.last_seq is not None:
            cp = (f"included in signed checkpoint #{self.checkpoint['id']} (tree size "
                  f"{self.checkpoint['tree_size']}, signature valid)"
                  if self.checkpoint else "integrated")
            parts.append(f"{self.checked} leaves ({self.first_seq - 1}..{self.last_seq - 1}) "
                         f"{cp}")
        if self.uncovered:
            parts.append(f"{self.uncovered} not yet in a checkpoint")
        if self.queued:
            parts.append(f"{self.queued} queued")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {"ok": self.ok, "checked": self.checked, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "message": self.message, "queued": self.queued,
                "problem": self.problem.to_dict() if self.problem else None,
                "checkpoint": self.checkpoint, "seqs": self.seqs}


def max_queue_age_default(mmd: float) -> float:
    """The default bound on a queued leaf's age: a minute, or 10 MMD if that is longer."""
    return max(DEFAULT_MAX_QUEUE_AGE, 10 * mmd)

