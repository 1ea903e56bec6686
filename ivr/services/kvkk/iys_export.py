"""İYS exports against the database: what is pending, batches written and recorded once."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from ivr.domain.kvkk import iys
from ivr.domain.pii import PersonalData
from ivr.domain.vocabulary import CHANNELS, DECISIVE
from ivr.storage import audit_store
from ivr.storage.kvkk_models import IysBatch, IysRecord
from ivr.storage.models import Consent

_PG_EXPORT_LOCK = 0x1FC0_1A5E
_CHUNK = 500


def _lock(session: Session) -> None:
    # One export at a time.
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_EXPORT_LOCK})


def _chunks(items: list, n: int = _CHUNK):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def pending(session: Session, pii: PersonalData, since: datetime | None = None) \
        -> list[iys.Candidate]:
    """Consent events × channels that have no İYS decision yet, oldest first."""
    # Only events with fewer decided records than there are channels: a full scan of
    # every consent ever taken would grow with the years, pending work does not.
    undecided = (select(Consent.id).outerjoin(IysRecord, IysRecord.consent_id == Consent.id)
                 .where(Consent.decision.in_(DECISIVE), Consent.phone_hmac.is_not(None),
                        Consent.phone_enc.is_not(None))
                 .group_by(Consent.id)
                 .having(func.count(IysRecord.id) < func.json_array_length(Consent.channels)))
    if since is not None:
        undecided = undecided.where(Consent.captured_at >= since)
    q = select(Consent).where(Consent.id.in_(undecided)).order_by(Consent.captured_at, Consent.id)
    rows = list(session.scalars(q))
    handled: set[tuple[int, str]] = set()
    for part in _chunks([r.id for r in rows]):
        handled.update(session.execute(select(IysRecord.consent_id, IysRecord.type)
                                       .where(IysRecord.consent_id.in_(part))).all())
    out = []
    for r in rows:
        types = [t for t in CHANNELS if t in (r.channels or ()) and (r.id, t) not in handled]
        if not types or r.phone_hmac is None:  # the query left these out: this tells mypy
            continue
        phone = pii.decrypt(r.phone_enc)
        for t in types:
            out.append(iys.Candidate(r.id, t, r.phone_hmac, phone, iys.STATUS[r.decision],
                                     iys.to_second(r.captured_at)))
    return out


def registered(session: Session, hmacs: set[str]) -> dict[tuple[str, str], iys.Registered]:
    """For these recipients, the last status sent to İYS per type."""
    out: dict[tuple[str, str], iys.Registered] = {}
    for part in _chunks(sorted(hmacs)):
        rows = session.scalars(select(IysRecord).where(IysRecord.outcome == "exported",
                                                       IysRecord.recipient_hmac.in_(part))
                               .order_by(IysRecord.consent_at, IysRecord.id))
        for r in rows:
            if r.recipient_hmac is not None:  # the query's IN left out None: this tells mypy
                out[(r.recipient_hmac, r.type)] = iys.Registered(r.status, r.consent_at,
                                                                 r.batch_id)
    return out


def preview(session: Session, pii: PersonalData, since: datetime | None = None) \
        -> list[iys.Decision]:
    """What an export would do now with every pending record."""
    cands = pending(session, pii, since)
    return iys.plan(cands, registered(session, {c.recipient_hmac for c in cands}))


@dataclass
class WrittenBatch:
    """A batch recorded in this export, with its file (renamed into place after commit)."""

    id: str
    body: bytes
    count: int
    path: Path | None = None
    tmp: Path | None = None


@dataclass
class ExportResult:
    """The batches and decisions of one export."""

    batches: list[WrittenBatch] = field(default_factory=list)
    decisions: list[iys.Decision] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        """How many decisions had this outcome."""
        return sum(1 for d in self.decisions if d.outcome == outcome)

    def finalize(self) -> None:
        """After commit: move the files into place."""
        for b in self.batches:
            if b.tmp is not None and b.path is not None:  # a batch with a file has both
                os.replace(b.tmp, b.path)
                b.tmp = None

    def discard(self) -> None:
        """After a failed commit: remove the unfinished files."""
        for b in self.batches:
            if b.tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    b.tmp.unlink()


def _write_tmp(out_dir: Path, batch_id: str, data: bytes) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path, tmp = out_dir / f"{batch_id}.json", out_dir / f".{batch_id}.json.tmp"
    # The files hold phone numbers: readable by this user only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path, tmp


def _batch_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export(session: Session, pii: PersonalData, *, now: datetime, since: datetime | None = None,
           out_dir: Path | None = None, size: int = iys.BATCH_MAX) -> ExportResult:
    """Decide every pending record and write the exportable ones as batches.

    Runs in the caller's transaction; call `finalize()` after commit, `discard()` if it
    fails. Every candidate gets exactly one row, so nothing is exported twice.
    """
    _lock(session)
    result = ExportResult(decisions=preview(session, pii, since))
    to_send = [d.candidate for d in result.decisions if d.outcome == "export"]
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    tag = secrets.token_hex(3)
    rows: list[dict] = []
    try:
        for n, group in enumerate(iys.batches(to_send, size), start=1):
            records = [c.record() for c in group]
            iys.validate_batch(records)
            data = iys.body(records)
            wb = WrittenBatch(id=f"iys-{stamp}-{tag}-{n:03d}", body=data, count=len(group))
            if out_dir is not None:
                wb.path, wb.tmp = _write_tmp(Path(out_dir), wb.id, data)
            result.batches.append(wb)
            session.add(IysBatch(id=wb.id, created_at=now, record_count=len(group),
                                 sha256=_batch_sha(data), file=str(wb.path) if wb.path else None,
                                 status="written"))
            session.flush()
            rows += [dict(consent_id=c.consent_id, type=c.type, recipient_hmac=c.recipient_hmac,
                          status=c.status, consent_at=c.consent_at,
                          consent_date=iys.consent_date(c.consent_at), outcome="exported",
                          reason=None, batch_id=wb.id, position=pos, decided_at=now)
                     for pos, c in enumerate(group)]
        for d in result.decisions:
            if d.outcome == "export":
                continue
            c = d.candidate
            rows.append(dict(consent_id=c.consent_id, type=c.type, recipient_hmac=c.recipient_hmac,
                             status=c.status, consent_at=c.consent_at,
                             consent_date=iys.consent_date(c.consent_at), outcome=d.outcome,
                             reason=d.reason, batch_id=None, position=None, decided_at=now))
        for part in _chunks(rows, 1000):
            session.execute(insert(IysRecord), part)
        session.flush()
        if result.decisions:
            audit_store.append(session, [("iys.export", None, {
                "batches": [{"id": b.id, "records": b.count, "sha256": _batch_sha(b.body)}
                            for b in result.batches],
                "exported": len(to_send), "skipped": result.count("skipped"),
                "superseded": result.count("superseded"),
                "skip_codes": sorted({d.code for d in result.decisions
                                      if d.outcome == "skipped" and d.code}),
            })], at=now)
    except BaseException:
        result.discard()
        raise
    return result


class BatchUnavailable(Exception):
    """A recorded batch cannot be rebuilt byte for byte (its data changed or was erased)."""


def rebuild(session: Session, pii: PersonalData, batch: IysBatch) -> bytes:
    """The exact bytes of a recorded batch, rebuilt from its records."""
    rows = session.execute(
        select(IysRecord, Consent.phone_enc).join(Consent, Consent.id == IysRecord.consent_id)
        .where(IysRecord.batch_id == batch.id).order_by(IysRecord.position)).all()
    records = []
    for rec, phone_enc in rows:
        if phone_enc is None:
            raise BatchUnavailable(f"batch {batch.id}: a recipient's data was erased since")
        records.append({"recipient": pii.decrypt(phone_enc), "type": rec.type,
                        "source": iys.SOURCE, "status": rec.status,
                        "consentDate": rec.consent_date, "recipientType": iys.RECIPIENT_TYPE})
    data = iys.body(records) if records else b""
    if _batch_sha(data) != batch.sha256:
        raise BatchUnavailable(f"batch {batch.id}: its records changed since it was written "
                               f"({len(records)} of {batch.record_count} left)")
    return data
