"""Flow definitions as plain dataclasses: what a YAML flow file becomes once loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NODE_TYPES = ("play", "notice", "menu", "branch", "exit")
EXIT_ACTIONS = ("hangup", "enqueue", "dial", "return")
# The context flag of a run whose caller cannot be identified by a phone number (a hidden
# number, `Anonymous`, a SIP address): no consent decision can be theirs.
HIDDEN_CALLER = "hidden_caller"


@dataclass(frozen=True)
class Segment:
    """One part of a prompt, spoken in its own language (and so by its own voice)."""

    lang: str
    text: str


@dataclass(frozen=True)
class Option:
    """One key of a menu: where it leads and what it decides."""

    key: str
    next: str
    decision: str | None = None
    language: str | None = None
    when: str | None = None


@dataclass(frozen=True)
class Node:
    """One step of a call flow."""

    id: str
    type: str
    prompts: tuple[str, ...] = ()
    next: str | None = None
    record: bool = False
    # menu
    options: dict[str, Option] = field(default_factory=dict)
    reprompt: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()
    no_entry: tuple[str, ...] = ()
    timeout: int = 6
    max_invalid: int = 3
    max_timeouts: int = 3
    default: str | None = None
    on_exhausted: Option | None = None
    # branch
    condition: str | None = None
    then: str | None = None
    otherwise: str | None = None
    # exit
    action: str | None = None
    queue: str | None = None
    number: str | None = None
    client: str | None = None

    def targets(self) -> list[str]:
        """Every node id this node can lead to."""
        out = [self.next, self.default, self.then, self.otherwise]
        out += [o.next for o in self.options.values()]
        if self.on_exhausted:
            out.append(self.on_exhausted.next)
        return [t for t in out if t]

    @property
    def decides(self) -> bool:
        """True when a key press on this node can record a consent decision."""
        return any(o.decision for o in self.options.values())


@dataclass(frozen=True)
class Flow:
    """A validated call flow with its prompts and its content version."""

    id: str
    version: str
    source: str
    languages: tuple[str, ...]
    default_language: str
    start: str
    purpose: str
    channels: tuple[str, ...]
    prompts: dict[str, dict[str, str]]
    nodes: dict[str, Node]
    return_prompts: dict[str, str]
    document: dict[str, Any]
    # Per prompt and language, the parts in the order spoken; `prompts` holds their
    # joined text, which is what the caller is said to have heard.
    segments: dict[str, dict[str, tuple[Segment, ...]]] = field(default_factory=dict)

    def text(self, prompt_id: str, language: str) -> str:
        """The exact words of one prompt in one language."""
        return self.prompts[prompt_id][language]

    def parts(self, prompt_id: str, language: str) -> tuple[Segment, ...]:
        """The parts of one prompt in one language, each with the language it is spoken in."""
        found = self.segments.get(prompt_id, {}).get(language)
        return found or (Segment(language, self.text(prompt_id, language)),)

    def notice_prompts(self) -> list[str]:
        """Prompt ids of every notice node, in the order the nodes are declared."""
        return [p for n in self.nodes.values() if n.type == "notice" for p in n.prompts]
