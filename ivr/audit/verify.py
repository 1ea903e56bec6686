"""Verifying the chain: every hash, link, sequence number and checkpoint, from the first entry.

`verify_chain` streams the whole log in constant memory and raises VerificationError at the
first problem; it never returns False. `verify_entries`/`verify_call` check a few entries and
the links around them, and report (for display) rather than raise.

Bodies are canonical JSON (RFC 8785) whose top-level keys sort as at, data, kind, ref, seq, so
every body ends with `,"kind":K,"ref":R,"seq":N}`. The fast path checks that suffix instead of
parsing JSON; anything unexpected drops to a careful path that parses the body and names the
problem.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..storage.models import AuditEntry
from . import checkpoint as cps
from .chain import ENTRY_PREFIX, FIRST_PREV
from .errors import (
    BODY_MODIFIED,
    CHECKPOINT_MISMATCH,
    ENTRY_DELETED,
    ENTRY_INSERTED,
    LINK_BROKEN,
    ORDER_CHANGED,
    AuditError,
    VerificationError,
)

BATCH = 5000
_ROWS_SQL = "SELECT seq, prev_hash, body, hash, kind, ref FROM audit_log ORDER BY seq"
_CHECKPOINTS_SQL = ("SELECT id, seq, hash, key_id, signature, body FROM audit_checkpoints "
                    "ORDER BY seq, id")

Row = tuple  # (seq, prev_hash, body, hash, kind, ref)


@dataclass
class VerifySummary:
    """What a successful verification covered."""

    entries: int
    checkpoints: int
    head_seq: int
    head_hash: str
    seconds: float = 0.0

    def line(self) -> str:
        """The one-line summary `audit verify` prints."""
        head = f"head {self.head_seq} {self.head_hash[:16]}…" if self.head_seq else "empty log"
        return f"ok: {self.entries} entries, {self.checkpoints} checkpoints, {head}"

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"ok": True, "entries": self.entries, "checkpoints": self.checkpoints,
                "head_seq": self.head_seq, "head_hash": self.head_hash,
                "seconds": round(self.seconds, 3)}


def _sha(prev_hash: str, body: str) -> str:
    return hashlib.sha256(ENTRY_PREFIX + bytes.fromhex(prev_hash) + body.encode()).hexdigest()


def _body_seq(body: str):
    """The body's own seq, or None when the body is not an entry body at all."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    seq = doc.get("seq") if isinstance(doc, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _consistent(row: Row) -> bool:
    try:
        return _sha(row[1], row[2]) == row[3]
    except (ValueError, TypeError):
        return False


def diagnose(row: Row, expected_seq: int, expected_prev: str | None,
             peek: Callable[[], Row | None] = lambda: None, *, columns: bool = True) -> None:
    """Name what is wrong with `row`, read where `expected_seq` should be; raise, or return
    if the row is fine after all (the fast path is only a shortcut).

    `expected_prev` is the hash the row must link to (None when unknown); `peek` gives the
    next row, to tell swapped entries from deleted ones; `columns` says whether the row's
    kind and ref columns are there to be checked against the body.
    """
    s, p, b, h, kind, ref = row
    if s != expected_seq:
        missing = f"{expected_seq}" if s == expected_seq + 1 else f"{expected_seq}..{s - 1}"
        raise VerificationError(expected_seq, ENTRY_DELETED, f"entry {expected_seq}",
                                f"entry {s} next", f"missing: {missing}")
    consistent = _consistent(row)
    bs = _body_seq(b)
    if bs is None:
        raise VerificationError(s, BODY_MODIFIED, "a canonical JSON entry body",
                                f"{b[:60]!r}", "the body is not an entry")
    if bs > s:
        nxt = peek()
        if nxt is not None and _body_seq(nxt[2]) == s:
            raise VerificationError(s, ORDER_CHANGED, f"the body of entry {s}",
                                    f"the body of entry {bs}",
                                    f"entries {s} and {nxt[0]} hold each other's bodies")
        if consistent:
            gone = f"entry {s} was" if bs == s + 1 else f"entries {s}..{bs - 1} were"
            raise VerificationError(s, ENTRY_DELETED, f"the body of entry {s}",
                                    f"the body of entry {bs}",
                                    f"{gone} removed and the rest renumbered")
        raise VerificationError(s, BODY_MODIFIED, f"a body with seq {s}", f"seq {bs}")
    if bs < s:
        if consistent:
            n = s - bs
            raise VerificationError(bs, ENTRY_INSERTED, f"the body of entry {bs} at seq {bs}",
                                    f"it at seq {s}",
                                    f"{n} entr{'y' if n == 1 else 'ies'} inserted at seq {bs}")
        raise VerificationError(s, BODY_MODIFIED, f"a body with seq {s}", f"seq {bs}")
    if not consistent:
        raise VerificationError(s, BODY_MODIFIED, f"hash {h}", f"{_safe_sha(p, b)} over the body")
    if expected_prev is not None and p != expected_prev:
        if s == 1:
            raise VerificationError(1, LINK_BROKEN, f"previous hash {FIRST_PREV}", p)
        raise VerificationError(s - 1, BODY_MODIFIED, f"hash {p} (the link entry {s} holds)",
                                f"hash {expected_prev}",
                                f"entry {s - 1} was rewritten and re-hashed")
    doc = json.loads(b)
    if columns and (doc.get("kind") != kind or doc.get("ref") != ref):
        raise VerificationError(s, BODY_MODIFIED,
                                f"kind {doc.get('kind')!r}, ref {doc.get('ref')!r} (the body)",
                                f"kind {kind!r}, ref {ref!r} (the row's columns)")


