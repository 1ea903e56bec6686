"""Twilio's webhook forms, parsed once, at the edge, into typed values with explicit ranges.

A signed request is Twilio's, but its fields are still text: a number may not fit a
PostgreSQL integer column, a date may not fit Python's datetime once turned to UTC. Every
field a service uses is checked here against the range below; a value outside it is
treated as absent, with a warning that names the field, the reason and the call SID (never
the value, which could be anything, a phone number even). The services, and the outage
spool, only ever see what this module accepted. A CallSid that is missing, over 64
characters or holds control characters is refused (BadWebhook, a 400): Twilio's are 34.

The ranges (both ends included):

- SequenceNumber, CallDuration, RecordingDuration: 0 to 2^31 - 1 (a PostgreSQL integer);
- RecordingChannels: 1 to 2 (Twilio's documented values);
- gather step (the URL's `step`): 0 to 2^31 - 1;
- Timestamp, RecordingStartTime: RFC 2822 with a zone and a four-digit year, from
  1970-01-01T00:00:00Z up to (not including) 2100-01-01T00:00:00Z;
- text fields are clipped to their column's width; Digits to 32 keys.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from .redact import safe_sid

log = logging.getLogger("ivr.voice.twilio_form")  # the name logs have always carried

INT32_MAX = 2**31 - 1
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)  # excluded
SID_MAX = 64
MAX_DIGITS = 32
RANGES = {
    "SequenceNumber": (0, INT32_MAX),
    "CallDuration": (0, INT32_MAX),
    "RecordingDuration": (0, INT32_MAX),
    "RecordingChannels": (1, 2),
    "step": (0, INT32_MAX),
}
_NUMBER_TEXT = 24  # longer text is out of range before it is read as a number


# A webhook's form or query as Flask gives it (a MultiDict), or as the spool kept it.
Form = Mapping[str, str]


class BadWebhook(ValueError):
    """The form cannot be a Twilio request: its CallSid is missing or malformed."""


def _printable(value: str) -> bool:
    return value.isprintable()


def call_sid(form: Form) -> str:
    """The form's CallSid, checked; raises BadWebhook."""
    sid = (form.get("CallSid") or "").strip()
    if not sid:
        raise BadWebhook("Bad request: the CallSid parameter is required.")
    if len(sid) > SID_MAX:
        raise BadWebhook(f"Bad request: CallSid is longer than {SID_MAX} characters.")
    if not _printable(sid):
        raise BadWebhook("Bad request: CallSid holds control characters.")
    return sid


def _warn(sid: str, name: str, why: str) -> None:
    log.warning("webhook field %s ignored (%s) call_sid=%s", name, why, safe_sid(sid))


def text(form: Form, name: str, width: int) -> str | None:
    """A text field clipped to `width` characters; None when empty."""
    value = form.get(name)
    if not value:
        return None
    value = value.replace("\x00", "")
    return value[:width] or None


def integer(form: Mapping[str, object], name: str, sid: str) -> int | None:
    """An integer field within RANGES[name]; None (and a warning) when outside it. The
    value may be text or, from a spool record, a number."""
    value = form.get(name)
    if value is None or not str(value).strip():
        return None
    raw = str(value).strip()
    low, high = RANGES[name]
    if len(raw) > _NUMBER_TEXT:
        _warn(sid, name, "too many digits")
        return None
    try:
        number = int(raw)
    except ValueError:
        _warn(sid, name, "not an integer")
        return None
    if not low <= number <= high:
        _warn(sid, name, "out of range")
        return None
    return number


def timestamp(form: Form, name: str, sid: str) -> tuple[datetime | None, str | None]:
    """An RFC 2822 time with a zone, within EARLIEST..LATEST, as (UTC datetime, the text
    as given); (None, None) with a warning when it is garbage or outside the range."""
    value = (form.get(name) or "").strip()
    if not value:
        return None, None
    if len(value) > 64:
        _warn(sid, name, "too long for a date")
        return None, None
    try:
        parsed = parsedate_to_datetime(value)
        if parsed is None or parsed.tzinfo is None:
            raise ValueError("no time zone")
        if not re.search(rf"(?<!\d){parsed.year:04d}(?!\d)", value):
            # email.utils reads a year under 100 as 19xx/20xx: "0001" would become 2001.
            raise ValueError("the year is not written with four digits")
        when = parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        _warn(sid, name, "not an RFC 2822 date with a zone")
        return None, None
    if not EARLIEST <= when < LATEST:
        _warn(sid, name, "out of range")
        return None, None
    return when, value


@dataclass(frozen=True)
class CallFields:
    """What every voice webhook says about the call."""

    call_sid: str
    account_sid: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    direction: str | None = None
    call_status: str | None = None

    def form(self) -> dict[str, str]:
        """These fields under Twilio's names (what the spool keeps)."""
        return _present({"CallSid": self.call_sid, "AccountSid": self.account_sid,
                         "From": self.from_number, "To": self.to_number,
                         "Direction": self.direction, "CallStatus": self.call_status})


