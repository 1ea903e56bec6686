"""Verifying the audit log in the database: streams every leaf, the former hash chain, the
queue, and checks that every covered fact has its leaf, with the pure checks of
ivr/audit/verify.py and ivr/audit/legacy.py. By default it trusts the app's own key.

`verify_entries` checks a few leaves with inclusion proofs, for display.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager

from flask import current_app, has_app_context
from sqlalchemy import String, and_, cast, exists, literal, or_, select
from sqlalchemy.orm import Session

from ivr.audit import checkpoint as cps
from ivr.audit import legacy, merkle, note
from ivr.audit.errors import (
    FACT_WITHOUT_LEAF,
    LEAF_DELETED,
    LEAF_MODIFIED,
    LEAF_QUEUED_TOO_LONG,
    ROOT_MISMATCH,
    TREE_NODE_MODIFIED,
    AuditError,
    VerificationError,
)
from ivr.audit.verify import (
    BATCH,
    DEFAULT_MAX_QUEUE_AGE,
    EntriesStatus,
    VerifySummary,
    check_consistency,
    check_split_views,
    leaf_error,
    merkle_size,
    note_root_hex,
    open_heads,
    start_range,
    verify_leaves,
)
from ivr.storage.audit_store import queue_status
from ivr.storage.audit_tree import StoredTree, latest_head
from ivr.storage.kvkk_models import DestructionLog, IysBatch
from ivr.storage.models import (
    AuditEntry,
    AuditNode,
    AuditQueue,
    AuditTreeHead,
    Call,
    Consent,
    FlowRun,
    Turn,
)
from ivr.storage.transfer_models import Transfer

from . import audit_keys
from .audit_sequencer import log_origin, note_verifier

_LEAVES_SQL = ("SELECT a.seq, a.body, a.kind, a.ref, t.hash FROM audit_log a "
               "LEFT JOIN audit_tree t ON t.level = 0 AND t.idx = a.seq - 1 ORDER BY a.seq")
_HEADS_SQL = "SELECT id, tree_size, root_hash, note FROM audit_tree_heads ORDER BY tree_size, id"
# The leaves after a tree size, a range at a time, and the hashes stored for that range.
_LEAVES_AFTER_SQL = ("SELECT seq, body, kind, ref FROM audit_log WHERE seq > %s ORDER BY seq "
                     "LIMIT %s")
_HASHES_IN_SQL = "SELECT idx, hash FROM audit_tree WHERE level = 0 AND idx >= %s AND idx < %s"
_RANGE = 20_000
_HEADS_FROM_SQL = _HEADS_SQL.replace(" ORDER BY", " WHERE tree_size >= %s ORDER BY")


@contextmanager
def _raw(session: Session):
    """A DBAPI connection of its own, outside the session's transaction."""
    conn = session.get_bind().engine.raw_connection()
    try:
        yield conn
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


def _stream(conn, sql: str, name: str) -> Generator[tuple, None, None]:
    cur = conn.driver_connection.cursor(name=name)  # server-side: constant memory
    cur.itersize = BATCH
    try:
        cur.execute(sql)
        yield from itertools.chain.from_iterable(iter(lambda: cur.fetchmany(BATCH), []))
    finally:
        cur.close()


def _fetch(conn, sql: str, params: tuple = ()) -> list[tuple]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params or None)
        return list(cur.fetchall())
    finally:
        cur.close()


def _default_trust(session: Session) -> tuple[dict, list[note.Verifier], str | None]:
    """The app's own keys when there is an app; outside one, no key is known."""
    if not has_app_context():
        return {}, [], None
    key = audit_keys.signing_key(current_app.config, create=False)
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
        with _raw(session) as conn:
            _verify_chain(conn, public_keys, checkpoints, summary)
            outside = [(0, merkle_size(t), "", t) for t in notes]
            heads = open_heads([*_fetch(conn, _HEADS_SQL)], verifiers, origin)
            extra = open_heads([(0, s, note_root_hex(t), t) for _, s, _, t in outside],
                               verifiers, origin)
            heads = sorted([*heads, *extra], key=lambda h: (h.size, h.id))
            check_split_views(heads)
            stored = StoredTree(session)
            with closing(_stream(conn, _LEAVES_SQL, "ivr_audit_leaves")) as rows:
                compact = verify_leaves(rows, heads, progress, lambda n: _safe_root(stored, n))
            check_consistency(stored, heads)
            summary.entries = summary.head_seq = compact.size
            summary.head_hash = compact.root().hex() if summary.entries else ""
            summary.tree_checkpoints = len(heads)
            summary.checkpoints = summary.chain_checkpoints + len(heads)
    except dbapi_error as e:
        raise AuditError(f"cannot read the audit log: {str(e).splitlines()[0]}") from e
    summary.queued = check_queue(session, max_queue_age, summary.entries)
    if check_facts:
        check_coverage(session)
    summary.seconds = time.perf_counter() - started
    return summary