def _safe_sha(p, b) -> str:
    try:
        return _sha(p, b)
    except (ValueError, TypeError):
        return "no hash (the previous hash is not hex)"


class _Checkpoints:
    """The checkpoints to meet on the way, by seq; each is checked when its entry is read."""

    def __init__(self, items: Iterable[cps.Checkpoint], keys):
        self.keys = keys
        self.by_seq: dict[int, list[cps.Checkpoint]] = {}
        for cp in items:
            cp.verify(keys)
            self.by_seq.setdefault(cp.seq, []).append(cp)
        self.seqs = sorted(self.by_seq)
        self.signatures = {cp.signature for v in self.by_seq.values() for cp in v}
        self._i = 0

    @property
    def next_seq(self) -> int:
        return self.seqs[self._i] if self._i < len(self.seqs) else -1

    def meet(self, seq: int, h: str) -> None:
        for cp in self.by_seq[seq]:
            if cp.hash != h:
                raise VerificationError(seq, CHECKPOINT_MISMATCH, f"hash {cp.hash} ({cp.source}, "
                                        f"signed {cp.at})", f"hash {h} in the chain",
                                        f"the chain was rewritten at or before seq {seq}")
        self._i += 1

    def beyond(self, head_seq: int) -> None:
        if self.next_seq != -1:
            cp = self.by_seq[self.next_seq][0]
            raise VerificationError(head_seq + 1, ENTRY_DELETED,
                                    f"entries up to seq {cp.seq} ({cp.source})",
                                    f"the chain ends at seq {head_seq}",
                                    "entries were removed from the end")


def _embedded(seq: int, prev: str, body: str, keys) -> cps.Checkpoint:
    """Check the checkpoint an `audit.checkpoint` entry carries: it signs the entry before it."""
    try:
        cp = cps.from_entry_data(json.loads(body)["data"], seq)
    except (KeyError, TypeError, ValueError):
        raise VerificationError(seq, CHECKPOINT_MISMATCH, "a signed checkpoint in the entry",
                                "an entry of that kind without one") from None
    cp.verify(keys)
    if cp.seq != seq - 1 or cp.hash != prev:
        raise VerificationError(cp.seq, CHECKPOINT_MISMATCH,
                                f"hash {cp.hash} at seq {cp.seq} (signed, {cp.source})",
                                f"hash {prev} at seq {seq - 1}",
                                "the chain was rewritten before the checkpoint")
    return cp


def _default_keys() -> dict:
    """The app's own public key when there is an app; outside one, no key is known."""
    from flask import has_app_context  # late import: audit exception until the store split

    return cps.app_public_keys() if has_app_context() else {}


@contextmanager
def _stream(session: Session) -> Iterator[tuple[list[tuple], Iterator[Row]]]:
    """The stored checkpoints, then every entry in order, on a DBAPI connection of its own.

    Its own connection, because on SQLite every session transaction takes the write lock
    (BEGIN IMMEDIATE): a long verification must not stall the webhooks. Checkpoints are read
    before the entries, so every checkpoint refers to entries the stream will contain.
    """
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    conn = engine.raw_connection()
    cur = None
    try:
        cur = conn.cursor()
        cur.execute(_CHECKPOINTS_SQL)
        stored = cur.fetchall()
        cur.close()
        if engine.dialect.name == "postgresql":
            # A server-side cursor: rows arrive BATCH at a time, memory stays flat.
            cur = conn.driver_connection.cursor(name="ivr_audit_verify")
            cur.itersize = BATCH
        else:
            cur = conn.cursor()
        cur.execute(_ROWS_SQL)
        batches = iter(lambda: cur.fetchmany(BATCH), [])
        yield stored, itertools.chain.from_iterable(batches)
    finally:
        try:
            if cur is not None:
                cur.close()
            conn.rollback()
        finally:
            conn.close()


