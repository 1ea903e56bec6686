"""A call as the audit log recorded it: the timeline an auditor reads, prompt by prompt.

Everything on the page comes from the call's audit entries; the words of each prompt
come from the flow version the call ran under, and the audio from the file whose hash
the entry recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import AuditEntry, FlowRun, Turn
from .access import KIND as ACCESS_KIND
from .audiofiles import AudioIndex

AUDITOR_KINDS = (ACCESS_KIND, "auditor.login")


@dataclass
class PromptHeard:
    """One prompt as played: its words in that language and the audio the caller heard."""

    prompt: str
    language: str
    text: str | None
    audio: str | None
    file: str | None = None

    @property
    def spoken_by(self) -> str:
        """How it reached the caller."""
        if self.audio is None:
            return "spoken by Twilio <Say> (no audio file was rendered)"
        return "audio file" if self.file else "audio file no longer in the audio folder"


@dataclass
class Event:
    """One audit entry of the call, described for a reader."""

    seq: int
    hash: str
    kind: str
    at: str
    title: str
    detail: str = ""
    prompts: list[PromptHeard] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    css: str = ""


def fact_entries(s: Session, call_sid: str) -> list[AuditEntry]:
    """The call's own entries (facts about the call, not auditor access), oldest first."""
    return list(s.scalars(select(AuditEntry).where(AuditEntry.ref == call_sid,
                                                   AuditEntry.kind.not_in(AUDITOR_KINDS))
                          .order_by(AuditEntry.seq)))


def access_entries(s: Session, call_sid: str) -> list[dict]:
    """Earlier auditor views and exports of this call."""
    out = []
    for e in s.scalars(select(AuditEntry).where(AuditEntry.ref == call_sid,
                                                AuditEntry.kind == ACCESS_KIND)
                       .order_by(AuditEntry.seq)):
        body = json.loads(e.body)
        out.append({"seq": e.seq, "at": body["at"], **body["data"]})
    return out


def run_versions(s: Session, call_sid: str, bodies: list[dict]) -> dict[str, str]:
    """Flow version per run: as call.started recorded it, else as the run row says."""
    versions = {b["data"].get("run"): b["data"].get("flow_version")
                for b in bodies if b["kind"] == "call.started"}
    for run in s.scalars(select(FlowRun).where(FlowRun.call_sid == call_sid)):
        versions.setdefault(run.id, run.flow_version)
    return {k: v for k, v in versions.items() if k and v}


def _text(registry, s: Session, version: str | None, prompt: str, language: str):
    if not version:
        return None
    try:
        return registry.version(s, version).text(prompt, language)
    except (LookupError, KeyError):
        return None


def _gather_timeouts(s: Session, call_sid: str) -> dict[tuple[str, int], int]:
    out = {}
    q = (select(Turn.run_id, Turn.step, Turn.actions).join(FlowRun, FlowRun.id == Turn.run_id)
         .where(FlowRun.call_sid == call_sid))
    for run_id, step, actions in s.execute(q):
        for a in actions or []:
            if a.get("kind") == "gather":
                out[(run_id, step)] = a.get("timeout")
    return out


def _describe(kind: str, d: dict, gather_timeout: int | None) -> tuple[str, str, str]:
    if kind == "call.started":
        return ("Call started", f"{d.get('origin')} · flow {d.get('flow_id')} "
                f"({str(d.get('flow_version'))[:12]}) · language {d.get('language')}", "start")
    if kind == "input.received":
        inp = d.get("input") or {}
        if inp.get("type") == "digits":
            return (f"Key pressed: {inp.get('digits')}", f"step {d.get('step')}", "keys")
        if inp.get("type") == "timeout":
            return ("No key pressed (timeout)", f"step {d.get('step')}", "timeout")
        return ("Caller hung up", f"step {d.get('step')}", "hangup")
    if kind == "prompts.played":
        acts = d.get("actions") or []
        then = []
        if "startrecording" in acts:
            then.append("recording started")
        if "gather" in acts:
            then.append(f"waited up to {gather_timeout} s for a key" if gather_timeout
                        else "waited for a key")
        for a in ("enqueue", "dial", "hangup"):
            if a in acts:
                then.append({"enqueue": "sent to a queue", "dial": "connected onward",
                             "hangup": "hung up"}[a])
        return ("Prompts played", "; ".join(then), "prompts")
    if kind == "notice.played":
        return (f"Notice played in full ({d.get('language')})",
                f"prompts {', '.join(d.get('prompts') or [])} · notice version "
                f"{str(d.get('notice_version'))[:12]}", "notice")
    if kind in ("consent.decided", "consent.withdrawn"):
        keys = d.get("digits") or "none"
        return (f"Decision: {d.get('decision')}",
                f"keys {keys} · {d.get('language')} · purpose {d.get('purpose')} · "
                f"channels {', '.join(d.get('channels') or [])}", "decision")
    if kind == "call.status":
        extra = f" · duration {d['duration']} s" if d.get("duration") is not None else ""
        return (f"Call status: {d.get('status')}",
                f"Twilio sequence {d.get('sequence_number')}{extra}"
                + ("" if d.get("applied", True) else " · arrived out of order"), "status")
    if kind == "recording.status":
        return (f"Recording {d.get('status')}",
                f"{d.get('recording_sid')} · {d.get('duration')} s · "
                f"{d.get('channels')} channel(s) · {d.get('source')}", "recording")
    return (kind, "", "")


def timeline(s: Session, call_sid: str, entries: list[AuditEntry], registry,
             index: AudioIndex) -> list[Event]:
    """The call's entries as readable events, with each prompt's words and audio file."""
    bodies = [json.loads(e.body) for e in entries]
    versions = run_versions(s, call_sid, bodies)
    timeouts = _gather_timeouts(s, call_sid)
    events = []
    for e, b in zip(entries, bodies, strict=True):
        d = b.get("data") or {}
        title, detail, css = _describe(b["kind"], d, timeouts.get((d.get("run"), d.get("step"))))
        ev = Event(seq=e.seq, hash=e.hash, kind=b["kind"], at=b["at"], title=title,
                   detail=detail, data=d, css=css)
        if b["kind"] == "prompts.played":
            version = versions.get(d.get("run"))
            ev.prompts = [PromptHeard(p["prompt"], p["language"],
                                      _text(registry, s, version, p["prompt"], p["language"]),
                                      p.get("audio")) for p in d.get("played") or []]
        events.append(ev)
    files = index.find(p.audio for ev in events for p in ev.prompts)
    for ev in events:
        for p in ev.prompts:
            p.file = files.get(p.audio)
    return events
