"""Load a YAML flow file: safe parse, schema check, dataclasses, then graph checks.

Every problem is raised as one `InvalidFlow` naming the file, the node and the problem.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import rfc8785
import yaml

from ivr.domain.vocabulary import DECISIONS, Decision

from .model import EXIT_ACTIONS, HIDDEN_CALLER, NODE_TYPES, Flow, Node, Option, Segment


class InvalidFlow(Exception):
    """A flow file that cannot be used, with the file, node and problem."""

    def __init__(self, source: str, problem: str, node: str | None = None):
        self.source, self.problem, self.node = source, problem, node
        where = f"{source}: node '{node}'" if node else source
        super().__init__(f"{where}: {problem}")


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML is untyped here (Any)
    """SafeLoader where only true/false are booleans and every mapping key is a string.

    YAML 1.1 turns `yes`, `no`, `on`, `off` into booleans and `1:` into an int; a menu
    key or a node id must stay exactly what the author typed.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):  # PyYAML's error: not a mapping
            refused: dict[str, Any] = super().construct_mapping(node, deep)
            return refused
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
            else:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain values", key_node.start_mark
                )
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf")
)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)

_ID = r"^[a-z][a-z0-9_]*$"
_TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}
# A prompt's words in one language: plain text, or parts each spoken in its own language
# ("For English, press 0" inside a Turkish prompt is said by the English voice).
_PROMPT_TEXT = {"oneOf": [_TEXT, {
    "type": "array", "minItems": 1,
    "items": {"type": "object", "additionalProperties": False, "required": ["lang", "text"],
              "properties": {"lang": {"type": "string", "pattern": "^[a-z]{2}$"},
                             "text": _TEXT}},
}]}
_PROMPT_LIST = {"type": "array", "items": {"type": "string", "pattern": _ID}}
_OPTION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["next"],
    "properties": {
        "next": {"type": "string"},
        "decision": {"enum": list(DECISIONS)},
        "language": {"type": "string"},
        "when": {"type": "string", "pattern": _ID},
    },
}
SCHEMA: dict[str, object] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "languages", "start", "prompts", "nodes"],
    "properties": {
        "id": {"type": "string", "pattern": r"^[a-z][a-z0-9_-]*$"},
        "title": {"type": "string"},
        "languages": {"type": "array", "minItems": 1, "uniqueItems": True,
                      "items": {"type": "string", "pattern": "^[a-z]{2}$"}},
        "default_language": {"type": "string"},
        "start": {"type": "string"},
        "purpose": {"type": "string"},
        "channels": {"type": "array", "items": {"enum": ["ARAMA", "MESAJ", "EPOSTA"]}},
        "return_prompts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: {"type": "string"} for k in ("queue", "dial", "hangup")},
        },
        "prompts": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": _ID},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": _PROMPT_TEXT,
            },
        },
        "nodes": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": _ID},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type"],
                "properties": {
                    "type": {"enum": list(NODE_TYPES)},
                    "prompts": _PROMPT_LIST,
                    "next": {"type": "string"},
                    "record": {"type": "boolean"},
                    "options": {
                        "type": "object",
                        "propertyNames": {"pattern": r"^[0-9*#]$"},
                        "additionalProperties": _OPTION,
                    },
                    "reprompt": _PROMPT_LIST,
                    "invalid": _PROMPT_LIST,
                    "no_entry": _PROMPT_LIST,
                    "timeout": {"type": "integer", "minimum": 1, "maximum": 60},
                    "max_invalid": {"type": "integer", "minimum": 1, "maximum": 10},
                    "max_timeouts": {"type": "integer", "minimum": 1, "maximum": 10},
                    "default": {"type": "string"},
                    "on_exhausted": _OPTION,
                    "if": {"type": "string", "pattern": _ID},
                    "then": {"type": "string"},
                    "else": {"type": "string"},
                    "action": {"enum": list(EXIT_ACTIONS)},
                    "queue": {"type": "string", "minLength": 1},
                    "number": {"type": "string", "minLength": 1},
                    "client": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}


def flow_version(document: dict[str, Any]) -> str:
    """SHA-256 of the flow's canonical JSON (RFC 8785): the flow's content version."""
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """Parse flow YAML safely into plain data, or raise InvalidFlow."""
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InvalidFlow(source, f"YAML error{where}: {problem}") from None
    if not isinstance(doc, dict):
        raise InvalidFlow(source, "the file must hold a YAML mapping")
    return doc


