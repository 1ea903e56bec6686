"""The flow and notice registry: every stored flow version, its use, and what changed.

A flow version is stored (flow_versions) the first time a call runs it, and never
deleted. Its use comes from the runs (flow_runs); its notice versions per language from
the consent records, which carry the notice version the caller heard before deciding; both
counted by the daily aggregates (ivr/services/daily_aggregates.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.flow.model import Flow, Node
from ivr.services.daily_aggregates import Reader
from ivr.storage.models import FlowRun, FlowVersion

VERSION = re.compile(r"[0-9a-f]{6,64}")
AUDIO_SAMPLE_RUNS = 200


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


def recorded_audio(s: Session, version: str) -> dict[tuple[str, str], str]:
    """(prompt, language) → the SHA-256 of the audio recent calls of this version heard."""
    out: dict[tuple[str, str], str] = {}
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


@dataclass
class PromptChange:
    """One prompt in one language, in two versions: its words and its audio hash."""

    prompt: str
    language: str
    text_a: str | None
    text_b: str | None
    audio_a: str | None
    audio_b: str | None

    @property
    def state(self) -> str:
        """added, removed, changed or same."""
        if self.text_a is None:
            return "added"
        if self.text_b is None:
            return "removed"
        if self.text_a != self.text_b or (self.audio_a and self.audio_b
                                          and self.audio_a != self.audio_b):
            return "changed"
        return "same"


@dataclass
class NodeChange:
    """One node in two versions, described as text."""

    node: str
    a: str | None
    b: str | None

    @property
    def state(self) -> str:
        """added, removed, changed or same."""
        if self.a is None:
            return "added"
        if self.b is None:
            return "removed"
        return "changed" if self.a != self.b else "same"


def describe_node(node: Node) -> str:
    """A node's type, prompts and transitions, one fact per line."""
    lines = [f"type: {node.type}"]
    if node.prompts:
        lines.append(f"prompts: {', '.join(node.prompts)}")
    for name in ("reprompt", "invalid", "no_entry"):
        if getattr(node, name):
            lines.append(f"{name}: {', '.join(getattr(node, name))}")
    if node.type == "menu":
        lines.append(f"timeout: {node.timeout}s, max invalid {node.max_invalid}, "
                     f"max timeouts {node.max_timeouts}")
    for key, o in node.options.items():
        extra = "".join(f" {k}={v}" for k, v in (("decision", o.decision),
                                                 ("language", o.language),
                                                 ("when", o.when)) if v)
        lines.append(f"key {key} → {o.next}{extra}")
    if node.on_exhausted:
        lines.append(_("no valid key") + f" → {node.on_exhausted.next}"
                     + (f" decision={node.on_exhausted.decision}"
                        if node.on_exhausted.decision else ""))
    if node.default:
        lines.append(_("any other key") + f" → {node.default}")
    if node.condition:
        lines.append(f"if {node.condition} → {node.then}, else → {node.otherwise}")
    if node.next:
        lines.append(f"next → {node.next}")
    if node.record:
        lines.append(_("starts recording"))
    if node.type == "exit":
        lines.append(f"action: {node.action}"
                     + "".join(f" {v}" for v in (node.queue, node.number, node.client) if v))
    return "\n".join(lines)


def diff_prompts(a: Flow, b: Flow, audio_a: dict, audio_b: dict) -> list[PromptChange]:
    """Every prompt of either version, per language, side by side."""
    out = []
    for prompt in sorted(set(a.prompts) | set(b.prompts)):
        languages = sorted(set(a.prompts.get(prompt, {})) | set(b.prompts.get(prompt, {})))
        for language in languages:
            out.append(PromptChange(prompt, language,
                                    a.prompts.get(prompt, {}).get(language),
                                    b.prompts.get(prompt, {}).get(language),
                                    audio_a.get((prompt, language)),
                                    audio_b.get((prompt, language))))
    return out


def diff_nodes(a: Flow, b: Flow) -> list[NodeChange]:
    """Every node of either version, side by side, in the order the flows declare them."""
    order = list(a.nodes) + [n for n in b.nodes if n not in a.nodes]
    return [NodeChange(n, describe_node(a.nodes[n]) if n in a.nodes else None,
                       describe_node(b.nodes[n]) if n in b.nodes else None) for n in order]
