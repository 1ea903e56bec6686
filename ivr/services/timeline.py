"""One timeline of a call, built from its audit entries, for every surface that shows it:
the auditor's call page, `calls show` (text and --json) and the API.

Each prompt carries the words of the flow version the call ran under and the SHA-256 of
the audio the caller heard. Notice parts are labelled as parts, with their own hashes; the
notice version a consent rests on is the hash over every part heard in that language.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.audit import merkle
from ivr.domain.notice_version import notice_version
from ivr.storage.models import AuditEntry, FlowRun, Turn

AUDITOR_KINDS = ("auditor.access", "auditor.login")


@dataclass
class PromptHeard:
    """One prompt as played: its words in that language and the audio the caller heard."""

    prompt: str
    language: str
    text: str | None
    audio: str | None

    @property
    def spoken_by(self) -> str:
        """How it reached the caller."""
        return "audio file" if self.audio else "spoken by Twilio <Say> (no audio file)"


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
    parts: list[PromptHeard] = field(default_factory=list)  # a notice part's prompts
    data: dict = field(default_factory=dict)
    category: str = ""

    def to_dict(self) -> dict:
        """The event as `calls show --json` and the API give it."""
        out = {"seq": self.seq, "hash": self.hash, "kind": self.kind, "at": self.at,
               "category": self.category, "title": self.title, "detail": self.detail,
               "prompts": [asdict(p) for p in self.prompts]}
        d = self.data
        if self.kind == "notice.played":
            out["notice_part"] = {"language": d.get("language"),
                                  "prompts": [asdict(p) for p in self.parts],
                                  "part_hash": d.get("notice_version")}
        if self.kind in ("consent.decided", "consent.withdrawn"):
            out["decision"] = d.get("decision")
            out["digits"] = d.get("digits")
            out["notice_version"] = d.get("notice_version")
        if self.kind == "input.received":
            out["input"] = d.get("input")
        if self.kind in ("call.status", "recording.status"):
            out["status"] = d.get("status")
        return out


@dataclass
class NoticeHeard:
    """The notice one run played in one language: its parts and the notice version they make."""

    run: str
    language: str
    parts: list[PromptHeard]
    notice_version: str
    recorded: str | None  # the version the run's decision records, if it made one

    def to_dict(self) -> dict:
        """The notice as `calls show --json` gives it."""
        return {"run": self.run, "language": self.language, "notice_version": self.notice_version,
                "decision_records": self.recorded, "parts": [asdict(p) for p in self.parts]}


def fact_entries(s: Session, call_sid: str) -> list[AuditEntry]:
    """The call's own entries (facts about the call, not auditor access), oldest first."""
    return list(s.scalars(select(AuditEntry).where(AuditEntry.ref == call_sid,
                                                   AuditEntry.kind.not_in(AUDITOR_KINDS))
                          .order_by(AuditEntry.seq)))


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


def _short(value) -> str:
    return str(value)[:12] if value else "—"


def _describe(kind: str, d: dict, gather_timeout: int | None) -> tuple[str, str, str]:  # noqa: C901 - one sentence per audit entry kind
    if kind == "call.started":
        return ("Call started", f"{d.get('origin')} · flow {d.get('flow_id')} "
                f"({_short(d.get('flow_version'))}) · language {d.get('language')}", "start")
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
        parts = ", ".join(d.get("prompts") or [])
        return (f"Notice part played ({d.get('language')}): {parts}",
                f"part hash {_short(d.get('notice_version'))} · the notice version is the "
                f"hash over every part heard in {d.get('language')}", "notice")
    if kind in ("consent.decided", "consent.withdrawn"):
        keys = d.get("digits") or "none"
        return (f"Decision: {d.get('decision')}",
                f"keys {keys} · {d.get('language')} · purpose {d.get('purpose')} · "
                f"channels {', '.join(d.get('channels') or [])} · notice version "
                f"{_short(d.get('notice_version'))}", "decision")
    if kind == "call.status":
        extra = f" · duration {d['duration']} s" if d.get("duration") is not None else ""
        seq = d.get("sequence_number")
        return (f"Call status: {d.get('status')}",
                f"Twilio sequence {seq if seq is not None else '—'}{extra}"
                + ("" if d.get("applied", True) else " · arrived out of order"), "status")
    if kind == "recording.status":
        dur = f"{d['duration']} s" if d.get("duration") is not None else "— s"
        return (f"Recording {d.get('status')}",
                f"{d.get('recording_sid')} · {dur} · "
                f"{d.get('channels') or '—'} channel(s) · {d.get('source') or '—'}", "recording")
    return (kind, "", "")


def build(s: Session, call_sid: str, registry, entries: list[AuditEntry] | None = None
          ) -> list[Event]:
    """The call's audit entries as readable events, with each prompt's words and audio hash."""
    entries = fact_entries(s, call_sid) if entries is None else entries
    bodies = [json.loads(e.body) for e in entries]
    versions = run_versions(s, call_sid, bodies)
    timeouts = _gather_timeouts(s, call_sid)
    events = []
    for e, b in zip(entries, bodies, strict=True):
        d = b.get("data") or {}
        run, step = d.get("run"), d.get("step")
        title, detail, css = _describe(b["kind"], d, timeouts.get((run, step))
                                       if run is not None and step is not None else None)
        # Entries from before the Merkle log carry their chain hash; a leaf, its leaf hash.
        digest = e.hash or merkle.leaf_hash(e.body.encode()).hex()
        ev = Event(seq=e.seq, hash=digest, kind=b["kind"], at=b["at"], title=title,
                   detail=detail, data=d, category=css)
        version = versions.get(run) if run is not None else None
        if b["kind"] == "prompts.played":
            ev.prompts = [PromptHeard(p["prompt"], p["language"],
                                      _text(registry, s, version, p["prompt"], p["language"]),
                                      p.get("audio")) for p in d.get("played") or []]
        elif b["kind"] == "notice.played":
            ev.parts = [PromptHeard(p, d["language"], _text(registry, s, version, p,
                                                            d["language"]), a)
                          for p, a in zip(d.get("prompts") or [], d.get("audio") or [],
                                          strict=False)]
        events.append(ev)
    return events


def notices(events: list[Event]) -> list[NoticeHeard]:
    """Per run and language, the notice as heard and the notice version its parts make."""
    heard: dict[tuple[str, str], list[PromptHeard]] = {}
    recorded: dict[tuple[str, str], str | None] = {}
    for ev in events:
        d = ev.data
        run, language = d.get("run"), d.get("language")
        if run is None or language is None:  # a notice played names both; others match none
            continue
        key = (run, language)
        if ev.kind == "notice.played":
            parts = heard.setdefault(key, [])
            for p in ev.parts:
                if (p.prompt, p.audio) not in [(q.prompt, q.audio) for q in parts]:
                    parts.append(p)
        elif ev.kind in ("consent.decided", "consent.withdrawn") and d.get("notice_version"):
            recorded[key] = d.get("notice_version")
    return [NoticeHeard(run, lang, parts,
                        notice_version(lang, [(p.prompt, p.text or "", p.audio) for p in parts]),
                        recorded.get((run, lang)))
            for (run, lang), parts in heard.items()]
