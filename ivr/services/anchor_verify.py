"""Verifying the checkpoints' anchors in the database, for `audit verify`: every stored
time-stamp token against the authorities' roots and the checkpoint it is stored with, the
time-stamp coverage of the log, and witness cosignatures against the keys and quorum the
auditor asks for. Trust is passed in; the pure checks are ivr/audit/timestamps.py and
ivr/audit/cosignature.py. Raises VerificationError naming the checkpoint."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.audit import cosignature, merkle, note, timestamps
from ivr.audit.errors import (
    COSIGNATURE_INVALID,
    COSIGNATURES_MISSING,
    TIMESTAMP_EARLY,
    TIMESTAMP_INVALID,
    TIMESTAMP_MISSING,
    TIMESTAMP_OTHER_CHECKPOINT,
    VerificationError,
)
from ivr.storage import anchor_store as store
from ivr.storage.models import AuditTreeHead


def _error(head: AuditTreeHead, problem: str, expected: str, found: str,
           detail: str = "") -> VerificationError:
    return VerificationError(head.id, problem, expected, found,
                             detail or f"checkpoint #{head.id}, tree size {head.tree_size}",
                             unit="checkpoint")


def _age(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return (f"{d} d {h} h" if d else f"{h} h {m} min" if h else f"{m} min {s} s" if m
            else f"{s} s")


@dataclass
class AnchorSummary:
    """What the anchor checks covered."""

    timestamps: int = 0
    unchecked_timestamps: int = 0
    cosigned: dict[str, int] = field(default_factory=dict)
    quorum: int = 0

    def line(self) -> str:
        """A clause for the `audit verify` summary."""
        out = f"{self.timestamps} time-stamps verified"
        if self.unchecked_timestamps:
            out += (f" ({self.unchecked_timestamps} not checked: no authority roots; set "
                    "IVR_TSA_CA_FILE or --tsa-ca)")
        if self.cosigned:
            out += "; cosignatures: " + ", ".join(f"{n} on {k} checkpoints"
                                                  for n, k in self.cosigned.items())
            out += f" (quorum {self.quorum})"
        return out

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"timestamps": self.timestamps, "unchecked_timestamps": self.unchecked_timestamps,
                "cosignatures": self.cosigned, "quorum": self.quorum}


def _which(heads: list[AuditTreeHead], digest: bytes) -> str:
    for h in heads:
        try:
            if timestamps.imprint(h.note) == digest:
                return f"checkpoint #{h.id} (tree size {h.tree_size})"
        except note.NoteError:
            continue
    return "no checkpoint of this log"


def check_timestamps(s: Session, roots: list[x509.Certificate], summary: AnchorSummary,  # noqa: C901 - one verdict per way a token can fail
                     *, interval: float | None, now: datetime, min_size: int = 0) -> None:
    """Every stored token: over its own checkpoint's signed body, signed under the roots,
    not before the checkpoint's time. With `interval` (time-stamping is configured), the
    oldest checkpoint that no token covers (a token on it or on a larger checkpoint) must be
    younger than the interval. With `min_size`, only checkpoints of at least that size."""
    heads = list(s.scalars(select(AuditTreeHead).where(AuditTreeHead.tree_size >= min_size)
                           .order_by(AuditTreeHead.tree_size, AuditTreeHead.id)))
    covered = 0
    for anchor, head in store.done(s, store.TIMESTAMP, min_size):
        what = f"time-stamp token of {anchor.target} stored with checkpoint #{head.id}"
        try:
            der = base64.b64decode(anchor.data or "", validate=True)
            body = timestamps.signed_body(head.note)
        except (binascii.Error, note.NoteError) as e:
            raise _error(head, TIMESTAMP_INVALID, "a base64 DER token", str(e)) from None
        try:
            digest = timestamps.digest_of(der)
        except merkle.VerificationError as e:
            raise _error(head, TIMESTAMP_INVALID, e.expected, e.found, what) from None
        if digest != timestamps.imprint(head.note):
            raise _error(head, TIMESTAMP_OTHER_CHECKPOINT,
                         f"a token over checkpoint #{head.id} (tree size {head.tree_size}): "
                         f"SHA-256 {timestamps.imprint(head.note).hex()[:16]}…",
                         f"a token over {_which(heads, digest)}: {digest.hex()[:16]}…",
                         f"the {what} time-stamps another checkpoint")
        if not roots:
            summary.unchecked_timestamps += 1
            covered = max(covered, head.tree_size)
            continue
        try:
            tok = timestamps.verify(der, body, roots, what=what)
            timestamps.check_not_before(tok, head.at, what)
        except merkle.VerificationError as e:
            problem = TIMESTAMP_EARLY if "no earlier" in e.expected else TIMESTAMP_INVALID
            raise _error(head, problem, e.expected, e.found, what) from None
        summary.timestamps += 1
        covered = max(covered, head.tree_size)
    if interval is None:
        return
    for head in heads:
        if head.tree_size <= covered:
            continue
        age = (now - head.at).total_seconds()
        if age > interval:
            raise _error(head, TIMESTAMP_MISSING,
                         f"a time-stamp within {_age(interval)} (IVR_AUDIT_TIMESTAMP_INTERVAL)",
                         f"none for {_age(age)}",
                         f"checkpoint #{head.id} (tree size {head.tree_size}) is {_age(age)} "
                         "old and no time-stamp covers it")
        break


def check_cosignatures(s: Session, witnesses: list[cosignature.Cosigner], quorum: int,  # noqa: C901 - one verdict per way a cosignature can fail
                       summary: AnchorSummary, *, max_age: float, now: datetime,
                       min_size: int = 0) -> None:
    """Every stored cosignature of a known witness verifies over its checkpoint and is not
    older than it; and the newest checkpoint older than `max_age` seconds is covered (it,
    or a larger checkpoint) by valid cosignatures of at least `quorum` of the witnesses.
    With `min_size`, only checkpoints of at least that size."""
    summary.quorum = quorum
    by_head: dict[int, set[str]] = {}
    heads = {h.id: h for h in s.scalars(select(AuditTreeHead)
                                        .where(AuditTreeHead.tree_size >= min_size))}
    rows = store.done(s, store.COSIGNATURE, min_size)
    for w in witnesses:
        summary.cosigned[w.name] = 0
    for anchor, head in rows:
        text = note.parse_note(head.note).text
        try:
            sigs = note.parse_note(f"{text}\n{anchor.data}").signatures
        except note.NoteError as e:
            raise _error(head, COSIGNATURE_INVALID, "a cosignature line", str(e)) from None
        for w in witnesses:
            for sig in cosignature.matching(sigs, w):
                try:
                    ts = cosignature.verify_cosignature(text, sig, w)
                except merkle.VerificationError as e:
                    raise _error(head, COSIGNATURE_INVALID, e.expected, e.found,
                                 f"the {e.what} stored with checkpoint #{head.id} (tree size "
                                 f"{head.tree_size}): replayed from another checkpoint, or "
                                 "altered") from None
                floor = head.at.astimezone(UTC).replace(microsecond=0)
                if datetime.fromtimestamp(ts, UTC) < floor:
                    raise _error(head, COSIGNATURE_INVALID,
                                 f"a cosignature made after the checkpoint ({floor.isoformat()})",
                                 f"one dated {datetime.fromtimestamp(ts, UTC).isoformat()}",
                                 f"the cosignature of {w.name} is older than checkpoint "
                                 f"#{head.id}: a replay")
                by_head.setdefault(head.id, set()).add(w.name)
                summary.cosigned[w.name] += 1
    if not witnesses or quorum <= 0:
        return
    ordered = sorted(heads.values(), key=lambda h: (h.tree_size, h.id))
    due = [h for h in ordered if (now - h.at).total_seconds() >= max_age]
    if not due:
        return
    target = due[-1]
    best = max((len(by_head.get(h.id, ())) for h in ordered if h.tree_size >= target.tree_size),
               default=0)
    if best < quorum:
        raise _error(target, COSIGNATURES_MISSING,
                     f"cosignatures of at least {quorum} of the witnesses "
                     f"({', '.join(w.name for w in witnesses)})",
                     f"{best} on checkpoint #{target.id} or any later one",
                     f"checkpoint #{target.id} (tree size {target.tree_size}) is not cosigned: "
                     "the witnesses did not see, or refused, this history")
