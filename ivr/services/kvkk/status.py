"""A person's consent status per channel: the latest decisive event for that channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.vocabulary import CHANNELS, DECISIVE
from ivr.storage.models import Consent


@dataclass(frozen=True)
class ChannelStatus:
    """The status of one channel and the event that set it."""

    channel: str
    status: str  # granted | declined | withdrawn | none
    since: datetime | None
    source: str | None
    consent_id: int | None


def history(session: Session, phone_hmac: str) -> list[Consent]:
    """Every consent event of a person, oldest first."""
    return list(session.scalars(
        select(Consent).where(Consent.phone_hmac == phone_hmac)
        .order_by(Consent.captured_at, Consent.id)))


def status_from(events: list[Consent]) -> dict[str, ChannelStatus]:
    """Per channel, the latest decisive event among `events` (oldest first)."""
    out = {c: ChannelStatus(c, "none", None, None, None) for c in CHANNELS}
    for ev in events:
        if ev.decision not in DECISIVE:
            continue
        for c in ev.channels or ():
            if c in out:
                out[c] = ChannelStatus(c, ev.decision, ev.captured_at, ev.source, ev.id)
    return out


def current_status(session: Session, phone_hmac: str) -> dict[str, ChannelStatus]:
    """A person's current status for every channel."""
    return status_from(history(session, phone_hmac))
