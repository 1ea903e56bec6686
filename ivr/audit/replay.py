"""Deterministic replay: a call's recorded inputs run again through the pure engine, under the
flow version recorded for the call, and compared step by step with what was stored.

Three records must agree: the engine's recomputed path, the stored turns and consent (mutable
tables), and the call's audit entries (the hash chain, which is what an auditor trusts).

This is the pure core: it takes the records as arguments. ivr/services/audit_replay.py reads
them from the database.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypedDict

from ivr.domain.flow import engine as e
from ivr.domain.flow.model import Flow
from ivr.domain.notice_version import notice_version

from .verify import EntriesStatus

AUDIT = ("audit log:", "replayed:")


# --- the records, as the caller reads them (ivr/storage/models.py) ----------------------


class StoredRun(Protocol):
    """A flow run as stored (a FlowRun row)."""

    @property
    def id(self) -> str: ...
    @property
    def origin(self) -> str: ...
    @property
    def flow_id(self) -> str: ...
    @property
    def flow_version(self) -> str: ...
    @property
    def state(self) -> dict[str, Any]: ...
    @property
    def step(self) -> int: ...
    @property
    def hangup_at(self) -> datetime | None: ...


class StoredTurn(Protocol):
    """One stored turn of a run (a Turn row): its input and the actions' JSON."""

    @property
    def step(self) -> int: ...
    @property
    def input(self) -> dict[str, Any] | None: ...
    @property
    def actions(self) -> list[Any]: ...


class StoredConsent(Protocol):
    """A stored consent decision (a Consent row), as far as the replay compares it."""

    @property
    def decision(self) -> str: ...
    @property
    def digits(self) -> str: ...
    @property
    def language(self) -> str | None: ...
    @property
    def notice_version(self) -> str | None: ...
    @property
    def flow_version(self) -> str | None: ...


class EntryBody(TypedDict):
    """An audit entry's body (ivr/audit/leaves.py); its data is JSON of the kind's shape."""

    kind: str
    at: str
    ref: str | None
    data: dict[str, Any]


class Note(Protocol):
    """Where a disagreement is noted: a Mismatch of the run being replayed."""

    def __call__(self, step: int | None, what: str, stored: object, replayed: object,
                 labels: tuple[str, str] = ...) -> None: ...


# --- the replay's results ---------------------------------------------------------------


class NoticeHeard(TypedDict):
    """A notice.played entry of a step: the prompts heard in full, and their audio (None
    where the entry lacks a field)."""

    language: str | None
    prompts: list[str] | None
    audio: list[str | None] | None
    notice_version: str | None


class HeardPrompt(TypedDict):
    """One notice prompt a caller heard, with the audio file played (None: <Say>)."""

    prompt: str
    audio: str | None


class Decision(TypedDict):
    """A consent decision, as the replay makes it and the consents table stores it."""

    decision: str
    digits: str
    language: str
    notice_version: str | None
    flow_version: str


@dataclass
class Played:
    """One prompt as the caller heard it."""

    prompt: str
    language: str
    text: str
    audio: str | None = None
    in_gather: bool = False


@dataclass
class Step:
    """One step of the recomputed path."""

    step: int
    at: str | None
    input: Mapping[str, str] | None
    played: list[Played] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    notice: list[NoticeHeard] = field(default_factory=list)
    decision: Decision | None = None


@dataclass
class Mismatch:
    """Where the replay and the record disagree."""

    run: str | None
    step: int | None
    what: str
    stored: object = None
    replayed: object = None
    labels: tuple[str, str] = ("stored", "replayed")

    def __str__(self) -> str:
        where = f"run {self.run[:12]}" if self.run else "the call"
        if self.step is not None:
            where += f" step {self.step}"
        a, b = self.labels
        return f"{where}: {self.what}: {a} {_short(self.stored)}, {b} {_short(self.replayed)}"


@dataclass
class RunReplay:
    """The replay of one flow run."""

    run_id: str
    origin: str
    flow_id: str
    flow_version: str
    language: str | None
    context: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    decision: Decision | None = None
    hung_up_at: str | None = None