def verify_chain(session: Session, *, public_keys=None, progress=None,
                 checkpoints: Iterable[cps.Checkpoint] = ()) -> VerifySummary:
    """Verify the whole log from seq 1 against its stored checkpoints and any given ones.

    `public_keys` maps key ids to Ed25519 public keys (default: the app's own key);
    `progress(seq)` is called every few thousand entries. Raises VerificationError at the
    first problem, AuditError when the database cannot be read.
    """
    started = time.perf_counter()
    keys = _default_keys() if public_keys is None else public_keys
    bind = session.get_bind()
    dbapi_error = getattr(bind, "engine", bind).dialect.loaded_dbapi.Error
    try:
        with _stream(session) as (stored, rows):
            marks = _Checkpoints([*map(cps.from_row, stored), *checkpoints], keys)
            n, prev, embedded = _scan(rows, marks, keys, progress)
            marks.beyond(n - 1)
    except dbapi_error as e:
        raise AuditError(f"cannot read the audit log: {str(e).splitlines()[0]}") from e
    return VerifySummary(entries=n - 1, checkpoints=len(marks.signatures | embedded),
                         head_seq=n - 1, head_hash=prev if n > 1 else "",
                         seconds=time.perf_counter() - started)


def _scan(rows: Iterator[Row], marks: _Checkpoints, keys, progress) -> tuple[int, str, set]:
    """The hot loop: returns (next expected seq, head hash, signatures of the checkpoints
    carried by audit.checkpoint entries)."""
    sha = hashlib.sha256
    fromhex = bytes.fromhex
    prefix = ENTRY_PREFIX
    n, prev, embedded = 1, FIRST_PREV, set()
    next_cp = marks.next_seq
    report = BATCH * 20
    for row in rows:
        s, p, b, h, kind, ref = row
        if ref is None:
            tail = f',"kind":"{kind}","ref":null,"seq":{s}}}'
        else:
            tail = f',"kind":"{kind}","ref":"{ref}","seq":{s}}}'
        if (s != n or p != prev or not b.endswith(tail)
                or sha(prefix + fromhex(p) + b.encode()).hexdigest() != h):
            diagnose(row, n, prev, lambda: next(rows, None))
        if s == next_cp:
            marks.meet(s, h)
            next_cp = marks.next_seq
        if kind == cps.ENTRY_KIND:
            embedded.add(_embedded(s, p, b, keys).signature)
        prev = h
        n += 1
        if progress is not None and n % report == 0:
            progress(n - 1)
    return n, prev, embedded


# --- a few entries, for the call page -------------------------------------------------


