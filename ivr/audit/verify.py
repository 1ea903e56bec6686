"""Verifying the audit log: the Merkle tree from its leaves, its signed checkpoints, the
hash chain that preceded it, the queue, and that every covered fact has its leaf.

`verify_log` streams every leaf in constant memory and raises VerificationError at the first
problem, naming the leaf index and the kind of tampering; it never returns False. Each leaf's
hash is also stored by position (audit_tree, level 0), apart from the leaf rows, so a leaf
that was changed, removed, added or moved is told apart by comparing a row with the stored
hashes around it; the signed checkpoints catch a rewrite of both.

`verify_entries`/`verify_call` check a few leaves with inclusion proofs, for display.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field

from flask import current_app, has_app_context
from sqlalchemy import String, and_, cast, exists, literal, or_, select
from sqlalchemy.orm import Session

from ivr.storage.models import AuditEntry, AuditNode, AuditQueue, Call, Consent, FlowRun
from ivr.storage.transfer_models import Transfer

from . import checkpoint as cps
from . import legacy, merkle, note
from .errors import (
    CHECKPOINT_FORGED,
    FACT_WITHOUT_LEAF,
    LEAF_DELETED,
    LEAF_INSERTED,
    LEAF_MODIFIED,
    LEAF_QUEUED_TOO_LONG,
    LEAVES_SWAPPED,
    ROOT_MISMATCH,
    SPLIT_VIEW,
    TREE_NODE_MODIFIED,
    AuditError,
    VerificationError,
)
from .sequencer import log_origin, note_verifier, queue_status
from .tree import StoredTree, latest_head

BATCH = 5000
DEFAULT_MAX_QUEUE_AGE = 60.0
_LEAVES_SQL = ("SELECT a.seq, a.body, a.kind, a.ref, t.hash FROM audit_log a "
               "LEFT JOIN audit_tree t ON t.level = 0 AND t.idx = a.seq - 1 ORDER BY a.seq")
_HEADS_SQL = "SELECT id, tree_size, root_hash, note FROM audit_tree_heads ORDER BY tree_size, id"


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

    def line(self) -> str:
        """The summary `audit verify` prints: the Merkle log, then the former hash chain."""
        root = f"root {self.head_hash[:16]}…" if self.entries else "empty log"
        out = (f"ok: {self.entries} leaves, {self.tree_checkpoints} signed checkpoints, "
               f"{root}; {self.queued} queued")
        if self.chain_entries:
            out += (f"; hash chain (before the Merkle log): {self.chain_entries} entries, "
                    f"{self.chain_checkpoints} checkpoints, head {self.chain_head[:16]}…")
        return out

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"ok": True, "entries": self.entries, "checkpoints": self.checkpoints,
                "tree_size": self.entries, "root_hash": self.head_hash,
                "tree_checkpoints": self.tree_checkpoints, "queued": self.queued,
                "head_seq": self.head_seq, "head_hash": self.head_hash,
                "chain": {"entries": self.chain_entries, "checkpoints": self.chain_checkpoints,
                          "head_hash": self.chain_head},
                "seconds": round(self.seconds, 3)}


def _err(index: int, problem: str, expected: str, found: str, detail: str = ""):
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


def open_heads(rows: Iterable[tuple], verifiers: list[note.Verifier],
               origin: str | None) -> list[Head]:
    """Check every stored checkpoint's signature and that its columns equal its note."""
    out = []
    for cp_id, size, root_hex, text in rows:
        what = f"checkpoint #{cp_id}" if cp_id else "checkpoint file"
        try:
            cp = note.open_checkpoint(text, verifiers, origin, what)
        except merkle.VerificationError as e:
            raise _err(size, CHECKPOINT_FORGED, e.expected, e.found, what) from None
        if (cp.size, cp.root.hex()) != (size, root_hex):
            raise _err(size, CHECKPOINT_FORGED,
                       f"columns equal to the signed note (size {cp.size}, root "
                       f"{cp.root.hex()[:16]}…)", f"size {size}, root {root_hex[:16]}…", what)
        out.append(Head(cp_id, cp.size, cp.root, text))
    return out