@dataclass
class ReplayResult:
    """The replay of one call: each run's path, the chain status of its entries, mismatches."""

    call_sid: str
    runs: list[RunReplay] = field(default_factory=list)
    chain: EntriesStatus | None = None
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the recomputed path and decision equal the stored ones everywhere."""
        return not self.mismatches

    def summary(self) -> str:
        """One line: the call, its decisions and the verdict."""
        decisions = ", ".join(r.decision["decision"] if r.decision else "no decision"
                              for r in self.runs) or "no flow run"
        verdict = "ok" if self.ok else f"MISMATCH: {self.mismatches[0]}"
        return f"{self.call_sid}  {decisions}  {verdict}"

    def render(self) -> str:  # noqa: C901 - one line per part of the report, in reading order
        """The step-by-step path as text (for the CLI and the evidence package)."""
        out = [f"Replay of call {self.call_sid}"]
        if self.chain is not None:
            out.append(f"Audit entries: {self.chain.message}")
        if not self.runs:
            out.append("No flow run was recorded for this call.")
        for r in self.runs:
            out.append("")
            out.append(f"Run {r.run_id} (origin {r.origin})")
            out.append(f"  flow {r.flow_id}, version {r.flow_version}")
            out.append(f"  started in language {r.language}, context {_json(r.context)}")
            for s in r.steps:
                out.append(f"  step {s.step}  {s.at or '(time not recorded)'}  "
                           f"{_describe_input(s.input)}")
                for p in s.played:
                    where = "menu" if p.in_gather else "play"
                    out.append(f"    {where:<4} {p.prompt} [{p.language}] audio "
                               f"{p.audio or '(spoken by <Say>, no file)'}")
                    out.append(f"         \"{p.text}\"")
                for n in s.notice:
                    out.append(f"    notice played in full [{n['language']}]: "
                               f"{', '.join(n['prompts'] or [])}")
                if s.actions:
                    out.append(f"    then: {', '.join(s.actions)}")
                if s.decision:
                    d = s.decision
                    out.append(f"    DECISION {d['decision']} (keys {d['digits'] or '-'}, "
                               f"language {d['language']}, notice version "
                               f"{d.get('notice_version') or '-'})")
            if r.decision:
                out.append(f"  decision: {r.decision['decision']}, keys "
                           f"{r.decision['digits'] or '-'}, language {r.decision['language']}")
            else:
                out.append("  decision: none"
                           + (" (the caller hung up first)" if r.hung_up_at else ""))
        out.append("")
        if self.ok:
            out.append("Result: OK - the recomputed path and decision equal the stored ones, "
                       "and the audit entries agree.")
        else:
            out.append(f"Result: MISMATCH at {self.mismatches[0]}")
            for m in self.mismatches[1:]:
                out.append(f"  also: {m}")
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "call_sid": self.call_sid, "ok": self.ok,
            "chain": self.chain.to_dict() if self.chain else None,
            "mismatches": [{"run": m.run, "step": m.step, "what": m.what,
                            "stored": m.stored, "replayed": m.replayed, "labels": list(m.labels),
                            "message": str(m)}
                           for m in self.mismatches],
            "runs": [{"run": r.run_id, "origin": r.origin, "flow_id": r.flow_id,
                      "flow_version": r.flow_version, "language": r.language,
                      "context": r.context, "decision": r.decision,
                      "hung_up_at": r.hung_up_at,
                      "steps": [{"step": s.step, "at": s.at, "input": s.input,
                                 "played": [vars(p) for p in s.played], "actions": s.actions,
                                 "notice": s.notice, "decision": s.decision}
                                for s in r.steps]} for r in self.runs],
        }


def _json(v: object) -> str:
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _short(v: object) -> str:
    text = v if isinstance(v, str) else _json(v)
    return text if len(text) <= 300 else text[:297] + "..."


def _describe_input(inp: Mapping[str, str] | None) -> str:
    if inp is None:
        return "call answered, flow starts"
    if inp["type"] == "digits":
        return f"caller pressed {inp['digits']}"
    return "no key before the timeout" if inp["type"] == "timeout" else "caller hung up"


def _plays(actions: list[e.Action]) -> list[tuple[e.Play, bool]]:
    out: list[tuple[e.Play, bool]] = []
    for a in actions:
        if isinstance(a, e.Play):
            out.append((a, False))
        elif isinstance(a, e.Gather):
            out += [(p, True) for p in a.prompts]
    return out


def _kinds(actions: list[e.Action]) -> list[str]:
    return [e.action_kind(a) for a in actions
            if not isinstance(a, e.Play | e.NoticePlayed | e.Decide)]


def _first_difference(stored: Sequence[object],
                      replayed: Sequence[object]) -> tuple[int, object, object]:
    for i, (a, b) in enumerate(zip(stored, replayed, strict=False)):
        if a != b:
            return i, a, b
    i = min(len(stored), len(replayed))
    return i, stored[i] if i < len(stored) else None, replayed[i] if i < len(replayed) else None


class CallEntries:
    """A call's audit entries, indexed by run and step."""

    def __init__(self, entries: list[tuple[int, EntryBody]]) -> None:
        self.started: dict[str, list[EntryBody]] = {}
        self.inputs: dict[tuple[str, int], list[EntryBody]] = {}
        self.played: dict[tuple[str, int], list[EntryBody]] = {}
        self.notices: dict[tuple[str, int], list[EntryBody]] = {}
        self.decided: dict[str, list[EntryBody]] = {}
        for _seq, body in entries:
            d = body.get("data") or {}
            # As the entry says: an entry without them is indexed under None, and so
            # found by no run (call.started: reported as a run that is not stored).
            run: Any = d.get("run")
            step: Any = d.get("step")
            kind = body.get("kind")
            if kind == "call.started":
                self.started.setdefault(run, []).append(body)
            elif kind == "input.received":
                self.inputs.setdefault((run, step), []).append(body)
            elif kind == "prompts.played":
                self.played.setdefault((run, step), []).append(body)
            elif kind == "notice.played":
                self.notices.setdefault((run, step), []).append(body)
            elif kind in ("consent.decided", "consent.withdrawn"):
                self.decided.setdefault(run, []).append(body)


