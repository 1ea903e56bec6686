"""İYS records from consent events, and İYS's rules applied before anything is sent.

Pure functions: no database and no network. A consent event becomes one record per
channel (ARAMA, MESAJ, EPOSTA). For each recipient and type only the latest pending
decision is sent, and only when İYS would take it:

- a first record can never be RET (H175): a decline by someone never registered with
  ONAY is not exported;
- the same status is not sent again (H174 for RET; an unchanged ONAY says nothing new);
- a consentDate is never older than the last one sent (H178);
- a batch holds at most 1000 records, and a recipient has one status in a batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TypedDict

import jsonschema

from .businessdays import ISTANBUL

SOURCE = "HS_CAGRI_MERKEZI"
RECIPIENT_TYPE = "BIREYSEL"
BATCH_MAX = 1000
FIELDS = ("recipient", "type", "source", "status", "consentDate", "recipientType")
STATUS = {"granted": "ONAY", "declined": "RET", "withdrawn": "RET"}
EARLIEST = datetime(2015, 5, 1, tzinfo=ISTANBUL)
E164 = re.compile(r"^\+[1-9][0-9]{6,13}$")
SCHEMA_PATH = Path(__file__).with_name("iys_schema.json")


@cache
def schema() -> dict[str, object]:
    """The JSON Schema of one İYS batch."""
    doc: dict[str, object] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return doc


class Record(TypedDict):
    """One record of an İYS batch: exactly İYS's fields (FIELDS)."""

    recipient: str | None
    type: str
    source: str
    status: str
    consentDate: str
    recipientType: str


class InvalidBatch(Exception):
    """A batch that breaks the İYS schema: a bug here, never sent."""


def validate_batch(records: Sequence[Mapping[str, object]]) -> None:
    """Raise InvalidBatch unless `records` is a valid İYS batch."""
    validator = jsonschema.Draft202012Validator(schema())
    err = next(iter(sorted(validator.iter_errors(records), key=lambda e: list(e.path))), None)
    if err is not None:
        where = "/".join(str(p) for p in err.path) or "(batch)"
        raise InvalidBatch(f"{where}: {err.message}")


def consent_date(moment: datetime) -> str:
    """İYS's consentDate: Turkey local time, to the second."""
    return moment.astimezone(ISTANBUL).strftime("%Y-%m-%d %H:%M:%S")


def to_second(moment: datetime) -> datetime:
    """A UTC moment without its fraction of a second (İYS's resolution)."""
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Candidate:
    """One consent event for one channel, not yet decided for İYS."""

    consent_id: int
    type: str
    recipient_hmac: str
    recipient: str | None
    status: str
    consent_at: datetime

    @property
    def key(self) -> tuple[str, str]:
        """Recipient and type: what İYS keeps one status for."""
        return (self.recipient_hmac, self.type)

    def record(self) -> Record:
        """The İYS record, with exactly İYS's fields."""
        return {"recipient": self.recipient, "type": self.type, "source": SOURCE,
                "status": self.status, "consentDate": consent_date(self.consent_at),
                "recipientType": RECIPIENT_TYPE}


@dataclass(frozen=True)
class Registered:
    """The last status we sent İYS for a recipient and type."""

    status: str
    consent_at: datetime
    batch_id: str | None = None


@dataclass(frozen=True)
class Decision:
    """What to do with one candidate: export, skip (with the reason) or supersede."""

    candidate: Candidate
    outcome: str  # export | skipped | superseded
    reason: str | None = None
    code: str | None = None
    # The reason's values, for a translated page.
    params: dict[str, str | int | None] = field(default_factory=dict)


def _check(c: Candidate, last: Registered | None) -> Decision:
    if not c.recipient or not E164.match(c.recipient):
        return Decision(c, "skipped", "the recipient is not an E.164 phone number", "RECIPIENT")
    if c.consent_at < EARLIEST:
        return Decision(c, "skipped", "İYS takes no consentDate before 2015-05-01", "DATE")
    if last is None and c.status == "RET":
        return Decision(c, "skipped", "a first İYS record for a recipient and type cannot be "
                        "RET (H175): never registered with ONAY, so nothing to withdraw in İYS",
                        "H175")
    if last is not None and c.consent_at < last.consent_at:
        return Decision(c, "skipped", f"older than the consentDate last sent for this "
                        f"recipient and type ({consent_date(last.consent_at)}; H178)", "H178",
                        {"date": consent_date(last.consent_at)})
    if last is not None and c.status == last.status:
        if c.status == "RET":
            return Decision(c, "skipped", f"İYS already holds RET for this recipient and type "
                            f"(batch {last.batch_id}); a repeated RET is refused (H174)", "H174",
                            {"batch": last.batch_id})
        return Decision(c, "skipped", f"İYS already holds ONAY for this recipient and type "
                        f"(batch {last.batch_id}); nothing new to register", "UNCHANGED",
                        {"batch": last.batch_id})
    return Decision(c, "export")


def plan(candidates: list[Candidate],
         registered: dict[tuple[str, str], Registered]) -> list[Decision]:
    """Decide every candidate, in order of consent time (the input need not be sorted)."""
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: (c.consent_at, c.consent_id)):
        groups.setdefault(c.key, []).append(c)
    out: list[Decision] = []
    for key, items in groups.items():
        latest = items[-1]
        for c in items[:-1]:
            out.append(Decision(c, "superseded", f"a later decision (consent {latest.consent_id})"
                                " for this recipient and type is what İYS needs", "SUPERSEDED",
                                {"consent": latest.consent_id}))
        out.append(_check(latest, registered.get(key)))
    return sorted(out, key=lambda d: (d.candidate.consent_at, d.candidate.consent_id,
                                      d.candidate.type))


def batches(records: list[Candidate], size: int = BATCH_MAX) -> list[list[Candidate]]:
    """Split into batches of at most `size`, never with two statuses for one recipient.

    A record goes to the first batch with room where its recipient has no other status,
    so the order of consent times is kept as far as the rules allow.
    """
    if not 1 <= size <= BATCH_MAX:
        raise ValueError(f"batch size must be 1 to {BATCH_MAX}")
    out: list[list[Candidate]] = []
    statuses: list[dict[str, str]] = []
    first_open = 0
    for c in records:
        while first_open < len(out) and len(out[first_open]) >= size:
            first_open += 1
        for i in range(first_open, len(out) + 1):
            if i == len(out):
                out.append([])
                statuses.append({})
            if len(out[i]) < size and statuses[i].get(c.recipient_hmac, c.status) == c.status:
                out[i].append(c)
                statuses[i][c.recipient_hmac] = c.status
                break
    return out


def body(records: Sequence[Mapping[str, object]]) -> bytes:
    """The bytes of a batch: the file's content and the pushed request body."""
    return (json.dumps(records, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
