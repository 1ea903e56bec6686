"""A stored flow drawn as a graph: DOT written from the flow's nodes, laid out by Graphviz.

Graphviz's `dot` (Debian package graphviz) turns the DOT text into SVG, which the page
embeds inline. Every label is a DOT quoted string with its backslashes and quotes escaped,
so a prompt id or a key cannot inject DOT; `dot` escapes the text it writes into the SVG.
"""

from __future__ import annotations

import functools
import html
import re
import shutil
import subprocess

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup

from ivr.domain.flow.model import Flow, Node

DOT_TIMEOUT_SECONDS = 10
SHAPES = {"play": "box", "notice": "note", "menu": "component", "branch": "diamond",
          "exit": "doubleoctagon"}
FILLS = {"play": "#eef3fa", "notice": "#fff1d6", "menu": "#e2ecf8", "branch": "#f4f6f9",
         "exit": "#fde4e1"}


# The node types and exit actions as the diagram names them (the ids stay as written).
# As everywhere, English shows the code itself and Turkish the team's words.
TYPES = {"play": _l("play"), "notice": _l("notice"), "menu": _l("menu"),
         "branch": _l("branch"), "exit": _l("exit")}
ACTIONS = {"hangup": _l("hangup"), "enqueue": _l("enqueue"), "dial": _l("dial")}
DECIDED = {"granted": _l("granted"), "declined": _l("declined"), "no_input": _l("no_input"),
           "withdrawn": _l("withdrawn")}


def _name(table: dict, code) -> str:
    return str(table[code]) if code in table else str(code)


class GraphError(RuntimeError):
    """Graphviz is missing or could not draw the graph."""


def quote(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, line breaks as DOT's \\n."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", "\\n") + '"'


def _node_label(node: Node) -> str:
    lines = [node.id, f"[{_name(TYPES, node.type)}]"]
    if node.prompts:
        lines.append(", ".join(node.prompts))
    if node.type == "exit":
        target = node.queue or node.number or node.client
        lines.append(f"{_name(ACTIONS, node.action)}{' ' + target if target else ''}")
    if node.record:
        lines.append(_("starts recording"))
    return "\n".join(lines)


def _option_label(key: str, option) -> str:
    parts = [_("key %(key)s", key=key)]
    if option.decision:
        parts.append(f"→ {_name(DECIDED, option.decision)}")
    if option.language:
        parts.append(_("language %(language)s", language=option.language))
    if option.when:
        parts.append(_("if %(condition)s", condition=option.when))
    return " ".join(parts)


def _edges(node: Node) -> list[tuple[str, str]]:
    out = []
    if node.next:
        out.append((node.next, ""))
    for key, option in node.options.items():
        out.append((option.next, _option_label(key, option)))
    if node.default:
        out.append((node.default, _("any other key")))
    if node.on_exhausted:
        label = _("no valid key")
        if node.on_exhausted.decision:
            label += f" → {_name(DECIDED, node.on_exhausted.decision)}"
        out.append((node.on_exhausted.next, label))
    if node.then:
        out.append((node.then, _("if %(condition)s", condition=node.condition)))
    if node.otherwise:
        out.append((node.otherwise, _("if not %(condition)s", condition=node.condition)))
    return out


def flow_dot(flow: Flow) -> str:
    """The flow as a DOT digraph: one node per flow node, one edge per transition."""
    start = _("start")
    lines = ["digraph flow {", "  rankdir=TB;",
             '  node [fontname="DejaVu Sans", fontsize=10, style=filled];',
             '  edge [fontname="DejaVu Sans", fontsize=9];',
             f"  start [shape=circle, label={quote(start)}, fillcolor=\"#17324d\", "
             'fontcolor="#ffffff"];',
             f"  start -> {quote(flow.start)};"]
    for node in flow.nodes.values():
        lines.append(f"  {quote(node.id)} [shape={SHAPES.get(node.type, 'box')}, "
                     f"fillcolor=\"{FILLS.get(node.type, '#ffffff')}\", "
                     f"label={quote(_node_label(node))}];")
        for target, label in _edges(node):
            lines.append(f"  {quote(node.id)} -> {quote(target)} [label={quote(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)


@functools.lru_cache(maxsize=64)
def dot_to_svg(dot: str) -> str:
    """SVG drawn by Graphviz's `dot` from DOT text, without its XML prolog."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphError("Graphviz is not installed (Debian package graphviz): "
                         "the flow diagram cannot be drawn.")
    try:
        done = subprocess.run([exe, "-Tsvg"], input=dot.encode(), capture_output=True,
                              timeout=DOT_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GraphError(f"Graphviz could not draw the flow: {e}") from e
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()[:300]
        raise GraphError(f"Graphviz could not draw the flow: {message}")
    return _PROLOG.sub("", done.stdout.decode())


def flow_svg(flow: Flow) -> Markup:
    """The flow's diagram as inline SVG."""
    # dot writes every label XML-escaped, and the labels went in as escaped DOT strings.
    svg = dot_to_svg(flow_dot(flow))
    # Node ids, prompt ids and the tooltips (<title>: ids) are identifiers, not words to
    # translate: marked translate="no", as the pages mark <code>.
    ids = {node.id for node in flow.nodes.values()}
    ids |= {", ".join(node.prompts) for node in flow.nodes.values() if node.prompts}
    svg = svg.replace("<title>", '<title translate="no">')
    svg = re.sub(r"<text ([^>]*)>([^<]*)</text>",
                 lambda m: (f'<text translate="no" {m[1]}>{m[2]}</text>'
                            if html.unescape(m[2]) in ids else m[0]), svg)
    return Markup(svg)  # noqa: S704