def replay_run(run: StoredRun, audit: CallEntries, problems: list[Mismatch],
               load_flow: Callable[[str], Flow], turns: Sequence[StoredTurn],
               consents: Sequence[StoredConsent]) -> RunReplay:
    """Replay one flow run (a FlowRun row) from its stored turns and consents, loading its
    recorded flow version with `load_flow`; each disagreement is appended to `problems`."""
    def mismatch(step: int | None, what: str, stored: object, replayed: object,
                 labels: tuple[str, str] = ("stored", "replayed")) -> None:
        problems.append(Mismatch(run.id, step, what, stored, replayed, labels))

    started = audit.started.get(run.id, [])
    info: dict[str, Any] = started[0]["data"] if len(started) == 1 else {}
    rr = RunReplay(run.id, run.origin, run.flow_id, run.flow_version, info.get("language"),
                   dict(info.get("context") or {}))
    flow = _run_flow(run, started, info, load_flow, turns, mismatch)
    if flow is None:
        return rr
    heard_notice: dict[str, list[HeardPrompt]] = {}
    decisions: list[Decision] = []
    state: e.State | None = None
    diverged = False
    for turn in turns:
        k = turn.step
        state, actions, at, diverged = _replay_turn(run, turn, flow, rr, state, started, audit,
                                                    mismatch)
        if diverged:
            break
        step = _compare_audit(run, k, at, turn.input, actions, audit, mismatch)
        _note_heard_and_decided(actions, step, flow, heard_notice, decisions)
        rr.steps.append(step)

    if not diverged and state is not None and state.to_dict() != run.state:
        mismatch(run.step, "the run's stored state differs from the replayed state",
                 run.state, state.to_dict())
    _check_hang_up(run, flow, turns, audit, rr, state, mismatch, diverged)
    rr.decision = decisions[-1] if decisions else None
    if not diverged:
        _check_decisions(consents, run, decisions, audit, mismatch)
    return rr