def check_split_views(heads: list[Head]) -> None:
    """Two signed checkpoints of one tree size must sign one root."""
    for a, b in itertools.pairwise(heads):
        if a.size == b.size and a.root != b.root:
            raise _err(a.size, SPLIT_VIEW, f"root {a.root.hex()} ({a.source})",
                       f"root {b.root.hex()} ({b.source}) for the same tree size {a.size}",
                       "two signed checkpoints show two different logs")


class _Leaves:
    """The leaves, checked one by one against the hashes stored by position."""

    def __init__(self, rows: Iterator[tuple], heads: list[Head], progress, tree_check):
        self.rows = rows
        self.heads = heads
        self.progress = progress
        self.tree_check = tree_check  # (size) -> stored root, only read on a failure
        self.compact = merkle.CompactRange()

    def run(self) -> None:
        sha = hashlib.sha256
        prefix = merkle.LEAF_PREFIX
        compact = self.compact
        peaks = compact.peaks
        node = merkle.NODE_PREFIX
        heads = iter(self.heads)
        head = next(heads, None)
        matched = None
        rows = self.rows
        cur = next(rows, None)
        n = 0
        while cur is not None:
            nxt = next(rows, None)
            seq, body, kind, ref, stored = cur
            if seq != n + 1:
                raise _err(n, LEAF_DELETED, f"a leaf at index {n}",
                           f"the next leaf at index {seq - 1}",
                           f"missing: {n}" + (f"..{seq - 2}" if seq - 2 > n else ""))
            h = sha(prefix + body.encode()).digest()
            if h != stored or not _columns_agree(body, kind, ref):
                _diagnose(n, body, kind, ref, h, stored, nxt)
            # CompactRange.append, inlined: this loop runs once per leaf of the log.
            i = n
            while i & 1:
                h = sha(node + peaks.pop() + h).digest()
                i >>= 1
            peaks.append(h)
            n += 1
            compact.size = n
            while head is not None and head.size == n:
                root = compact.root()
                if root != head.root:
                    self._root_mismatch(head, root, matched)
                matched = head
                head = next(heads, None)
            if self.progress is not None and n % (BATCH * 20) == 0:
                self.progress(n)
            cur = nxt
        if head is not None:
            raise _err(n, LEAF_DELETED, f"{head.size} leaves ({head.source})",
                       f"{n} leaves", "leaves were removed from the end")

    def _root_mismatch(self, head: Head, root: bytes, matched: Head | None) -> None:
        first = matched.size if matched else 0
        stored = self.tree_check(head.size)
        if stored == root:
            raise _err(head.size, SPLIT_VIEW,
                       f"root {root.hex()} (the log's leaves and stored tree at size "
                       f"{head.size})", f"root {head.root.hex()} ({head.source})",
                       "the checkpoint signs a tree this log never had"
                       + (f"; it is not consistent with {matched.source}" if matched else ""))
        raise _err(first, ROOT_MISMATCH, f"root {head.root.hex()} ({head.source})",
                   f"root {root.hex()} recomputed from the leaves",
                   f"leaves {first}..{head.size - 1} were rewritten together with their stored "
                   "hashes")


def _columns_agree(body: str, kind: str, ref: str | None) -> bool:
    tail = f'"kind":"{kind}","ref":' + ("null" if ref is None else f'"{ref}"')
    return body.endswith(tail + "}") or (tail + ',"seq":') in body


def _diagnose(i: int, body: str, kind: str, ref, h: bytes, stored, nxt) -> None:
    """Name what happened at index i, whose leaf does not hash to the hash stored there."""
    stored = bytes(stored) if stored is not None else None
    if nxt is not None:
        nxt_stored = bytes(nxt[4]) if nxt[4] is not None else None
        nxt_h = merkle.leaf_hash(nxt[1].encode())
        if h == nxt_stored and nxt_h == stored:
            raise _err(i, LEAVES_SWAPPED, f"the leaf of index {i}", f"the leaf of index {i + 1}",
                       f"indexes {i} and {i + 1} hold each other's leaves")
        if h == nxt_stored:
            raise _err(i, LEAF_DELETED, f"the leaf of index {i}", f"the leaf of index {i + 1}",
                       f"the leaf at index {i} was removed and the rest moved up")
        if nxt_h == stored:
            raise _err(i, LEAF_INSERTED, f"the leaf of index {i} next",
                       f"a leaf the log never integrated, then the leaf of index {i}",
                       f"a leaf was inserted at index {i}")
    if stored is None:
        raise _err(i, LEAF_INSERTED, f"a stored leaf hash at index {i}", "none",
                   f"a leaf was added at index {i} outside the sequencer")
    if h == stored:
        raise _err(i, LEAF_MODIFIED, f"kind {kind!r}, ref {ref!r} in the body too",
                   "a body that says otherwise", "the row's kind/ref columns were changed")
    raise _err(i, LEAF_MODIFIED, f"leaf hash {stored.hex()}", f"{h.hex()} over the leaf",
               "the leaf's bytes were changed")


