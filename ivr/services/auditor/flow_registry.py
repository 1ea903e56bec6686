"""The flow and notice registry: every stored flow version, its use, and the audio its calls
heard.

A flow version is stored (flow_versions) the first time a call runs it, and never
deleted. Its use comes from the runs (flow_runs); its notice versions per language from
the consent records, which carry the notice version the caller heard before deciding; both
counted by the daily aggregates (ivr/services/daily_aggregates.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.flow.model import Flow
from ivr.services.daily_aggregates import Reader
from ivr.storage.flowstore import FlowRegistry
from ivr.storage.models import FlowRun, FlowVersion

VERSION = re.compile(r"[0-9a-f]{6,64}")
AUDIO_SAMPLE_RUNS = 200

# The audio hash each (prompt, language) was heard with.
HeardAudio = dict[tuple[str, str], str]


@dataclass
class NoticeUse:
    """One notice version heard under a flow version in one language."""

    language: str
    notice_version: str
    consents: int


@dataclass
class VersionUse:
    """One stored flow version: where it came from, and when and how often it ran."""

    version: str
    flow_id: str
    source: str
    first_seen: datetime
    first_use: datetime | None = None
    last_use: datetime | None = None
    calls: int = 0
    notices: list[NoticeUse] = field(default_factory=list)

    @property
    def short(self) -> str:
        """The first 12 hex digits, as the rest of the workspace shows versions."""
        return self.version[:12]


def versions(s: Session) -> list[VersionUse]:
    """Every stored flow version with its first and last use, call count and notices (from
    the daily aggregates)."""
    counts = Reader(s, None, None, None)
    used = {v: (u["first_at"], u["last_at"], int(u["calls"]))
            for (v,), u in counts.runs("flow_version").items()}
    out = {}
    for row in s.scalars(select(FlowVersion)):
        lo, hi, n = used.get(row.version, (None, None, 0))
        out[row.version] = VersionUse(row.version, row.flow_id, row.source, row.first_seen,
                                      lo, hi, n)
    for (version, language, notice), n in counts.notices().items():
        if version in out and notice:
            out[version].notices.append(NoticeUse(language, notice, n))
    for v in out.values():
        v.notices.sort(key=lambda u: (u.language, -u.consents))
    return sorted(out.values(), key=lambda v: (v.first_use or v.first_seen), reverse=True)


def resolve(s: Session, text: str) -> str | None:
    """The full stored version a (possibly shortened) hex version names, if exactly one."""
    if not VERSION.fullmatch(text or ""):
        return None
    found = list(s.scalars(select(FlowVersion.version)
                           .where(FlowVersion.version.startswith(text, autoescape=True))
                           .limit(2)))
    return found[0] if len(found) == 1 else None


def recorded_audio(s: Session, version: str) -> HeardAudio:
    """(prompt, language) → the SHA-256 of the audio recent calls of this version heard."""
    out: HeardAudio = {}
    rows = s.execute(select(FlowRun.heard, FlowRun.notice, FlowRun.state)
                     .where(FlowRun.flow_version == version)
                     .order_by(FlowRun.created_at.desc()).limit(AUDIO_SAMPLE_RUNS))
    for heard, notice, state in rows:
        # The notice keeps its language with each part; other prompts take the run's.
        for language, parts in (notice or {}).items():
            for part in parts:
                if part.get("audio"):
                    out.setdefault((part["prompt"], language), part["audio"])
        language = (state or {}).get("language") or ""
        for prompt, sha in (heard or {}).items():
            if sha:
                out.setdefault((prompt, language), sha)
    return out


@dataclass(frozen=True)
class HeardFlow:
    """A stored flow version as its calls heard it."""

    flow: Flow
    audio: HeardAudio


@dataclass(frozen=True)
class VersionDetail:
    """One stored flow version: its use, the flow and the audio its calls heard."""

    use: VersionUse
    heard: HeardFlow


def version_detail(s: Session, registry: FlowRegistry, text: str) -> VersionDetail | None:
    """The stored version `text` names (perhaps shortened), None if it names none."""
    full = resolve(s, text)
    if full is None:
        return None
    use = next(v for v in versions(s) if v.version == full)
    return VersionDetail(use, HeardFlow(registry.version(s, full), recorded_audio(s, full)))


class UnknownVersion(LookupError):
    """One of two versions to compare is not a stored flow version; `which` is 0 or 1."""

    def __init__(self, which: int):
        super().__init__(f"version {which + 1} of 2 is not a stored flow version")
        self.which = which


def two_versions(s: Session, registry: FlowRegistry, a: str,
                 b: str) -> tuple[HeardFlow, HeardFlow]:
    """The two stored versions `a` and `b` name, to compare; UnknownVersion if one is none."""
    full = resolve(s, a), resolve(s, b)
    for which, version in enumerate(full):
        if version is None:
            raise UnknownVersion(which)
    first, second = (v for v in full if v is not None)
    return (HeardFlow(registry.version(s, first), recorded_audio(s, first)),
            HeardFlow(registry.version(s, second), recorded_audio(s, second)))
