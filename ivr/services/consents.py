"""Consent records: one immutable event per decision, and a person's current status."""

from __future__ import annotations

from ivr.storage.models import Consent

from .turns import CONSENT_VALUES, consent_entry

EXPORT_FIELDS = ["call_sid", "phone", "purpose", "channels", "decision", "digits", "language",
                 "notice_version", "flow_version", "captured_at", "agent_id"]


def audit_entry(record: Consent) -> tuple[str, str | None, dict]:
    """The audit entry for a stored consent event (turns.consent_entry's body)."""
    return consent_entry({c: getattr(record, c) for c in CONSENT_VALUES}, record.id)


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