def load_flow(path: str | Path) -> Flow:
    """Read, validate and build the flow in `path`, as a flow that may answer calls now."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidFlow(str(path), f"cannot read file: {e}") from None
    flow = build_flow(parse_yaml(text, str(path)), str(path))
    _check_hidden_callers(flow)
    return flow


def _check_hidden_callers(flow: Flow) -> None:
    """A flow that asks for consent must never ask a caller whose number is hidden: every
    path from the start to a node that decides passes a branch on `hidden_caller` whose
    `else` side it takes. Checked for the flows that answer calls (load_flow), not for the
    versions stored before this rule, which are only replayed."""
    if not any(n.decides for n in flow.nodes.values()):
        return
    seen, todo = {flow.start}, deque([flow.start])
    while todo:
        node = flow.nodes[todo.popleft()]
        if node.decides:
            raise InvalidFlow(flow.source, "a caller whose number is hidden could be asked "
                              f"for consent here; branch on '{HIDDEN_CALLER}' before it",
                              node.id)
        targets = ([node.then] if node.type == "branch" and node.condition == HIDDEN_CALLER
                   else node.targets())
        for t in targets:
            if t in flow.nodes and t not in seen:
                seen.add(t)
                todo.append(t)


def load_flows(directory: str | Path) -> dict[str, Flow]:
    """Load every `*.yaml` flow in a folder, keyed by flow id."""
    flows: dict[str, Flow] = {}
    for p in sorted(Path(directory).glob("*.y*ml")):
        flow = load_flow(p)
        if flow.id in flows:
            raise InvalidFlow(str(p),
                              f"flow id '{flow.id}' is also used by {flows[flow.id].source}")
        flows[flow.id] = flow
    return flows


def _schema_error(doc: dict[str, Any], source: str) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    path = list(err.absolute_path)
    node = str(path[1]) if len(path) >= 2 and path[0] == "nodes" else None
    loc = "/".join(str(p) for p in path) or "(top level)"
    raise InvalidFlow(source, f"{loc}: {err.message}", node)


def _option(data: dict[str, Any], key: str = "") -> Option:
    return Option(key=key, next=data["next"], decision=data.get("decision"),
                  language=data.get("language"), when=data.get("when"))


def _prompt_parts(language: str, value: str | list[dict[str, str]]) -> tuple[Segment, ...]:
    if isinstance(value, str):
        return (Segment(language, value),)
    return tuple(Segment(p["lang"], p["text"]) for p in value)


def joined_text(parts: tuple[Segment, ...]) -> str:
    """The words of a prompt's parts as one text, the way they are spoken one after another."""
    return " ".join(p.text.strip() for p in parts)


def build_flow(doc: dict[str, Any], source: str) -> Flow:
    """Validate a parsed flow document and turn it into a `Flow`."""
    _schema_error(doc, source)
    segments = {pid: {lang: _prompt_parts(lang, v) for lang, v in texts.items()}
                for pid, texts in doc["prompts"].items()}
    # A plain string stays exactly as written (it is what old records say was heard).
    prompts = {pid: {lang: v if isinstance(v, str) else joined_text(segments[pid][lang])
                     for lang, v in texts.items()}
               for pid, texts in doc["prompts"].items()}
    nodes = {}
    for nid, n in doc["nodes"].items():
        options = {k: _option(o, k) for k, o in (n.get("options") or {}).items()}
        nodes[nid] = Node(
            id=nid, type=n["type"], prompts=tuple(n.get("prompts", ())), next=n.get("next"),
            record=n.get("record", False), options=options,
            reprompt=tuple(n.get("reprompt", ())), invalid=tuple(n.get("invalid", ())),
            no_entry=tuple(n.get("no_entry", ())), timeout=n.get("timeout", 6),
            max_invalid=n.get("max_invalid", 3), max_timeouts=n.get("max_timeouts", 3),
            default=n.get("default"),
            on_exhausted=_option(n["on_exhausted"]) if "on_exhausted" in n else None,
            condition=n.get("if"), then=n.get("then"), otherwise=n.get("else"),
            action=n.get("action"), queue=n.get("queue"), number=n.get("number"),
            client=n.get("client"),
        )
    languages = tuple(doc["languages"])
    flow = Flow(
        id=doc["id"], version=flow_version(doc), source=source, languages=languages,
        default_language=doc.get("default_language", languages[0]), start=doc["start"],
        purpose=doc.get("purpose", "marketing"),
        channels=tuple(doc.get("channels", ("ARAMA", "MESAJ", "EPOSTA"))),
        prompts=prompts, nodes=nodes, return_prompts=doc.get("return_prompts", {}),
        document=doc, segments=segments,
    )
    _check(flow)
    return flow