@contextmanager
def _raw(session: Session):
    """A DBAPI connection of its own, so a long verification never holds the SQLite writer."""
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    conn = engine.raw_connection()
    try:
        yield engine, conn
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


def _stream(engine, conn, sql: str, name: str) -> Iterator[tuple]:
    if engine.dialect.name == "postgresql":
        cur = conn.driver_connection.cursor(name=name)
        cur.itersize = BATCH
    else:
        cur = conn.cursor()
    try:
        cur.execute(sql)
        yield from itertools.chain.from_iterable(iter(lambda: cur.fetchmany(BATCH), []))
    finally:
        cur.close()


def _fetch(conn, sql: str) -> list[tuple]:
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return list(cur.fetchall())
    finally:
        cur.close()


def _default_trust(session: Session) -> tuple[dict, list[note.Verifier], str | None]:
    """The app's own keys when there is an app; outside one, no key is known."""
    if not has_app_context():
        return {}, [], None
    key = cps.signing_key(create=False)
    if key is None:
        return {}, [], None
    origin = log_origin(session, current_app)
    return cps.public_keys(key), [note_verifier(current_app, origin, key)], origin


def verify_log(session: Session, *, public_keys=None, verifiers=None, origin=None,
               progress=None, checkpoints: Iterable[cps.Checkpoint] = (),
               notes: Iterable[str] = (), max_queue_age: float = DEFAULT_MAX_QUEUE_AGE,
               check_facts: bool = True) -> VerifySummary:
    """Verify the whole log; raises VerificationError at the first problem.

    `public_keys` (key id -> Ed25519 key) check the hash chain's checkpoints, `verifiers`
    (signed-note keys) and `origin` the Merkle log's; by default, the app's own. `checkpoints`
    and `notes` are checkpoints kept outside the database (chain JSON, signed notes).
    """
    started = time.perf_counter()
    if public_keys is None or verifiers is None:
        keys0, verifiers0, origin0 = _default_trust(session)
        public_keys = keys0 if public_keys is None else public_keys
        if verifiers is None:
            verifiers, origin = verifiers0, origin if origin is not None else origin0
    bind = session.get_bind()
    dbapi_error = getattr(bind, "engine", bind).dialect.loaded_dbapi.Error
    summary = VerifySummary(entries=0, checkpoints=0, head_seq=0, head_hash="")
    try:
        with _raw(session) as (engine, conn):
            _verify_chain(engine, conn, public_keys, checkpoints, summary)
            outside = [(0, merkle_size(t), "", t) for t in notes]
            heads = open_heads([*_fetch(conn, _HEADS_SQL)], verifiers, origin)
            extra = open_heads([(0, s, _root_hex(t), t) for _, s, _, t in outside],
                               verifiers, origin)
            heads = sorted([*heads, *extra], key=lambda h: (h.size, h.id))
            check_split_views(heads)
            stored = StoredTree(session)
            with closing(_stream(engine, conn, _LEAVES_SQL, "ivr_audit_leaves")) as rows:
                leaves = _Leaves(rows, heads, progress, lambda n: _safe_root(stored, n))
                leaves.run()
            _check_consistency(stored, heads)
            summary.entries = summary.head_seq = leaves.compact.size
            summary.head_hash = leaves.compact.root().hex() if summary.entries else ""
            summary.tree_checkpoints = len(heads)
            summary.checkpoints = summary.chain_checkpoints + len(heads)
    except dbapi_error as e:
        raise AuditError(f"cannot read the audit log: {str(e).splitlines()[0]}") from e
    summary.queued = check_queue(session, max_queue_age, summary.entries)
    if check_facts:
        check_coverage(session)
    summary.seconds = time.perf_counter() - started
    return summary