def _run_flow(run: StoredRun, started: list[EntryBody], info: dict[str, Any],
              load_flow: Callable[[str], Flow], turns: Sequence[StoredTurn],
              mismatch: Note) -> Flow | None:
    """The run's recorded flow version, after checking its call.started entry and that its
    turns are steps 0..n; None (with the mismatch noted) when it cannot be replayed."""
    if len(started) != 1:
        mismatch(0, "the audit log must hold exactly one call.started entry for the run",
                 f"{len(started)} entries", "1 entry", ("found", "expected"))
        return None
    if info.get("flow_version") != run.flow_version:
        mismatch(0, "flow version", run.flow_version, info.get("flow_version"),
                 ("flow_runs:", "audit log:"))
    try:
        flow = load_flow(info.get("flow_version") or run.flow_version)
    except LookupError as exc:
        mismatch(0, "the recorded flow version cannot be loaded", run.flow_version, str(exc),
                 ("version", "error"))
        return None
    if [t.step for t in turns] != list(range(run.step + 1)):
        mismatch(None, f"stored turns are not steps 0..{run.step}",
                 [t.step for t in turns], list(range(run.step + 1)), ("found", "expected"))
    return flow


def _replay_turn(run: StoredRun, turn: StoredTurn, flow: Flow, rr: RunReplay,
                 state: e.State | None, started: list[EntryBody], audit: CallEntries,
                 mismatch: Note) -> tuple[e.State | None, list[e.Action], str | None, bool]:
    """(state, actions, when, diverged) of one stored turn run through the engine again;
    `diverged` when the replay parts from the stored run there (the mismatch is noted). The
    state is the engine's after the turn, or the one before it when no step could be made."""
    k = turn.step
    inputs = audit.inputs.get((run.id, k), [])
    at: str | None
    if k == 0:
        at = started[0]["at"]
        if turn.input is not None:
            mismatch(0, "the first turn has an input", turn.input, None, ("found", "expected"))
        state, actions = e.start(flow, rr.context, rr.language)
    else:
        at = inputs[0]["at"] if inputs else None
        audit_input = inputs[0]["data"]["input"] if len(inputs) == 1 else None
        if audit_input != turn.input:
            mismatch(k, "input: the turn and the audit entry disagree", turn.input,
                     audit_input if inputs else "no input.received entry",
                     ("turn:", "audit log:"))
        if turn.input is None:
            mismatch(k, "no input stored for the step", None, "an input",
                     ("found", "expected"))
            return state, [], at, True
        if state is None:  # there was no step 0 to start from (noted already)
            mismatch(k, "the engine refuses the stored input", turn.input,
                     "no state to step from")
            return state, [], at, True
        try:
            state, actions = e.advance(flow, state, e.input_from_dict(turn.input))
        except (e.EngineError, KeyError, TypeError, AttributeError) as exc:
            mismatch(k, "the engine refuses the stored input", turn.input, str(exc))
            return state, [], at, True
    replayed = [e.action_to_dict(a) for a in actions]
    if replayed != turn.actions:
        i, a, b = _first_difference(turn.actions, replayed)
        mismatch(k, f"paths diverge at action {i}", a, b)
        return state, actions, at, True
    return state, actions, at, False


def _note_heard_and_decided(actions: list[e.Action], step: Step, flow: Flow,
                            heard_notice: dict[str, list[HeardPrompt]],
                            decisions: list[Decision]) -> None:
    """What of the notice a turn played (by language), and the decision it made with the
    notice version the caller had heard by then."""
    for a in actions:
        if isinstance(a, e.NoticePlayed):
            recorded = next((n["audio"] for n in step.notice
                             if n["language"] == a.language and n["prompts"] == list(a.prompts)),
                            None)
            audio = recorded if recorded is not None else [None] * len(a.prompts)
            heard = heard_notice.setdefault(a.language, [])
            for p, h in zip(a.prompts, audio, strict=False):
                if {"prompt": p, "audio": h} not in heard:
                    heard.append({"prompt": p, "audio": h})
        elif isinstance(a, e.Decide):
            heard_in = heard_notice.get(a.language)
            version = notice_version(a.language, [
                (h["prompt"], flow.text(h["prompt"], a.language), h["audio"])
                for h in heard_in]) if heard_in else None
            step.decision = {"decision": a.decision, "digits": "".join(a.digits),
                             "language": a.language, "notice_version": version,
                             "flow_version": flow.version}
            decisions.append(step.decision)


