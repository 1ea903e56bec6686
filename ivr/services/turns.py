"""One turn of a run, worked out before anything is written: its TwiML, the run's new
memory, the consent it decides and its audit entries. The webhooks (ivr/services/webhooks.py)
and the offline answers (ivr/services/offline.py) use the same plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ivr.domain.flow import Flow
from ivr.domain.flow import engine as e
from ivr.domain.notice_version import notice_version
from ivr.domain.times import AUDIT, utc_iso

from . import run_memory

# Where the consent's own entry goes among a turn's audit entries (it needs the row's id).
CONSENT_ENTRY = ("consent", None, None)


@dataclass
class TurnPlan:
    """What one turn writes."""

    twiml: str
    state: e.State
    step: int
    heard: dict
    notice: dict
    input: dict | None
    actions: list[dict]
    audit: list[tuple] = field(default_factory=list)
    decide: e.Decide | None = None
    notice_version: str | None = None


def plan_turn(ctx, flow: Flow, *, run_id: str, call_sid: str, state: e.State, actions: list,
              inp: e.Input | None, heard: dict, notice: dict,
              remember: bool = True) -> TurnPlan:
    """Plan the turn that takes a run to `state` with `actions` (after `inp`, if any).

    With `remember`, the next gather's URL carries the run's memory (ivr/services/
    run_memory.py); only when `heard` and `notice` are the run's whole memory."""
    step = state.step
    turn = ctx.renderer.turn(actions)
    heard = {**heard, **turn.audio}
    notice = {lang: list(items) for lang, items in notice.items()}
    inp_data = e.input_to_dict(inp) if inp is not None else None
    action_data = [e.action_to_dict(a) for a in actions]
    audit: list[tuple] = []
    if inp is not None:
        audit.append(("input.received", call_sid,
                      {"call_sid": call_sid, "run": run_id, "step": step, "input": inp_data}))
    audit.append(("prompts.played", call_sid,
                  {"call_sid": call_sid, "run": run_id, "step": step, "played": turn.played,
                   "actions": [a["kind"] for a in action_data
                               if a["kind"] not in ("play", "noticeplayed", "decide")]}))
    plan = TurnPlan(twiml="", state=state, step=step, heard=heard, notice=notice,
                    input=inp_data, actions=action_data, audit=audit)
    for a in actions:
        if isinstance(a, e.NoticePlayed):
            parts = [(p, flow.text(p, a.language), heard.get(p)) for p in a.prompts]
            version = notice_version(a.language, parts)
            notice[a.language] = _dedupe(notice.get(a.language, []) + [
                {"prompt": p, "audio": h} for p, _t, h in parts])
            audit.append(("notice.played", call_sid,
                          {"call_sid": call_sid, "run": run_id, "step": step,
                           "language": a.language, "prompts": list(a.prompts),
                           "audio": [h for _p, _t, h in parts], "notice_version": version}))
        elif isinstance(a, e.Decide):
            if plan.decide is not None:
                raise ValueError("a turn decides at most once")
            plan.decide = a
            plan.notice_version = _heard_notice_version(flow, notice, a.language)
            audit.append(CONSENT_ENTRY)
    if turn.twiml.find(ctx.renderer.NEXT_URL) >= 0:
        url = ctx.renderer.next_url(run_id, step + 1, flow.version, state,
                                    memory=run_memory.pack(heard, notice) if remember else None)
        plan.twiml = ctx.renderer.finish(turn, url)
    else:
        plan.twiml = turn.twiml
    return plan


def _dedupe(items: list[dict]) -> list[dict]:
    seen, out = set(), []
    for it in items:
        key = (it["prompt"], it["audio"])
        if key not in seen:
            seen.add(key)
            out.append(it)
    return out


def _heard_notice_version(flow: Flow, notice: dict, language: str) -> str | None:
    heard = notice.get(language)
    if not heard:
        return None
    return notice_version(language, [(h["prompt"], flow.text(h["prompt"], language), h["audio"])
                                     for h in heard])


def consent_values(plan: TurnPlan, flow: Flow, *, run_id: str, call_sid: str,
                   phone_hmac: str | None, phone_enc: str | None, agent_id: str | None,
                   transfer_id: str | None, captured_at: datetime) -> dict:
    """The consent row a deciding turn stores (every column but the id)."""
    d = plan.decide
    if d is None:
        raise ValueError(f"run {run_id}: the turn decides nothing")
    return dict(run_id=run_id, call_sid=call_sid, phone_hmac=phone_hmac, phone_enc=phone_enc,
                purpose=flow.purpose, channels=list(flow.channels), decision=d.decision,
                digits="".join(d.digits)[:200], language=d.language,
                notice_version=plan.notice_version, flow_version=flow.version,
                captured_at=captured_at, agent_id=agent_id, transfer_id=transfer_id,
                source="ivr", audio=dict(plan.heard))


CONSENT_VALUES = ("run_id", "call_sid", "phone_hmac", "purpose", "channels", "decision", "digits",
                  "language", "notice_version", "flow_version", "captured_at", "agent_id",
                  "transfer_id", "source", "audio")


def consent_entry(values: dict, consent_id: int | str) -> tuple[str, str | None, dict]:
    """The audit entry for a consent event; the phone appears only as its keyed HMAC.

    `consent_id` is the row's id, or a webhook's hole for it (the row is not written yet)."""
    kind = "consent.withdrawn" if values["decision"] == "withdrawn" else "consent.decided"
    return (kind, values["call_sid"], {
        "consent_id": consent_id, "call_sid": values["call_sid"], "run": values["run_id"],
        "phone": values["phone_hmac"], "purpose": values["purpose"],
        "channels": values["channels"], "decision": values["decision"],
        "digits": values["digits"], "language": values["language"],
        "notice_version": values["notice_version"], "flow_version": values["flow_version"],
        "captured_at": utc_iso(values["captured_at"], AUDIT), "agent_id": values["agent_id"],
        "transfer_id": values["transfer_id"], "source": values["source"],
        "audio": values["audio"],
    })
