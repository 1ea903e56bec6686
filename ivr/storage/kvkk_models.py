"""Tables of the consent lifecycle: İYS exports, subject requests and the destruction log."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ivr.domain.times import utcnow

from .base import Base


class IysBatch(Base):
    """One İYS batch (at most 1000 records): its file, its payload hash and push state."""

    __tablename__ = "iys_batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    record_count: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    file: Mapped[str | None] = mapped_column(String(500))
    # written (file only) → accepted | rejected | push_failed (retried by `iys push`)
    status: Mapped[str] = mapped_column(String(16), default="written")
    transaction_id: Mapped[str | None] = mapped_column(String(100))
    pushed_at: Mapped[datetime | None]


class IysRecord(Base):
    """What became of one consent event for one channel: exported, skipped or superseded.

    One row per (consent, type), so nothing is exported twice; a record with no row is
    pending. A record İYS refused without an error of its own loses its row and is pending
    again (the batch keeps its payload hash, and the push answers are kept).
    """

    __tablename__ = "iys_records"
    __table_args__ = (UniqueConstraint("consent_id", "type"),
                      Index("ix_iys_records_recipient", "recipient_hmac", "type"))

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    consent_id: Mapped[int] = mapped_column(ForeignKey("consents.id"))
    type: Mapped[str] = mapped_column(String(8))
    recipient_hmac: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(4))
    consent_at: Mapped[datetime]
    consent_date: Mapped[str] = mapped_column(String(19))
    outcome: Mapped[str] = mapped_column(String(16))  # exported|skipped|superseded|rejected
    reason: Mapped[str | None] = mapped_column(Text)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("iys_batches.id"), index=True)
    position: Mapped[int | None]
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)


class IysPushAnswer(Base):
    """One answer of the İYS endpoint to one push of a batch, as received."""

    __tablename__ = "iys_push_answers"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("iys_batches.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    url: Mapped[str] = mapped_column(String(500))
    http_status: Mapped[int | None]
    outcome: Mapped[str] = mapped_column(String(16))  # accepted | rejected | failed
    transaction_id: Mapped[str | None] = mapped_column(String(100))
    errors: Mapped[list] = mapped_column(default=list)


class SubjectRequest(Base):
    """A data subject's request under KVKK Article 11, answered within 30 days (Art. 13)."""

    __tablename__ = "subject_requests"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    phone_hmac: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_enc: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    received_on: Mapped[date]
    due_on: Mapped[date]
    status: Mapped[str] = mapped_column(String(8), default="open")  # open | closed
    note_enc: Mapped[str | None] = mapped_column(Text)
    outcome_enc: Mapped[str | None] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]


class DestructionLog(Base):
    """One act of deletion, destruction or anonymisation. Holds no personal data, and
    is kept at least three years (deletion regulation, 2017)."""

    __tablename__ = "destruction_log"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    category: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))  # deleted | anonymised
    table_name: Mapped[str] = mapped_column(String(64))
    row_ref: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(200))
