"""The pure call-flow state machine.

Given a flow, the call's state and one input (digits, a timeout or a hang-up), `advance`
returns the new state and the actions to perform. It imports no Flask, no database and
no Twilio, so the audit replay can run the very same code years later.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from .model import HIDDEN_CALLER, Flow, Node, Option

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")

# --- inputs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Digits:
    """Keys the caller pressed (anything Twilio sent, unchecked)."""

    value: str


@dataclass(frozen=True)
class Timeout:
    """The caller stayed silent until the gather timed out."""


@dataclass(frozen=True)
class HangUp:
    """The caller hung up."""


Input = Digits | Timeout | HangUp


def input_to_dict(inp: Input) -> dict[str, str]:
    """A JSON-ready form of an input, for storage and replay."""
    if isinstance(inp, Digits):
        return {"type": "digits", "digits": inp.value}
    return {"type": "timeout" if isinstance(inp, Timeout) else "hangup"}


def input_from_dict(data: Mapping[str, str]) -> Input:
    """The inverse of `input_to_dict`."""
    kind = data["type"]
    if kind == "digits":
        return Digits(data["digits"])
    return Timeout() if kind == "timeout" else HangUp()


# --- actions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Play:
    """Play one prompt; inside a Gather it may be interrupted by a key."""

    prompt: str
    language: str
    text: str


@dataclass(frozen=True)
class StartRecording:
    """Start recording the whole call from here on."""


@dataclass(frozen=True)
class Gather:
    """Wait for one key while playing the prompts (barge-in allowed)."""

    prompts: tuple[Play, ...]
    timeout: int
    node: str


@dataclass(frozen=True)
class NoticePlayed:
    """The notice prompts were played in full (they cannot be skipped)."""

    prompts: tuple[str, ...]
    language: str


@dataclass(frozen=True)
class Decide:
    """A consent decision was reached."""

    decision: str
    digits: tuple[str, ...]
    language: str


@dataclass(frozen=True)
class Enqueue:
    """Put the caller in an agents' queue."""

    queue: str


@dataclass(frozen=True)
class Dial:
    """Connect the caller to a number or a client."""

    number: str | None = None
    client: str | None = None


@dataclass(frozen=True)
class Hangup:
    """End the call."""


Action = Play | StartRecording | Gather | NoticePlayed | Decide | Enqueue | Dial | Hangup


def action_kind(action: Action) -> str:
    """The kind an action's JSON form is tagged with: its class name in lower case."""
    return type(action).__name__.lower()


def action_to_dict(action: Action) -> dict[str, object]:
    """A JSON-ready form of an action, tagged with its kind (one dict per distinct action
    and process: treat it as read-only)."""
    try:
        return _action_dict(action)
    except TypeError:  # a field that cannot be hashed: made afresh
        return {"kind": action_kind(action), **_fields(action)}


@functools.lru_cache(maxsize=4096)
def _action_dict(action: Action) -> dict[str, object]:
    return {"kind": action_kind(action), **_fields(action)}


@functools.cache
def _field_names(kind: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(kind))


def _fields(value: DataclassInstance) -> dict[str, object]:
    """A dataclass instance's fields as JSON-ready data (`_plain`)."""
    return {name: _plain(getattr(value, name)) for name in _field_names(type(value))}


def _plain(value: object) -> object:
    """`value` as JSON-ready data, as dataclasses.asdict makes it (tuples become lists),
    without asdict's deep copies of every string and number."""
    if is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- state ------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """Everything the engine needs to resume a call; stored between webhooks."""

    language: str
    node: str | None = None
    invalid: int = 0
    timeouts: int = 0
    digits: tuple[str, ...] = ()
    decision: str | None = None
    notice_heard: bool = False
    ended: bool = False
    step: int = 0
    # The run's facts the flow branches on (flags such as `hidden_caller`, `recording`),
    # and a transfer's `transfer_id` and `return_to`: JSON values, kept as JSON gives them.
    context: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready state."""
        return _fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> State:
        """Rebuild a stored state."""
        return cls(**{**data, "digits": tuple(data.get("digits", ()))})


class EngineError(Exception):
    """The flow cannot continue (a loop with no input, for example)."""


_MAX_HOPS = 200


def start(flow: Flow, context: Mapping[str, object] | None = None,
          language: str | None = None) -> tuple[State, list[Action]]:
    """Begin a call at the flow's start node; returns (state, actions)."""
    lang = language if language in flow.languages else flow.default_language
    state = State(language=lang, context=dict(context or {}))
    return _enter(flow, state, flow.start, [])