def _check_node_shape(flow: Flow, node: Node) -> None:  # noqa: C901 - one rule per node kind, each named in its error
    src, nid = flow.source, node.id
    need = {
        "play": ["next"], "notice": ["next"], "menu": ["options"],
        "branch": ["condition", "then", "otherwise"], "exit": ["action"],
    }[node.type]
    names = {"condition": "if", "otherwise": "else"}
    for attr in need:
        if not getattr(node, attr):
            raise InvalidFlow(src, f"a {node.type} node needs '{names.get(attr, attr)}'", nid)
    if node.type in ("play", "notice") and not node.prompts:
        raise InvalidFlow(src, f"a {node.type} node needs at least one prompt", nid)
    if node.type == "menu":
        if not node.prompts:
            raise InvalidFlow(src, "a menu needs at least one prompt", nid)
        if node.default is None and node.on_exhausted is None:
            raise InvalidFlow(src, "a menu needs 'default' or 'on_exhausted'", nid)
        if node.on_exhausted and node.on_exhausted.decision == Decision.GRANTED:
            raise InvalidFlow(src, "silence or invalid keys can never be 'granted'", nid)
        for o in node.options.values():
            if o.language and o.language not in flow.languages:
                raise InvalidFlow(src, f"option '{o.key}' selects undeclared language "
                                  f"'{o.language}'", nid)
    if node.type == "exit":
        if node.action == "enqueue" and not node.queue:
            raise InvalidFlow(src, "an enqueue exit needs 'queue'", nid)
        if node.action == "dial" and not (node.number or node.client):
            raise InvalidFlow(src, "a dial exit needs 'number' or 'client'", nid)
    elif node.type != "menu" and (node.options or node.on_exhausted):
        raise InvalidFlow(src, "only a menu can have options", nid)


def _check(flow: Flow) -> None:  # noqa: C901 - the flow schema's rules in one pass, each raising a named InvalidFlow
    src = flow.source
    if flow.default_language not in flow.languages:
        raise InvalidFlow(src, f"default_language '{flow.default_language}' is not declared")
    for pid, texts in flow.prompts.items():
        missing = [lang for lang in flow.languages if lang not in texts]
        if missing:
            raise InvalidFlow(src, f"prompt '{pid}' has no text in {', '.join(missing)}")
        extra = [lang for lang in texts if lang not in flow.languages]
        if extra:
            raise InvalidFlow(src, f"prompt '{pid}' has undeclared language {', '.join(extra)}")
        for lang, parts in flow.segments.get(pid, {}).items():
            for part in parts:
                if part.lang not in flow.languages:
                    raise InvalidFlow(src, f"prompt '{pid}' ({lang}) has a part in undeclared "
                                      f"language '{part.lang}'")
    for rp in flow.return_prompts.values():
        if rp not in flow.prompts:
            raise InvalidFlow(src, f"return prompt '{rp}' is not defined")
    if flow.start not in flow.nodes:
        raise InvalidFlow(src, f"start node '{flow.start}' does not exist")
    for node in flow.nodes.values():
        _check_node_shape(flow, node)
        for pid in (*node.prompts, *node.reprompt, *node.invalid, *node.no_entry):
            if pid not in flow.prompts:
                raise InvalidFlow(src, f"prompt '{pid}' is not defined", node.id)
        for target in node.targets():
            if target not in flow.nodes:
                raise InvalidFlow(src, f"leads to unknown node '{target}'", node.id)
            if target == flow.start:
                raise InvalidFlow(src, f"leads back to the start node '{target}'; "
                                  "a flow has one entry", node.id)
    reachable = _reach(flow, flow.start)
    for nid in flow.nodes:
        if nid not in reachable:
            raise InvalidFlow(src, "is unreachable from the start node", nid)
    exits = {nid for nid, n in flow.nodes.items() if n.type == "exit"}
    if not exits:
        raise InvalidFlow(src, "the flow has no exit node")
    for nid in flow.nodes:
        if not (_reach(flow, nid) & exits):
            raise InvalidFlow(src, "never reaches an exit node", nid)
    # Notice and consent are separate acts, and the notice comes first: no node that
    # records a decision may be reached from the start without passing a notice node.
    if not any(n.type == "notice" for n in flow.nodes.values()):
        if any(n.decides for n in flow.nodes.values()):
            raise InvalidFlow(src, "the flow asks for consent but has no notice node")
    before_notice = _reach(flow, flow.start, stop=lambda n: n.type == "notice")
    for nid in before_notice:
        if flow.nodes[nid].decides:
            raise InvalidFlow(src, "asks for consent before the notice has played", nid)


def _reach(flow: Flow, start: str, stop: Callable[[Node], bool] | None = None) -> set[str]:
    seen, todo = {start}, deque([start])
    while todo:
        node = flow.nodes[todo.popleft()]
        if stop and stop(node):
            continue
        for t in node.targets():
            if t in flow.nodes and t not in seen:
                seen.add(t)
                todo.append(t)
    return seen
