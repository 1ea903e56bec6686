"""The flow registry's comparisons: two versions' prompts and nodes side by side, each node
described as text in the auditor's language. The stored versions and their use are
ivr/services/auditor/flow_registry.py."""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import gettext as _

from ivr.domain.flow.model import Flow, Node
from ivr.services.auditor.flow_registry import HeardAudio


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
    lines += _key_lines(node)
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


def _key_lines(node: Node) -> list[str]:
    """Where each key leads, then where no valid key and any other key lead."""
    lines = []
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
    return lines


def diff_prompts(a: Flow, b: Flow, audio_a: HeardAudio,
                 audio_b: HeardAudio) -> list[PromptChange]:
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