def merkle_size(text: str) -> int:
    """The tree size a checkpoint note states (0 if it is unreadable; verification says why)."""
    try:
        return note.parse_checkpoint(note.parse_note(text).text).size
    except note.NoteError:
        return 0


def _root_hex(text: str) -> str:
    try:
        return note.parse_checkpoint(note.parse_note(text).text).root.hex()
    except note.NoteError:
        return ""


def _safe_root(stored: StoredTree, n: int) -> bytes | None:
    try:
        return stored.root(n)
    except LookupError:
        return None


def _verify_chain(engine, conn, keys, extra, summary: VerifySummary) -> None:
    marks = legacy.Checkpoints([*map(cps.from_row, _fetch(conn, legacy.CHECKPOINTS_SQL)),
                                *extra], keys)
    with closing(_stream(engine, conn, legacy.ROWS_SQL, "ivr_audit_chain")) as rows:
        n, prev, embedded = legacy.scan(rows, marks, keys, None)
    marks.beyond(n - 1)
    summary.chain_entries = n - 1
    summary.chain_head = prev if n > 1 else ""
    summary.chain_checkpoints = len(marks.signatures | embedded)


def _check_consistency(stored: StoredTree, heads: list[Head]) -> None:
    """Consecutive checkpoints: the RFC 9162 consistency proof the stored tree serves holds."""
    for a, b in itertools.pairwise(heads):
        if a.size == b.size or a.size == 0:
            continue
        try:
            proof = stored.consistency(a.size, b.size)
            merkle.verify_consistency(a.size, b.size, a.root, b.root, proof)
        except (LookupError, merkle.VerificationError) as e:
            raise _err(a.size, TREE_NODE_MODIFIED,
                       f"a consistency proof from {a.source} to {b.source}",
                       str(e), "the stored tree nodes that proofs are made of were changed"
                       ) from None


def check_queue(session: Session, max_age: float, tree_size: int) -> int:
    """The queued leaves; none may be older than `max_age` seconds."""
    depth, age = queue_status(session)
    if depth and age > max_age:
        raise _err(tree_size, LEAF_QUEUED_TOO_LONG, f"no leaf queued longer than {max_age:g} s",
                   f"the oldest queued {age:.1f} s ago ({depth} queued)",
                   "the sequencer is not running; start `python -m ivr audit integrate`")
    return depth


def _has_leaf(ref_expr, *conds):
    """A leaf (integrated or queued) whose ref is `ref_expr` (None: no ref), with extra
    conditions."""
    def ref(t):
        return t.ref.is_(None) if ref_expr is None else t.ref == ref_expr

    return or_(exists().where(ref(AuditEntry), *[c(AuditEntry) for c in conds]),
               exists().where(ref(AuditQueue), *[c(AuditQueue) for c in conds]))


def _consent_kind(t):
    return t.kind.in_(("consent.decided", "consent.withdrawn"))


def _names_consent(t):
    return t.body.contains(literal('"consent_id":') + cast(Consent.id, String) + literal(","))


def check_coverage(session: Session) -> None:
    """Every call, flow run, consent (decision or withdrawal) and agent transfer has its
    leaf, integrated or still queued."""
    checks = [
        ("call", Call.call_sid, select(Call.call_sid).where(~_has_leaf(Call.call_sid))),
        ("flow run", FlowRun.id, select(FlowRun.id).where(~_has_leaf(
            FlowRun.call_sid, lambda t: t.kind == "call.started",
            lambda t: t.body.contains(literal('"run":"') + FlowRun.id + literal('"'))))),
        # A decision or a withdrawal in a call names its call; one through the API names
        # the consent row itself.
        ("consent", Consent.id, select(Consent.id).where(
            ~_has_leaf(Consent.call_sid, _consent_kind, _names_consent),
            ~_has_leaf(literal("consent:") + cast(Consent.id, String)),
            ~and_(Consent.call_sid.is_(None), _has_leaf(None, _consent_kind, _names_consent)))),
        ("transfer", Transfer.id, select(Transfer.id).where(~_has_leaf(
            Transfer.call_sid, lambda t: t.kind.startswith("transfer."),
            lambda t: t.body.contains(literal('"transfer_id":"') + Transfer.id + literal('"'))))),
    ]
    for what, col, q in checks:
        missing = session.scalar(q.order_by(col).limit(1))
        if missing is not None:
            raise _err(-1, FACT_WITHOUT_LEAF, f"a leaf for {what} {missing}", "none",
                       f"{what} {missing} was stored without its audit leaf, or its leaf was "
                       "deleted")


