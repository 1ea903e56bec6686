"""Where callers hang up during the privacy notice, from the stored runs and turns.

The daily aggregates count these per day (ivr/services/daily_aggregates.py); the list of
one number's calls reads them here, a page at a time.

A turn's prompts are played one after another from the moment its TwiML was served
(`flow_turns.created_at`). A run that hung up without a decision ended at the call's end
time (Twilio's timestamp, else when we heard of the hang-up); the prompt playing at that
offset into its last turn is where the caller left. Prompt lengths come from the audio
manifest (by the SHA-256 the run recorded for each prompt); a prompt spoken by <Say> is
timed at SAY_WORDS_PER_SECOND, as the call simulator times it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Text, and_, cast, exists, func, select, tuple_
from sqlalchemy.orm import Session, aliased

from ivr.adapters.audio.errors import AudioError
from ivr.adapters.audio.manifest import MANIFEST, read_manifest
from ivr.storage.models import Call, Consent, FlowRun, Turn

SAY_WORDS_PER_SECOND = 2.5
UNKNOWN_PLAY_SECONDS = 4.0
BEFORE = "before"  # hung up before the notice began (greeting, language offer)
AFTER = "after"  # hung up after the whole notice (at the consent question or later)


@dataclass
class LanguageDropoff:
    """One language: its runs in the period, and the hang-ups per phase of the notice."""

    language: str
    runs: int
    hangups: dict[str, int] = field(default_factory=dict)

    def count(self, phase: str) -> int:
        """Hang-ups during this phase."""
        return self.hangups.get(phase, 0)

    def share(self, phase: str) -> float:
        """Hang-ups during this phase as a share of the language's runs."""
        return self.count(phase) / self.runs if self.runs else 0.0


@dataclass
class Dropoff:
    """The notice drop-off of a period: the notice parts in order, and each language."""

    parts: list[str]
    languages: list[LanguageDropoff]

    @property
    def phases(self) -> list[str]:
        """Before the notice, each notice part, after the notice."""
        return [BEFORE, *self.parts, AFTER]


def _plays(actions: list[dict]) -> list[dict]:
    out = []
    for a in actions:
        if a.get("kind") == "play":
            out.append(a)
        elif a.get("kind") == "gather":
            out += a.get("prompts", [])
    return out


def prompt_seconds(play: dict, audio_hash: str | None, durations: dict[str, float]) -> float:
    """How long one prompt plays: its rendered file's length, else an estimate."""
    if audio_hash:
        return durations.get(audio_hash, UNKNOWN_PLAY_SECONDS)
    return max(1.0, len((play.get("text") or "").split()) / SAY_WORDS_PER_SECOND)


def phase_at(actions: list[dict], heard: dict, elapsed: float, notice_heard: bool,
             durations: dict[str, float]) -> str:
    """The phase of the notice a caller was in `elapsed` seconds into this turn."""
    notice = [p for a in actions if a.get("kind") == "noticeplayed" for p in a["prompts"]]
    offset = 0.0
    seen_notice = notice_heard
    for play in _plays(actions):
        prompt = play.get("prompt")
        offset += prompt_seconds(play, heard.get(prompt), durations)
        if elapsed < offset:
            if prompt in notice:
                return str(prompt)
            return AFTER if seen_notice else BEFORE
        if prompt in notice:
            seen_notice = True
    return AFTER if seen_notice or notice else BEFORE


def _language():
    return FlowRun.state["language"].as_string()


def _key(column):
    """A short key of a JSON column's stored text (identical documents, identical keys)."""
    return func.md5(cast(column, Text))


def _notice_in_earlier_turn():
    earlier = aliased(Turn)
    return exists().where(earlier.run_id == FlowRun.id, earlier.step < FlowRun.step,
                          cast(earlier.actions, Text).like('%"noticeplayed"%'))


def _samples(s: Session, examples: dict[tuple, str]) -> dict[tuple, tuple[list, dict]]:
    """(actions key, heard key) → (actions, heard), read from one run that has them."""
    runs = {run_id: key for key, run_id in examples.items()}
    out = {}
    for run_id, actions, heard in s.execute(
            select(FlowRun.id, Turn.actions, FlowRun.heard)
            .join(Turn, and_(Turn.run_id == FlowRun.id, Turn.step == FlowRun.step))
            .where(FlowRun.id.in_(list(runs)))):
        out[runs[run_id]] = (actions, heard or {})
    return out