@dataclass
class EntriesStatus:
    """The chain status of a few entries (a call's): checked locally, for display."""

    ok: bool
    checked: int
    first_seq: int | None = None
    last_seq: int | None = None
    problem: VerificationError | None = None
    checkpoint: dict | None = None
    seqs: list[int] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One line for a page."""
        if self.problem is not None:
            return f"chain check FAILED: {self.problem}"
        if not self.checked:
            return "no audit entries"
        cp = (f"; a signed checkpoint follows at seq {self.checkpoint['seq']} (signature valid)"
              if self.checkpoint else "; no checkpoint follows them yet")
        return (f"{self.checked} entries ({self.first_seq}..{self.last_seq}) verified: hashes "
                f"and links to their neighbours hold{cp}")

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"ok": self.ok, "checked": self.checked, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "message": self.message,
                "problem": self.problem.to_dict() if self.problem else None,
                "checkpoint": self.checkpoint, "seqs": self.seqs}


def _rows_by_seq(session: Session, seqs: set[int]) -> dict[int, Row]:
    out: dict[int, Row] = {}
    wanted = sorted(seqs)
    for i in range(0, len(wanted), 500):
        chunk = wanted[i:i + 500]
        q = select(AuditEntry.seq, AuditEntry.prev_hash, AuditEntry.body, AuditEntry.hash,
                   AuditEntry.kind, AuditEntry.ref).where(AuditEntry.seq.in_(chunk))
        out.update({r[0]: tuple(r) for r in session.execute(q)})
    return out


def verify_entries(session: Session, seqs: Iterable[int], *, public_keys=None) -> EntriesStatus:
    """Check these entries' hashes, bodies and links to their neighbours; never raises on a
    broken chain (the result says what is wrong). The full proof is `verify_chain`."""
    seqs = sorted(set(seqs))
    status = EntriesStatus(ok=True, checked=0, seqs=seqs)
    if not seqs:
        return status
    status.first_seq, status.last_seq = seqs[0], seqs[-1]
    head = session.scalar(select(func.max(AuditEntry.seq))) or 0
    rows = _rows_by_seq(session, {x for s in seqs for x in (s - 1, s, s + 1) if x > 0})
    try:
        for s in seqs:
            row = rows.get(s)
            if row is None:
                raise VerificationError(s, ENTRY_DELETED, f"entry {s}", "no such entry")
            before = rows.get(s - 1)
            if s > 1 and before is None:
                raise VerificationError(s - 1, ENTRY_DELETED, f"entry {s - 1}", "no such entry")
            expected_prev = before[3] if before else FIRST_PREV
            diagnose(row, s, expected_prev, lambda s=s: rows.get(s + 1))
            after = rows.get(s + 1)
            if after is not None:
                diagnose(after, s + 1, row[3], lambda s=s: rows.get(s + 2))
            elif s < head:
                raise VerificationError(s + 1, ENTRY_DELETED, f"entry {s + 1}", "no such entry")
            status.checked += 1
        cp = cps.latest(session, at_or_after=seqs[-1])
        if cp is not None:
            signed = cps.from_row(cp)
            signed.verify(_default_keys() if public_keys is None else public_keys)
            status.checkpoint = {"id": cp.id, "seq": cp.seq, "hash": cp.hash, "at": signed.at,
                                 "key_id": cp.key_id}
    except VerificationError as e:
        status.ok, status.problem = False, e
    return status


def verify_call(session: Session, call_sid: str, *, public_keys=None) -> EntriesStatus:
    """`verify_entries` over every audit entry of one call."""
    seqs = session.scalars(select(AuditEntry.seq).where(AuditEntry.ref == call_sid))
    return verify_entries(session, list(seqs), public_keys=public_keys)


# --- a segment, for evidence packages --------------------------------------------------


def segment(session: Session, first: int, last: int) -> Iterator[dict]:
    """Entries first..last in order, as JSON-ready dicts (seq, prev_hash, body, hash)."""
    q = (select(AuditEntry.seq, AuditEntry.prev_hash, AuditEntry.body, AuditEntry.hash)
         .where(AuditEntry.seq.between(first, last)).order_by(AuditEntry.seq)
         .execution_options(yield_per=BATCH))
    for r in session.execute(q):
        yield {"seq": r.seq, "prev_hash": r.prev_hash, "body": r.body, "hash": r.hash}


def verify_segment(entries: Iterable[dict], checkpoint: cps.Checkpoint | None = None,
                   public_keys=None) -> int:
    """Verify consecutive entries (dicts as `segment` yields) and, if given, that the signed
    checkpoint lands on one of them. Returns the count; raises VerificationError."""
    it = iter(entries)
    first = next(it, None)
    if first is None:
        return 0
    if checkpoint is not None:
        checkpoint.verify(public_keys or {})
    n, prev, count, met = first["seq"], first["prev_hash"], 0, checkpoint is None
    for e in itertools.chain([first], it):
        row = (e["seq"], e["prev_hash"], e["body"], e["hash"], None, None)
        if (row[0] != n or row[1] != prev or _sha(row[1], row[2]) != row[3]
                or _body_seq(row[2]) != n):
            diagnose(row, n, prev, columns=False)
        if checkpoint is not None and row[0] == checkpoint.seq:
            if checkpoint.hash != row[3]:
                raise VerificationError(row[0], CHECKPOINT_MISMATCH, f"hash {checkpoint.hash}",
                                        f"hash {row[3]}", checkpoint.source)
            met = True
        prev, n, count = row[3], n + 1, count + 1
    if not met:
        raise VerificationError(checkpoint.seq, CHECKPOINT_MISMATCH,
                                f"entry {checkpoint.seq} in the segment",
                                f"a segment ending at {n - 1}")
    return count