def verify_from_checkpoint(session: Session, checkpoint_id: int, *, verifiers=None,
                           origin=None, progress=None, notes: Iterable[str] = (),
                           max_queue_age: float = DEFAULT_MAX_QUEUE_AGE) -> VerifySummary:
    """Verify what the log added after signed checkpoint #`checkpoint_id`, one that an
    earlier run verified; raises VerificationError at the first problem.

    The checkpoint's signature is checked and its root recomputed from the stored hashes of
    its perfect subtrees (one per bit of its size), so the leaves it covers are not read.
    Then every later leaf is checked against its stored hash and appended, every later
    checkpoint's signature and root is checked against the recomputed tree, and the RFC 9162
    consistency proof from the checkpoint to the latest one must hold. Leaves before the
    checkpoint, the former hash chain and the facts' leaves are the full verify's job.
    """
    started = time.perf_counter()
    if verifiers is None:
        _k, verifiers, origin0 = _default_trust(session)
        origin = origin if origin is not None else origin0
    bind = session.get_bind()
    dbapi_error = getattr(bind, "engine", bind).dialect.loaded_dbapi.Error
    row = session.get(AuditTreeHead, checkpoint_id)
    if row is None:
        raise AuditError(f"there is no signed checkpoint #{checkpoint_id} (see "
                         "`python -m ivr audit checkpoints`)")
    summary = VerifySummary(entries=0, checkpoints=0, head_seq=0, head_hash="",
                            from_checkpoint=row.id, from_size=row.tree_size)
    try:
        with _raw(session) as conn:
            rows = _fetch(conn, _HEADS_FROM_SQL, (row.tree_size,))
            # The starting and the latest checkpoint's signatures are checked; the ones
            # between are parsed and their roots checked against the recomputed tree (the
            # full verify checks every signature).
            between = frozenset(r[0] for r in rows[:-1]) - {row.id}
            heads = open_heads(rows, verifiers, origin, unsigned=between)
            outside = [(0, merkle_size(t), note_root_hex(t), t) for t in notes]
            heads += open_heads([o for o in outside if o[1] >= row.tree_size], verifiers, origin)
            heads.sort(key=lambda h: (h.size, h.id))
            check_split_views(heads)
            start = next(h for h in heads if h.id == row.id)
            stored = StoredTree(session)
            try:
                peaks = [stored.subtree(idx << level, (idx + 1) << level)
                         for level, idx in merkle.peak_ranges(start.size)]
            except LookupError as e:
                raise leaf_error(start.size, TREE_NODE_MODIFIED,
                                 f"the stored subtrees of {start.source}", str(e)) from None
            compact = start_range(start, peaks)
            later = [h for h in heads if h.size > start.size]
            with closing(_leaves_after(conn, start.size)) as leaves:
                compact = verify_leaves(leaves, later, progress,
                                        lambda n: _safe_root(stored, n), start=compact,
                                        start_head=start)
            if later:
                check_consistency(stored, [start, later[-1]])
            summary.entries = summary.head_seq = compact.size
            summary.head_hash = compact.root().hex() if summary.entries else ""
            summary.tree_checkpoints = summary.checkpoints = len(heads)
            newest = [h for h in heads if h.id]
            summary.latest_checkpoint = newest[-1].id if newest else None
    except dbapi_error as e:
        raise AuditError(f"cannot read the audit log: {str(e).splitlines()[0]}") from e
    summary.queued = check_queue(session, max_queue_age, summary.entries)
    summary.seconds = time.perf_counter() - started
    return summary


def _leaves_after(conn, size: int) -> Generator[tuple, None, None]:
    """(seq, body, kind, ref, the hash stored at index seq - 1 or None) of the leaves after
    `size`, in order: what _LEAVES_SQL gives, read as index ranges (no scan, no sort). The
    next range is read on a thread of its own while this one is hashed."""
    cur = conn.driver_connection.cursor(binary=True)

    def read(lo: int) -> tuple[list, dict]:
        cur.execute(_LEAVES_AFTER_SQL, (lo, _RANGE))
        leaves = cur.fetchall()
        if not leaves:
            return [], {}
        cur.execute(_HASHES_IN_SQL, (lo, leaves[-1][0]))
        return leaves, dict(cur.fetchall())

    with ThreadPoolExecutor(1) as reader:
        try:
            pending = reader.submit(read, size)
            while True:
                leaves, stored = pending.result()
                if not leaves:
                    return
                pending = reader.submit(read, leaves[-1][0])
                for seq, body, kind, ref in leaves:
                    yield seq, body, kind, ref, stored.get(seq - 1)
        finally:
            pending.cancel()
            reader.shutdown(wait=True)
            cur.close()


def _safe_root(stored: StoredTree, n: int) -> bytes | None:
    try:
        return stored.root(n)
    except LookupError:
        return None


def _verify_chain(conn, keys, extra, summary: VerifySummary) -> None:
    marks = legacy.Checkpoints([*map(cps.from_row, _fetch(conn, legacy.CHECKPOINTS_SQL)),
                                *extra], keys)
    with closing(_stream(conn, legacy.ROWS_SQL, "ivr_audit_chain")) as rows:
        n, prev, embedded = legacy.scan(rows, marks, keys, None)
    marks.beyond(n - 1)
    summary.chain_entries = n - 1
    summary.chain_head = prev if n > 1 else ""
    summary.chain_checkpoints = len(marks.signatures | embedded)


