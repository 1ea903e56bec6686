"""Spool replay: webhooks kept on disk while the database was away, applied through the
normal call verbs, in order, each in its own transaction."""

from __future__ import annotations

import logging
from datetime import datetime

from ..domain import twilio_form
from ..domain.twilio_form import INT32_MAX
from ..storage.db import session
from ..storage.spool import DrainReport, Later, spool
from ..storage.webhooks import prior_answer, record_webhook
from . import calls
from .calls import RunBehind, UnknownRun

log = logging.getLogger("ivr.spool")


def apply_record(record: dict) -> None:
    """Replay one spooled webhook through the normal verbs, in its own transaction.

    The record's form goes through the edge parser again: records written before the
    parser existed (plain JSON with Twilio's whole form) get the same ranges as new ones.
    Raises spool.Later when the record must wait for an earlier one."""
    ctx = calls.current_context()
    now = datetime.fromisoformat(record["received_at"])
    kind = record["kind"]
    if kind not in twilio_form.PARSERS:
        raise ValueError(f"unknown spool record kind {kind!r}")
    parsed = twilio_form.PARSERS[kind](record["form"])
    sid = parsed.call_sid if kind == "incoming" else parsed.call.call_sid
    s = session()
    try:
        with s.begin():
            if kind == "incoming":
                result = calls.incoming(s, ctx, parsed, now, exact_context=record["context"])
            elif kind == "gather":
                step = twilio_form.integer({"step": record.get("step")}, "step", sid)
                if step is None:  # without its step a replay could apply the keys twice
                    raise ValueError(f"gather record without a step in 0..{INT32_MAX}")
                result = calls.gather(s, ctx, str(record.get("run") or "")[:32], step, parsed,
                                      now)
            elif kind == "status":
                result = calls.status(s, ctx, parsed, now)
            else:
                result = calls.recording(s, ctx, parsed, now)
            token = str(record.get("token") or "")[:200] or None
            if prior_answer(s, token) is not None:
                token = None
            twiml = kind in ("incoming", "gather")
            record_webhook(s, path=str(record.get("path") or f"/voice/{kind}"), call_sid=sid,
                           token=token, received_at=now, outcome="spooled",
                           response=result if twiml else None)
    except (RunBehind, UnknownRun) as exc:
        s.rollback()
        raise Later(f"{type(exc).__name__}: the run has not reached this step") from None


def drain_if_pending(wait: float = 0.2, budget: float = 0.5) -> DrainReport | None:
    """Replay waiting records before serving a request (cheap when the spool is empty).

    A caller is waiting, so this drains for at most about `budget` seconds (and waits at
    most `wait` for another process's drain); the next requests go on where it stopped.
    A request whose call still has records waiting is spooled behind them
    (calls.RunBehind), so the order holds."""
    sp = spool()
    if not sp.pending():
        return None
    report = sp.drain(apply_record, wait=wait, budget=budget)
    if report.applied or report.stopped or report.quarantined:
        log.info("spool drain applied=%d waiting=%d quarantined=%d stopped=%s",
                 report.applied, report.waiting, len(report.quarantined), report.stopped)
    return report