def _compare_audit(run: StoredRun, k: int, at: str | None, inp: Mapping[str, str] | None,
                   actions: list[e.Action], audit: CallEntries, mismatch: Note) -> Step:
    """The step as played, checked against its prompts.played and notice.played entries."""
    plays = _plays(actions)
    played_entries = audit.played.get((run.id, k), [])
    step = Step(k, at, inp, actions=_kinds(actions))
    stored_played = played_entries[0]["data"].get("played", []) if len(played_entries) == 1 else []
    if len(played_entries) != 1:
        mismatch(k, "the audit log must hold one prompts.played entry for the step",
                 f"{len(played_entries)} entries", "1 entry", ("found", "expected"))
    elif [(p["prompt"], p["language"]) for p in stored_played] != \
            [(p.prompt, p.language) for p, _g in plays]:
        mismatch(k, "prompts played", [p["prompt"] for p in stored_played],
                 [p.prompt for p, _g in plays], AUDIT)
    elif played_entries[0]["data"].get("actions") != step.actions:
        mismatch(k, "actions", played_entries[0]["data"].get("actions"), step.actions, AUDIT)
    audio = [p.get("audio") for p in stored_played] + [None] * len(plays)
    step.played = [Played(p.prompt, p.language, p.text, audio[i], g)
                   for i, (p, g) in enumerate(plays)]
    notices = audit.notices.get((run.id, k), [])
    replayed_notices = [(a.language, list(a.prompts)) for a in actions
                        if isinstance(a, e.NoticePlayed)]
    stored_notices = [(n["data"].get("language"), n["data"].get("prompts")) for n in notices]
    if stored_notices != replayed_notices:
        mismatch(k, "notice played", stored_notices, replayed_notices, AUDIT)
    step.notice = [{"language": n["data"].get("language"), "prompts": n["data"].get("prompts"),
                    "audio": n["data"].get("audio"),
                    "notice_version": n["data"].get("notice_version")} for n in notices]
    return step


def _check_hang_up(run: StoredRun, flow: Flow, turns: Sequence[StoredTurn], audit: CallEntries,
                   rr: RunReplay, state: e.State | None, mismatch: Note,
                   diverged: bool) -> None:
    """A hang-up is the last input: the run's mark and the audit entry must agree."""
    after = len(turns)
    entries = audit.inputs.get((run.id, after), [])
    hang = [x for x in entries if x["data"].get("input") == {"type": "hangup"}]
    if hang and run.hangup_at is None:
        mismatch(after, "the audit log records a hang-up the run does not", "no hang-up",
                 "hangup", ("flow_runs:", "audit log:"))
    if run.hangup_at is not None and not hang:
        mismatch(after, "the run records a hang-up the audit log does not", "hangup",
                 "no hang-up", ("flow_runs:", "audit log:"))
    extra = sorted(s for (r, s) in audit.inputs if r == run.id and s > after)
    if len(entries) > len(hang):
        extra.insert(0, after)
    if extra:
        mismatch(extra[0], "the audit log records an input with no stored turn",
                 "no turn", audit.inputs[(run.id, extra[0])][0]["data"].get("input"),
                 ("flow_turns:", "audit log:"))
    if hang:
        rr.hung_up_at = hang[0]["at"]
        if not diverged and state is not None:
            _state, actions = e.advance(flow, state, e.HangUp())
            if actions:
                mismatch(after, "a hang-up must end the run with no action", [],
                         [e.action_to_dict(a) for a in actions])
        rr.steps.append(Step(after, hang[0]["at"], {"type": "hangup"}))


def _check_decisions(stored: Sequence[StoredConsent], run: StoredRun,
                     decisions: list[Decision], audit: CallEntries, mismatch: Note) -> None:
    fields = ("decision", "digits", "language", "notice_version", "flow_version")
    stored_rows = [{f: getattr(c, f) for f in fields} for c in stored]
    if stored_rows != decisions:
        mismatch(run.step, "decision", stored_rows or None, decisions or None,
                 ("consents table:", "replayed:"))
    entries = [{f: d["data"].get(f) for f in fields} for d in audit.decided.get(run.id, [])]
    if entries != decisions:
        mismatch(run.step, "decision", entries or None, decisions or None, AUDIT)