# --- a few leaves, for the call page --------------------------------------------------


@dataclass
class EntriesStatus:
    """The inclusion status of a few leaves (a call's): checked with proofs, for display."""

    ok: bool
    checked: int
    first_seq: int | None = None
    last_seq: int | None = None
    problem: VerificationError | None = None
    checkpoint: dict | None = None
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
        if self.checked:
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

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"ok": self.ok, "checked": self.checked, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "message": self.message, "queued": self.queued,
                "problem": self.problem.to_dict() if self.problem else None,
                "checkpoint": self.checkpoint, "seqs": self.seqs}


def verify_entries(session: Session, seqs: Iterable[int], *, public_keys=None,
                   verifiers=None, origin=None, ref: str | None = None) -> EntriesStatus:
    """Check these leaves against their stored hashes, and each one's inclusion proof in the
    latest checkpoint; never raises on a broken log (the result says what is wrong)."""
    seqs = sorted(set(seqs))
    status = EntriesStatus(ok=True, checked=0, seqs=seqs)
    if ref is not None:
        status.queued = len(session.scalars(select(AuditQueue.id)
                                            .where(AuditQueue.ref == ref)).all())
    if not seqs:
        return status
    status.first_seq, status.last_seq = seqs[0], seqs[-1]
    if verifiers is None:
        _k, verifiers, origin = _default_trust(session)
    try:
        row = latest_head(session)
        head = open_heads([(row.id, row.tree_size, row.root_hash, row.note)], verifiers,
                          origin)[0] if row is not None else None
        tree = StoredTree(session)
        bodies = dict(session.execute(select(AuditEntry.seq, AuditEntry.body)
                                      .where(AuditEntry.seq.in_(seqs))).all())
        for s in seqs:
            i = s - 1
            if s not in bodies:
                raise _err(i, LEAF_DELETED, f"a leaf at index {i}", "none")
            h = merkle.leaf_hash(bodies[s].encode())
            stored = session.scalar(select(AuditNode.hash).where(AuditNode.level == 0,
                                                                 AuditNode.idx == i))
            if stored is None or bytes(stored) != h:
                raise _err(i, LEAF_MODIFIED, f"leaf hash {bytes(stored or b'').hex()}",
                           f"{h.hex()} over the leaf")
            if head is not None and i < head.size:
                merkle.verify_inclusion(i, head.size, h, tree.inclusion(i, head.size),
                                        head.root)
            else:
                status.uncovered += 1
            status.checked += 1
        if head is not None and status.uncovered < status.checked:
            status.checkpoint = {"id": head.id, "seq": head.size, "tree_size": head.size,
                                 "at": row.at.isoformat(), "key_id": verifiers[0].vkey()
                                 if verifiers else ""}
    except merkle.VerificationError as e:
        status.ok = False
        status.problem = _err(status.first_seq - 1, ROOT_MISMATCH, e.expected, e.found, e.what)
    except LookupError as e:
        status.ok = False
        status.problem = _err(status.first_seq - 1, TREE_NODE_MODIFIED, "a stored tree node",
                              str(e))
    except VerificationError as e:
        status.ok, status.problem = False, e
    return status


def verify_call(session: Session, call_sid: str, **kw) -> EntriesStatus:
    """`verify_entries` over every leaf of one call (and a count of its queued ones)."""
    seqs = session.scalars(select(AuditEntry.seq).where(AuditEntry.ref == call_sid))
    return verify_entries(session, list(seqs), ref=call_sid, **kw)


def max_queue_age_default(mmd: float) -> float:
    """The default bound on a queued leaf's age: a minute, or 10 MMD if that is longer."""
    return max(DEFAULT_MAX_QUEUE_AGE, 10 * mmd)