@dataclass(frozen=True)
class HangUp:
    """One run that hung up without a decision, and where in the notice."""

    call_sid: str
    started_at: datetime
    language: str
    phase: str
    seconds: float  # into the turn that was playing
    run_id: str = ""


def hang_up_conditions(lo: datetime, hi: datetime, language: str | None = None) -> list:
    """The runs started in [lo, hi) that hung up without a decision (in `language`)."""
    out = [FlowRun.created_at >= lo, FlowRun.created_at < hi, FlowRun.hangup_at.is_not(None),
           ~exists().where(Consent.run_id == FlowRun.id)]
    if language is not None:
        out.append(func.coalesce(_language(), "") == language)
    return out


def hang_ups(s: Session, lo: datetime, hi: datetime, durations: dict[str, float], *,
             language: str | None = None, runs: list[str] | None = None) -> list[HangUp]:
    """The runs started in [lo, hi) that hung up without a decision (in `language`, among
    `runs` if given), each with its phase.

    They share a handful of distinct last turns (same flow version, language and path),
    so each distinct turn is read and timed once, and every hang-up is placed on its
    turn's timeline by its own elapsed time.
    """
    turn_key, heard_key = _key(Turn.actions), _key(FlowRun.heard)
    query = (select(_language(), FlowRun.hangup_at, Call.ended_at, Turn.created_at, turn_key,
                    heard_key, _notice_in_earlier_turn(), FlowRun.id, FlowRun.call_sid,
                    FlowRun.created_at)
             .join(Turn, and_(Turn.run_id == FlowRun.id, Turn.step == FlowRun.step))
             .join(Call, Call.call_sid == FlowRun.call_sid, isouter=True)
             .where(*hang_up_conditions(lo, hi, language)))
    if runs is not None:
        query = query.where(FlowRun.id.in_(runs))
    rows = list(s.execute(query))
    examples: dict[tuple, str] = {}
    for r in rows:
        examples.setdefault((r[4], r[5]), r[7])
    samples = _samples(s, examples)
    out = []
    for lang, hangup_at, ended_at, served_at, tk, hk, earlier, run, sid, at in rows:
        actions, heard = samples[(tk, hk)]
        elapsed = ((ended_at or hangup_at) - served_at).total_seconds()
        out.append(HangUp(sid, at, lang or "",
                          phase_at(actions, heard, elapsed, bool(earlier), durations), elapsed,
                          run))
    return sorted(out, key=lambda h: (h.started_at, h.run_id), reverse=True)


def hang_ups_before(s: Session, lo: datetime, hi: datetime, durations: dict[str, float], *,
                    language: str, before: tuple[datetime, str] | None,
                    batch: int) -> tuple[list[HangUp], tuple[datetime, str] | None]:
    """The next `batch` runs that hung up, started in [lo, hi) just before the `before`
    cursor (start, run id), newest first, read in the order of the partial index
    ix_flow_runs_hangups; returns the ones without a decision in `language`, and the
    cursor after the batch (None at the end). A page costs the same however deep it is."""
    query = (select(FlowRun.created_at, FlowRun.id)
             .where(FlowRun.hangup_at.is_not(None), FlowRun.created_at >= lo,
                    FlowRun.created_at < hi)
             .order_by(FlowRun.created_at.desc(), FlowRun.id.desc()).limit(batch))
    if before is not None:
        query = query.where(tuple_(FlowRun.created_at, FlowRun.id) < tuple_(*before))
    keys = list(s.execute(query))
    if not keys:
        return [], None
    found = hang_ups(s, lo, hi, durations, language=language, runs=[run for _at, run in keys])
    return found, ((keys[-1][0], keys[-1][1]) if len(keys) == batch else None)


def audio_seconds(audio_dir: str) -> dict[str, float]:
    """Each rendered prompt's length in seconds, by the SHA-256 of its file."""
    try:
        entries = read_manifest(Path(audio_dir) / MANIFEST)
    except AudioError:
        return {}
    return {e.sha256: e.duration_ms / 1000 for e in entries}