def advance(flow: Flow, state: State, inp: Input) -> tuple[State, list[Action]]:  # noqa: C901 - one branch per node kind: the state machine's table
    """Apply one input to a waiting call; returns (state, actions)."""
    if state.ended:
        return state, []
    state = replace(state, step=state.step + 1)
    if isinstance(inp, HangUp):
        return replace(state, ended=True, node=None), []
    node = flow.nodes[state.node] if state.node else None
    if node is None or node.type != "menu":
        raise EngineError(f"no menu is waiting for input (node {state.node!r})")
    actions: list[Action] = []
    if isinstance(inp, Digits):
        key = inp.value
        if key:
            state = replace(state, digits=(*state.digits, key))
        option = node.options.get(key)
        if option and (option.when is None or state.context.get(option.when)):
            return _choose(flow, state, option, actions)
        if node.default:
            return _enter(flow, state, node.default, actions)
        invalid = state.invalid + 1
        if invalid >= node.max_invalid:
            return _choose(flow, replace(state, invalid=invalid),
                           _defined(flow, node, node.on_exhausted, "'on_exhausted'"), actions)
        state = replace(state, invalid=invalid)
        actions += _plays(flow, state, node.invalid)
        actions.append(_gather(flow, state, node, node.reprompt or node.prompts))
        return state, actions
    # Timeout: silence is never a choice.
    if node.default:
        return _enter(flow, state, node.default, actions)
    timeouts = state.timeouts + 1
    if timeouts >= node.max_timeouts:
        return _choose(flow, replace(state, timeouts=timeouts),
                       _defined(flow, node, node.on_exhausted, "'on_exhausted'"), actions)
    state = replace(state, timeouts=timeouts)
    actions.append(_gather(flow, state, node, (*node.no_entry, *(node.reprompt or node.prompts))))
    return state, actions


def _defined(flow: Flow, node: Node, value: T | None, what: str) -> T:
    """A part of a node that a validated flow always has (the loader checks it)."""
    if value is None:
        raise EngineError(f"flow {flow.id}: node {node.id!r} has no {what}")
    return value


def _choose(flow: Flow, state: State, option: Option,
            actions: list[Action]) -> tuple[State, list[Action]]:
    if option.language:
        state = replace(state, language=option.language)
    if option.decision:
        if state.context.get(HIDDEN_CALLER):
            # A validated flow never gets here (loader: _check_hidden_callers).
            raise EngineError(f"flow {flow.id}: a caller with a hidden number cannot decide")
        state = replace(state, decision=option.decision)
        actions.append(Decide(option.decision, state.digits, state.language))
    return _enter(flow, state, option.next, actions)


def _plays(flow: Flow, state: State, prompt_ids: Iterable[str]) -> list[Play]:
    return [Play(p, state.language, flow.text(p, state.language)) for p in prompt_ids]


def _gather(flow: Flow, state: State, node: Node, prompt_ids: Iterable[str]) -> Gather:
    return Gather(tuple(_plays(flow, state, prompt_ids)), node.timeout, node.id)


def _enter(flow: Flow, state: State, node_id: str,
           actions: list[Action]) -> tuple[State, list[Action]]:
    for _ in range(_MAX_HOPS):
        node = flow.nodes[node_id]
        if node.type == "menu":
            state = replace(state, node=node.id, invalid=0, timeouts=0)
            actions.append(_gather(flow, state, node, node.prompts))
            return state, actions
        if node.type == "branch":
            condition = _defined(flow, node, node.condition, "'if'")
            taken = node.then if state.context.get(condition) else node.otherwise
            node_id = _defined(flow, node, taken, "'then' or 'else'")
            continue
        returning = node.type == "exit" and state.context.get("return_to")
        if not returning:  # a caller going back to an agent hears the return prompt only
            actions += _plays(flow, state, node.prompts)
        if node.type == "notice":
            state = replace(state, notice_heard=True)
            actions.append(NoticePlayed(node.prompts, state.language))
        if node.record and not state.context.get("recording"):
            state = replace(state, context={**state.context, "recording": True})
            actions.append(StartRecording())
        if node.type == "exit":
            actions += _exit(flow, state, node)
            return replace(state, node=None, ended=True), actions
        node_id = _defined(flow, node, node.next, "'next'")
    raise EngineError(f"flow {flow.id} loops without waiting for input")


def _exit(flow: Flow, state: State, node: Node) -> list[Action]:
    """The exit step: the node's own action, or where a transfer said to return."""
    ret = state.context.get("return_to")
    if node.action == "return" or ret:
        ret_to: Mapping[str, Any] = ret or {"type": "hangup"}
        asked = ret_to.get("type")
        kind = asked if asked in ("queue", "dial") else "hangup"
        prompt = [flow.return_prompts[kind]] if kind in flow.return_prompts else []
        out: list[Action] = [*_plays(flow, state, prompt)]
        if kind == "queue":
            return [*out, Enqueue(ret_to["name"])]
        if kind == "dial":
            return [*out, Dial(ret_to.get("number"), ret_to.get("client"))]
        return [*out, Hangup()]
    if node.action == "enqueue":
        return [Enqueue(_defined(flow, node, node.queue, "'queue'"))]
    if node.action == "dial":
        return [Dial(node.number, node.client)]
    return [Hangup()]


def digits_chose(flow: Flow | None, before: Mapping[str, Any] | None,
                 digits: str | None) -> bool:
    """Whether keys chose something in the menu a run waited in, given the state it had
    before them (the metrics' valid/invalid key press); True when that cannot be known."""
    if before is None or flow is None:
        return True
    node = flow.nodes.get(before.get("node") or "")
    if node is None or getattr(node, "type", None) != "menu":
        return True
    option = node.options.get(digits or "")
    context = before.get("context") or {}
    chosen = option is not None and (option.when is None or bool(context.get(option.when)))
    return chosen or bool(node.default)
