"""A simulated Twilio: places a call against the webhooks, signs every request exactly as
Twilio does, follows the TwiML and reports what the caller hears.

Used by `python -m ivr simulate` and by the tests.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests
from twilio.request_validator import RequestValidator

from ivr.domain.times import utcnow


class SimulationError(Exception):
    """The server answered something Twilio could not use."""


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    content_type: str
    body: str


Transport = Callable[[str, dict, dict], Reply]


def http_transport(timeout: float = 15.0) -> Transport:
    """POST over real HTTP, with Twilio's 15-second ceiling."""

    def post(url: str, data: dict, headers: dict) -> Reply:
        r = requests.post(url, data=data, headers=headers, timeout=timeout,
                          allow_redirects=False)
        return Reply(r.status_code, r.headers.get("Content-Type", ""), r.text)

    return post


def flask_transport(client) -> Transport:
    """POST into a Flask test client (the app in-process)."""

    def post(url: str, data: dict, headers: dict) -> Reply:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        r = client.post(path, data=data, headers=headers)
        return Reply(r.status_code, r.content_type or "", r.get_data(as_text=True))

    return post


@dataclass
class Heard:
    """One thing the caller heard: a <Say> text or a <Play> file (with its text if known)."""

    verb: str
    text: str
    url: str | None = None
    in_gather: bool = False


@dataclass
class Turn:
    """One TwiML document received."""

    url: str
    twiml: str
    heard: list[Heard] = field(default_factory=list)
    gather_action: str | None = None
    gather_timeout: int | None = None
    end: str | None = None  # hangup, enqueue:NAME, dial:TO, or None if the call just ends
    recording_started: bool = False
    recording_after: int = 0  # how many of `heard` were played before <Start><Recording>
    recording_callback: str | None = None  # recordingStatusCallback of <Start><Recording>
    recording_events: tuple[str, ...] = ("completed",)  # Twilio's default


# How long the simulated caller takes, where no audio file tells us: a <Say> is read at
# about 2.5 words a second, a <Play> whose file is unknown counts as 4 seconds, and a key
# is pressed 1 second after the prompts end.
SAY_WORDS_PER_SECOND = 2.5
UNKNOWN_PLAY_SECONDS = 4.0
KEY_SECONDS = 1.0


@dataclass
class Recording:
    """A recording Twilio started on the call, as `<Start><Recording>` asked."""

    sid: str
    callback: str
    events: tuple[str, ...]
    started: float  # seconds into the call


