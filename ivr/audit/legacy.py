"""The hash chain that preceded the Merkle log: every hash, link, seq and chain checkpoint.

Entries from before the upgrade keep their chain columns (prev_hash, hash); `scan` streams
them in constant memory and raises VerificationError at the first problem. They are also the
first leaves of the Merkle log, which ivr/audit/verify.py checks (ivr/services/audit_verify.py
reads both from the database).

Bodies are canonical JSON (RFC 8785) whose top-level keys sort as at, data, kind, ref, seq, so
every body ends with `,"kind":K,"ref":R,"seq":N}`. The fast path checks that suffix instead of
parsing JSON; anything unexpected drops to a careful path that parses the body and names the
problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import checkpoint as cps
from .errors import (
    BODY_MODIFIED,
    CHECKPOINT_MISMATCH,
    ENTRY_DELETED,
    ENTRY_INSERTED,
    LINK_BROKEN,
    ORDER_CHANGED,
    VerificationError,
)
from .leaves import FIRST_PREV, entry_hash

BATCH = 5000
ROWS_SQL = ("SELECT seq, prev_hash, body, hash, kind, ref FROM audit_log "
            "WHERE hash IS NOT NULL ORDER BY seq")
CHECKPOINTS_SQL = ("SELECT id, seq, hash, key_id, signature, body FROM audit_checkpoints "
                    "ORDER BY seq, id")

Row = tuple[int, str, str, str, str, str | None]  # (seq, prev_hash, body, hash, kind, ref)
Keys = Mapping[str, Ed25519PublicKey]  # the chain checkpoints' keys, by key id


def _sha(prev_hash: str, body: str) -> str:
    return entry_hash(prev_hash, body.encode())


def _body_seq(body: str) -> int | None:
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


def diagnose(row: Row, expected_seq: int, expected_prev: str | None,  # noqa: C901 - one branch per way the old chain can break
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


def _safe_sha(p: str, b: str) -> str:
    try:
        return _sha(p, b)
    except (ValueError, TypeError):
        return "no hash (the previous hash is not hex)"


class Checkpoints:
    """The checkpoints to meet on the way, by seq; each is checked when its entry is read."""

    def __init__(self, items: Iterable[cps.Checkpoint], keys: Keys) -> None:
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


def _embedded(seq: int, prev: str, body: str, keys: Keys) -> cps.Checkpoint:
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


def scan(rows: Iterator[Row], marks: Checkpoints, keys: Keys,
         progress: Callable[[int], object] | None) -> tuple[int, str, set[str]]:
    """The hot loop: returns (next expected seq, head hash, signatures of the checkpoints
    carried by audit.checkpoint entries)."""
    n, prev = 1, FIRST_PREV
    embedded: set[str] = set()
    next_cp = marks.next_seq
    report = BATCH * 20
    for row in rows:
        s, p, b, h, kind, ref = row
        if ref is None:
            tail = f',"kind":"{kind}","ref":null,"seq":{s}}}'
        else:
            tail = f',"kind":"{kind}","ref":"{ref}","seq":{s}}}'
        if (s != n or p != prev or not b.endswith(tail)
                or entry_hash(p, b.encode()) != h):
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