def check_queue(session: Session, max_age: float, tree_size: int) -> int:
    """The queued leaves; none may be older than `max_age` seconds."""
    depth, age = queue_status(session)
    if depth and age > max_age:
        raise leaf_error(tree_size, LEAF_QUEUED_TOO_LONG,
                         f"no leaf queued longer than {max_age:g} s",
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


def _names_turn(t):
    # prompts.played's data ends with "step" (canonical JSON sorts the keys); other kinds
    # that name a step may go on after it.
    run = t.body.contains(literal('"run":"') + Turn.run_id + literal('"'))
    step = literal('"step":') + cast(Turn.step, String)
    return and_(run, or_(t.body.contains(step + literal("}")),
                         t.body.contains(step + literal(","))))


def check_coverage(session: Session) -> None:
    """Every call, flow run and turn, consent (decision or withdrawal), agent transfer, İYS
    batch and destruction run has its leaf, integrated or still queued. (An auditor's
    access has no row of its own: its leaf is the record.)"""
    turns = (select(Turn.run_id + literal(" step ") + cast(Turn.step, String))
             .join(FlowRun, FlowRun.id == Turn.run_id)
             .where(~_has_leaf(FlowRun.call_sid, lambda t: t.kind == "prompts.played",
                               _names_turn)))
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
        ("turn", Turn.run_id, turns),
        ("İYS batch", IysBatch.id, select(IysBatch.id).where(~_has_leaf(
            None, lambda t: t.kind == "iys.export",
            lambda t: t.body.contains(literal('"id":"') + IysBatch.id + literal('"'))))),
        ("destruction run", DestructionLog.run_id, select(DestructionLog.run_id).where(
            ~_has_leaf(literal("retention:") + DestructionLog.run_id,
                       lambda t: t.kind == "retention.run"),
            ~or_(*[exists().where(
                tbl.kind.in_(("retention.run", "subject.erased")),
                tbl.body.contains(literal('"run_id":"') + DestructionLog.run_id + literal('"')))
                for tbl in (AuditEntry, AuditQueue)]))),
    ]
    for what, col, q in checks:
        missing = session.scalar(q.order_by(col).limit(1))
        if missing is not None:
            raise leaf_error(-1, FACT_WITHOUT_LEAF, f"a leaf for {what} {missing}", "none",
                             f"{what} {missing} was stored without its audit leaf, or its leaf was "
                             "deleted")


# --- a few leaves, for the call page --------------------------------------------------


def verify_entries(session: Session, seqs: Iterable[int], *, public_keys=None,  # noqa: C901 - one outcome per way a leaf can fail, each named for the call page
                   verifiers=None, origin=None, ref: str | None = None,
                   checkpoint: AuditTreeHead | None = None) -> EntriesStatus:
    """Check these leaves against their stored hashes, and each one's inclusion proof in the
    latest checkpoint (or in `checkpoint`); never raises on a broken log (the result says what
    is wrong)."""
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
        row = checkpoint if checkpoint is not None else latest_head(session)
        head = open_heads([(row.id, row.tree_size, row.root_hash, row.note)], verifiers,
                          origin)[0] if row is not None else None
        tree = StoredTree(session)
        bodies = dict(session.execute(select(AuditEntry.seq, AuditEntry.body)
                                      .where(AuditEntry.seq.in_(seqs))).all())
        for s in seqs:
            i = s - 1
            if s not in bodies:
                raise leaf_error(i, LEAF_DELETED, f"a leaf at index {i}", "none")
            h = merkle.leaf_hash(bodies[s].encode())
            stored = session.scalar(select(AuditNode.hash).where(AuditNode.level == 0,
                                                                 AuditNode.idx == i))
            if stored is None or bytes(stored) != h:
                raise leaf_error(i, LEAF_MODIFIED, f"leaf hash {bytes(stored or b'').hex()}",
                                 f"{h.hex()} over the leaf")
            if head is not None and i < head.size:
                merkle.verify_inclusion(i, head.size, h, tree.inclusion(i, head.size),
                                        head.root)
            else:
                status.uncovered += 1
            status.checked += 1
        if head is not None and row is not None and status.uncovered < status.checked:
            status.checkpoint = {"id": head.id, "seq": head.size, "tree_size": head.size,
                                 "at": row.at.isoformat(), "key_id": verifiers[0].vkey()
                                 if verifiers else ""}
    except merkle.VerificationError as e:
        status.ok = False
        status.problem = leaf_error(status.first_seq - 1, ROOT_MISMATCH, e.expected, e.found,
                                    e.what)
    except LookupError as e:
        status.ok = False
        status.problem = leaf_error(status.first_seq - 1, TREE_NODE_MODIFIED, "a stored tree node",
                                    str(e))
    except VerificationError as e:
        status.ok, status.problem = False, e
    return status