class Caller:
    """One simulated phone call, signed like Twilio with the account's auth token."""

    def __init__(self, base_url: str, auth_token: str, transport: Transport, *,
                 from_number: str = "+905321234567", to_number: str = "+902122223344",
                 call_sid: str | None = None, account_sid: str = "AC" + "0" * 32,
                 audio_texts: dict[str, str] | None = None,
                 audio_seconds: dict[str, float] | None = None,
                 recording_callbacks: bool = False):
        """`audio_seconds` (file name → length) times what is heard; with
        `recording_callbacks` the caller sends Twilio's recording status callbacks (off by
        default, so a test can send its own)."""
        self.base_url = base_url.rstrip("/")
        self.validator = RequestValidator(auth_token)
        self.transport = transport
        self.from_number, self.to_number = from_number, to_number
        self.call_sid = call_sid or "CA" + secrets.token_hex(16)
        self.account_sid = account_sid
        self.audio_texts = audio_texts or {}
        self.audio_seconds = audio_seconds or {}
        self.recording_callbacks = recording_callbacks
        self.turns: list[Turn] = []
        self.recordings: list[Recording] = []
        self._seq = itertools.count()
        # The call's own clock: the simulation does not wait, but every time it reports is
        # the time a real call would have reached, counted from when it was placed.
        self.started_at: datetime = utcnow()
        self.elapsed = 0.0
        self.duration: int | None = None

    # --- requests ---------------------------------------------------------------

    def params(self, **extra) -> dict:
        """The parameters Twilio sends with every voice request."""
        base = {"CallSid": self.call_sid, "AccountSid": self.account_sid,
                "From": self.from_number, "To": self.to_number, "CallStatus": "in-progress",
                "ApiVersion": "2010-04-01", "Direction": "inbound"}
        base.update({k: v for k, v in extra.items() if v is not None})
        return base

    def signed_post(self, url: str, data: dict, token: str | None = None) -> Reply:
        """POST as Twilio does: form-encoded, X-Twilio-Signature, an idempotency token."""
        headers = {"X-Twilio-Signature": self.validator.compute_signature(url, data),
                   "I-Twilio-Idempotency-Token": token or secrets.token_hex(16),
                   "User-Agent": "TwilioProxy/1.1"}
        return self.transport(url, data, headers)

    def url(self, path: str) -> str:
        """An absolute URL on the server."""
        return self.base_url + path

    def now(self) -> datetime:
        """The time on the call's clock."""
        return self.started_at + timedelta(seconds=self.elapsed)

    def seconds(self, heard: Heard) -> float:
        """How long one prompt lasts: its audio file's length when known."""
        if heard.verb == "play":
            name = (heard.url or "").rsplit("/", 1)[-1]
            return self.audio_seconds.get(name, UNKNOWN_PLAY_SECONDS)
        return max(1.0, len(heard.text.split()) / SAY_WORDS_PER_SECOND)

    def _twiml(self, url: str, data: dict) -> Turn:
        reply = self.signed_post(url, data)
        if reply.status != 200 or "xml" not in reply.content_type:
            raise SimulationError(f"{url} answered {reply.status} {reply.content_type}: "
                                  f"{reply.body[:200]}")
        turn = parse_twiml(url, reply.body, self.audio_texts)
        self.turns.append(turn)
        self._listen(turn)
        return turn

    def _listen(self, turn: Turn) -> None:
        """Move the clock through the turn's prompts; start the recording where asked."""
        for i, heard in enumerate(turn.heard):
            if turn.recording_started and i == turn.recording_after:
                self._start_recording(turn)
            self.elapsed += self.seconds(heard)
        if turn.recording_started and turn.recording_after == len(turn.heard):
            self._start_recording(turn)

    def _start_recording(self, turn: Turn) -> None:
        if not turn.recording_callback or self.recordings:
            return  # a callback URL is needed to be told anything; one recording per call
        rec = Recording("RE" + secrets.token_hex(16), turn.recording_callback,
                        turn.recording_events, self.elapsed)
        self.recordings.append(rec)
        if self.recording_callbacks and "in-progress" in rec.events:
            self.recording_status(rec, "in-progress")

    def recording_status(self, rec: Recording, status: str) -> Reply:
        """A recording status callback, with the parameters Twilio sends."""
        duration = max(0, math.floor(self.elapsed - rec.started))
        data = {"AccountSid": self.account_sid, "CallSid": self.call_sid,
                "RecordingSid": rec.sid, "RecordingStatus": status,
                "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/"
                                f"{self.account_sid}/Recordings/{rec.sid}",
                "RecordingChannels": "2", "RecordingSource": "StartCallRecordingTwiML",
                "RecordingTrack": "both",
                "RecordingStartTime": format_datetime(
                    self.started_at + timedelta(seconds=rec.started), usegmt=True)}
        if status in ("completed", "absent"):
            data["RecordingDuration"] = str(duration)
        if status == "absent":
            data["ErrorCode"] = "16101"
        return self.signed_post(rec.callback, data)

    # --- the call ---------------------------------------------------------------

    def dial(self, path: str = "/voice/incoming", **extra) -> Turn:
        """The call comes in."""
        return self._twiml(self.url(path), self.params(CallStatus="ringing", **extra))

    def fetch(self, url: str) -> Turn:
        """Fetch TwiML for the live call from `url`, as Twilio does after a redirect."""
        return self._twiml(url, self.params())

    def press(self, turn: Turn, digits: str) -> Turn:
        """Press keys at the gather of `turn` ('' is silence until the timeout)."""
        if not turn.gather_action:
            raise SimulationError("no <Gather> is waiting for keys")
        self.elapsed += KEY_SECONDS * len(digits) if digits else (turn.gather_timeout or 5)
        return self._twiml(turn.gather_action, self.params(Digits=digits))

    def status(self, status: str, *, sequence: int | None = None, duration: int | None = None,
               token: str | None = None) -> Reply:
        """A call status callback, numbered as Twilio numbers them."""
        seq = next(self._seq) if sequence is None else sequence
        data = self.params(CallStatus=status, SequenceNumber=str(seq),
                           Timestamp=format_datetime(self.now(), usegmt=True),
                           CallbackSource="call-progress-events",
                           CallDuration=None if duration is None else str(duration))
        return self.signed_post(self.url("/voice/status"), data, token)

    def hang_up(self, duration: int | None = None) -> Reply:
        """The caller hangs up: Twilio sends the completed status, with the seconds the call
        lasted on its clock (whole seconds, rounded up, as Twilio bills), then the
        recording's final callback."""
        self.duration = math.ceil(self.elapsed) if duration is None else duration
        # Timestamps are whole seconds (RFC 2822): the end is the call's last second.
        self.elapsed = max(self.elapsed, float(self.duration))
        reply = self.status("completed", duration=self.duration)
        for rec in self.recordings:
            final = "completed" if self.elapsed - rec.started >= 1 else "absent"
            if self.recording_callbacks and final in rec.events:
                self.recording_status(rec, final)
        return reply

    def run(self, keys: Iterator[str] | list[str], *, on_turn=None) -> Turn:
        """Follow the call to its end: each key is a digit, '' or 't' for silence, 'h' to
        hang up. Returns the last TwiML turn."""
        keys = iter(keys)
        turn = self.dial()
        while True:
            if on_turn:
                on_turn(turn)
            if not turn.gather_action:
                self.hang_up()
                return turn
            key = next(keys, None)
            if key is None or key == "h":
                self.hang_up()
                return turn
            turn = self.press(turn, "" if key == "t" else key)


