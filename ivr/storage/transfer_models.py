"""The transfer record: an agent sending a live call into the consent flow and back."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ivr.domain.vocabulary import TransferStatus

from .base import Base

STATUSES = tuple(s.value for s in TransferStatus)


class Transfer(Base):
    """One transfer, from the agent's request to the caller's return (or its failure)."""

    __tablename__ = "transfers"
    # An Idempotency-Key is the agent's own: two agents may happen to pick the same one.
    __table_args__ = (UniqueConstraint("agent_id", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    agent_id: Mapped[str] = mapped_column(String(100))
    agent_name: Mapped[str] = mapped_column(String(100))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    return_to: Mapped[dict]
    language: Mapped[str | None] = mapped_column(String(8))
    flow_id: Mapped[str] = mapped_column(String(100))
    force: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str | None] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(32))
    consent_id: Mapped[int | None]
    # Why it failed: a short reason word, Twilio's error code, the HTTP status we answered.
    failure_reason: Mapped[str | None] = mapped_column(String(32))
    failure_message: Mapped[str | None] = mapped_column(Text)
    twilio_code: Mapped[int | None]
    failure_status: Mapped[int | None]
    requested_at: Mapped[datetime]
    redirected_at: Mapped[datetime | None]
    in_flow_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    returned_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
