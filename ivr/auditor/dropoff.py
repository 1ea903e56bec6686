"""Where callers hang up during the privacy notice, from the stored runs and turns.

A turn's prompts are played one after another from the moment its TwiML was served
(`flow_turns.created_at`). A run that hung up without a decision ended at the call's end
time (Twilio's timestamp, else when we heard of the hang-up); the prompt playing at that
offset into its last turn is where the caller left. Prompt lengths come from the audio
manifest (by the SHA-256 the run recorded for each prompt); a prompt spoken by <Say> is
timed at SAY_WORDS_PER_SECOND, as the call simulator times it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from ..models import Call, Consent, FlowRun, Turn

SAY_WORDS_PER_SECOND = 2.5
UNKNOWN_PLAY_SECONDS = 4.0
BEFORE = "before"  # hung up before the notice began (greeting, language offer)
AFTER = "after"  # hung up after the whole notice (at the consent question or later)
CHUNK = 500


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
                return prompt
            return AFTER if seen_notice else BEFORE
        if prompt in notice:
            seen_notice = True
    return AFTER if seen_notice or notice else BEFORE


def _language():
    return FlowRun.state["language"].as_string()


def notice_dropoff(s: Session, lo: datetime, hi: datetime, parts: Iterable[str],
                   durations: dict[str, float]) -> Dropoff:
    """Hang-ups per notice phase and language, for the runs started in [lo, hi)."""
    in_period = (FlowRun.created_at >= lo, FlowRun.created_at < hi)
    lang = _language()
    by_lang = {language or "": LanguageDropoff(language or "", n) for language, n in
               s.execute(select(lang, func.count()).where(*in_period).group_by(lang))}
    hung = list(s.execute(
        select(FlowRun.id, lang, FlowRun.hangup_at, Call.ended_at, FlowRun.heard)
        .join(Call, Call.call_sid == FlowRun.call_sid, isouter=True)
        .where(*in_period, FlowRun.hangup_at.is_not(None),
               ~exists().where(Consent.run_id == FlowRun.id))))
    order = list(parts)
    for i in range(0, len(hung), CHUNK):
        chunk = hung[i:i + CHUNK]
        last = (select(Turn.run_id, func.max(Turn.step).label("step"))
                .where(Turn.run_id.in_([h.id for h in chunk])).group_by(Turn.run_id)
                .subquery())
        turns = {t.run_id: t for t in s.scalars(select(Turn).join(
            last, and_(Turn.run_id == last.c.run_id, Turn.step == last.c.step)))}
        earlier = _notice_before(s, turns)
        for h in chunk:
            turn = turns.get(h.id)
            if turn is None:
                continue
            end = h.ended_at or h.hangup_at
            elapsed = (end - turn.created_at).total_seconds()
            phase = phase_at(turn.actions, h.heard or {}, elapsed, h.id in earlier, durations)
            if phase not in (BEFORE, AFTER) and phase not in order:
                order.append(phase)
            row = by_lang.setdefault(h[1] or "", LanguageDropoff(h[1] or "", 0))
            row.hangups[phase] = row.hangups.get(phase, 0) + 1
    return Dropoff(order, sorted(by_lang.values(), key=lambda r: (-r.runs, r.language)))


def _notice_before(s: Session, last_turns: dict[str, Turn]) -> set[str]:
    """Runs whose notice was already played in a turn before their last one."""
    later = [t.run_id for t in last_turns.values() if t.step > 0]
    if not later:
        return set()
    out = set()
    for turn in s.scalars(select(Turn).where(Turn.run_id.in_(later))):
        if turn.step < last_turns[turn.run_id].step and any(
                a.get("kind") == "noticeplayed" for a in turn.actions):
            out.add(turn.run_id)
    return out