def parse_twiml(url: str, body: str, audio_texts: dict[str, str] | None = None) -> Turn:  # noqa: C901 - one branch per TwiML verb the simulator follows
    """What a caller hears and what comes next, from a TwiML document."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - TwiML from the server under test
    except ET.ParseError as e:
        raise SimulationError(f"{url} answered invalid XML: {e}") from None
    if root.tag != "Response":
        raise SimulationError(f"{url} answered <{root.tag}>, not <Response>")
    turn = Turn(url=url, twiml=body)
    texts = audio_texts or {}

    def hear(el, in_gather: bool):
        if el.tag == "Say":
            turn.heard.append(Heard("say", el.text or "", None, in_gather))
        elif el.tag == "Play":
            u = (el.text or "").strip()
            turn.heard.append(Heard("play", texts.get(u.rsplit("/", 1)[-1], u), u, in_gather))

    for el in root:
        if el.tag in ("Say", "Play"):
            hear(el, False)
        elif el.tag == "Start" and (rec := el.find("Recording")) is not None:
            turn.recording_started = True
            turn.recording_after = len(turn.heard)
            turn.recording_callback = rec.get("recordingStatusCallback")
            events = (rec.get("recordingStatusCallbackEvent") or "completed").split()
            turn.recording_events = tuple(events)
        elif el.tag == "Gather":
            for child in el:
                hear(child, True)
            turn.gather_action = el.get("action") or url
            turn.gather_timeout = int(el.get("timeout", "5"))
            break  # after a Gather with actionOnEmptyResult, Twilio goes to the action
        elif el.tag == "Hangup":
            turn.end = "hangup"
            break
        elif el.tag == "Enqueue":
            turn.end = f"enqueue:{(el.text or '').strip()}"
            break
        elif el.tag == "Dial":
            target = "".join((c.text or "").strip() for c in el) or (el.text or "").strip()
            turn.end = f"dial:{target}"
            break
        elif el.tag == "Redirect":
            turn.gather_action = None
            turn.end = f"redirect:{(el.text or '').strip()}"
            break
    return turn


def _manifest_entries(audio_dir: str | Path) -> list[dict]:
    path = Path(audio_dir) / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    entries = data.get("prompts", data) if isinstance(data, dict) else data
    items = entries if isinstance(entries, list) else entries.values()
    return [item for item in items if isinstance(item, dict) and item.get("file")]


def _names(item: dict) -> list[str]:
    # A prompt is served under its file name; also under its SHA-256, if that is the name.
    names = [item["file"]]
    if item.get("sha256"):
        names.append(f"{item['sha256']}.wav")
    return names


def manifest_texts(audio_dir: str | Path) -> dict[str, str]:
    """File name → prompt text, from an audio manifest if there is one."""
    return {name: item.get("text", item["file"])
            for item in _manifest_entries(audio_dir) for name in _names(item)}


def manifest_seconds(audio_dir: str | Path) -> dict[str, float]:
    """File name → length in seconds, from an audio manifest if there is one."""
    return {name: item["duration_ms"] / 1000
            for item in _manifest_entries(audio_dir) if item.get("duration_ms")
            for name in _names(item)}