@dataclass(frozen=True)
class GatherInput:
    """The caller's keys for one gather; `digits` None is silence (the timeout)."""

    call: CallFields
    digits: str | None = None

    def form(self) -> dict[str, str]:
        """The accepted fields under Twilio's names."""
        return {**self.call.form(), **_present({"Digits": self.digits})}


@dataclass(frozen=True)
class GatherTarget:
    """Where a gather result goes, from the action URL we gave Twilio."""

    run: str
    step: int | None
    token: str | None


@dataclass(frozen=True)
class StatusCallback:
    """A call status callback."""

    call: CallFields
    sequence_number: int | None = None
    timestamp: datetime | None = None
    timestamp_text: str | None = None
    call_duration: int | None = None
    callback_source: str | None = None

    def form(self) -> dict[str, str]:
        """The accepted fields under Twilio's names."""
        return {**self.call.form(), **_present({
            "SequenceNumber": self.sequence_number, "Timestamp": self.timestamp_text,
            "CallDuration": self.call_duration, "CallbackSource": self.callback_source})}

    def evidence(self) -> dict[str, str]:
        """The fields a status event keeps as its evidence, under Twilio's names."""
        return {k: v for k, v in self.form().items()
                if k in ("CallStatus", "SequenceNumber", "Timestamp", "CallDuration",
                         "CallbackSource", "Direction")}


@dataclass(frozen=True)
class RecordingCallback:
    """A recording status callback (metadata only)."""

    call: CallFields
    recording_sid: str | None = None
    status: str | None = None
    duration: int | None = None
    channels: int | None = None
    source: str | None = None
    track: str | None = None
    start_time: datetime | None = None
    start_time_text: str | None = None
    url: str | None = None
    error_code: str | None = None

    def form(self) -> dict[str, str]:
        """The accepted fields under Twilio's names."""
        return {**self.call.form(), **_present({
            "RecordingSid": self.recording_sid, "RecordingStatus": self.status,
            "RecordingDuration": self.duration, "RecordingChannels": self.channels,
            "RecordingSource": self.source, "RecordingTrack": self.track,
            "RecordingStartTime": self.start_time_text, "RecordingUrl": self.url,
            "ErrorCode": self.error_code})}

    def evidence(self) -> dict[str, str]:
        """The fields a recording event keeps as its evidence, under Twilio's names."""
        return {k: v for k, v in self.form().items()
                if k.startswith("Recording") or k == "ErrorCode"}


def _present(fields: Mapping[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in fields.items() if v is not None}


def call_fields(form: Form) -> CallFields:
    """The call's fields of any voice webhook; raises BadWebhook for a bad CallSid."""
    return CallFields(call_sid=call_sid(form), account_sid=text(form, "AccountSid", 64),
                      from_number=text(form, "From", 256), to_number=text(form, "To", 256),
                      direction=text(form, "Direction", 32),
                      call_status=text(form, "CallStatus", 32))


def gather_input(form: Form) -> GatherInput:
    """A gather result's form."""
    return GatherInput(call=call_fields(form), digits=text(form, "Digits", MAX_DIGITS))


def gather_target(args: Form, sid: str) -> GatherTarget:
    """The run, step and state token of a gather action URL's query."""
    return GatherTarget(run=(args.get("run") or "")[:32], step=integer(args, "step", sid),
                        token=(args.get("s") or "")[:4000] or None)


def status_callback(form: Form) -> StatusCallback:
    """A status callback's form."""
    call = call_fields(form)
    sid = call.call_sid
    when, when_text = timestamp(form, "Timestamp", sid)
    return StatusCallback(call=call, sequence_number=integer(form, "SequenceNumber", sid),
                          timestamp=when, timestamp_text=when_text,
                          call_duration=integer(form, "CallDuration", sid),
                          callback_source=text(form, "CallbackSource", 64))


def recording_callback(form: Form) -> RecordingCallback:
    """A recording status callback's form."""
    call = call_fields(form)
    sid = call.call_sid
    start, start_text = timestamp(form, "RecordingStartTime", sid)
    return RecordingCallback(
        call=call, recording_sid=text(form, "RecordingSid", 64),
        status=text(form, "RecordingStatus", 32),
        duration=integer(form, "RecordingDuration", sid),
        channels=integer(form, "RecordingChannels", sid),
        source=text(form, "RecordingSource", 64), track=text(form, "RecordingTrack", 32),
        start_time=start, start_time_text=start_text, url=text(form, "RecordingUrl", 500),
        error_code=text(form, "ErrorCode", 32))


Parsed = CallFields | GatherInput | StatusCallback | RecordingCallback

PARSERS: dict[str, Callable[[Form], Parsed]] = {
    "incoming": call_fields, "gather": gather_input, "status": status_callback,
    "recording": recording_callback}
