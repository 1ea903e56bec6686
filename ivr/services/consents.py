"""Consent records: one immutable event per decision, and a person's current status."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..audit.chain import iso
from ..storage.models import Consent
from .kvkk.status import has_granted_channel

EXPORT_FIELDS = ["call_sid", "phone", "purpose", "channels", "decision", "digits", "language",
                 "notice_version", "flow_version", "captured_at", "agent_id"]


def record_decision(session: Session, values: dict) -> Consent:
    """Store the decision a caller made with a key press (or by staying silent); `values`
    are ivr/services/turns.py's consent_values."""
    record = Consent(**values)
    session.add(record)
    session.flush()
    return record


def audit_entry(record: Consent) -> tuple[str, str | None, dict]:
    """The audit entry for a consent event; the phone appears only as its keyed HMAC."""
    kind = "consent.withdrawn" if record.decision == "withdrawn" else "consent.decided"
    return (kind, record.call_sid, {
        "consent_id": record.id, "call_sid": record.call_sid, "run": record.run_id,
        "phone": record.phone_hmac, "purpose": record.purpose, "channels": record.channels,
        "decision": record.decision, "digits": record.digits, "language": record.language,
        "notice_version": record.notice_version, "flow_version": record.flow_version,
        "captured_at": iso(record.captured_at), "agent_id": record.agent_id,
        "transfer_id": record.transfer_id, "source": record.source, "audio": record.audio,
    })


def has_granted(session: Session, phone_hmac: str) -> bool:
    """True when this person's latest decision for at least one channel is a grant."""

    return has_granted_channel(session, phone_hmac)


def export_record(record: Consent, pii) -> dict:
    """A consent record with exactly the exported field names (plus a few extras at the end)."""
    return {
        "call_sid": record.call_sid, "phone": pii.decrypt(record.phone_enc),
        "purpose": record.purpose, "channels": list(record.channels or []),
        "decision": record.decision, "digits": record.digits, "language": record.language,
        "notice_version": record.notice_version, "flow_version": record.flow_version,
        "captured_at": record.captured_at.isoformat().replace("+00:00", "Z"),
        "agent_id": record.agent_id or "", "transfer_id": record.transfer_id or "",
        "source": record.source, "audio": record.audio or {},
    }
