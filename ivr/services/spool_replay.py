"""Spool replay: webhooks kept on disk while the database was away, applied in order through
the very verbs (and database functions) the live webhooks use, each in one statement."""

from __future__ import annotations

import functools
import logging
from datetime import datetime

from ivr.domain import twilio_form
from ivr.domain.twilio_form import INT32_MAX
from ivr.storage.spool import DrainReport, Later, Spool

from . import calls, webhooks

log = logging.getLogger("ivr.spool")


def apply_record(ctx: calls.Context, record: dict) -> None:
    """Replay one spooled webhook through its webhook verb.

    The record's form goes through the edge parser again: records written before the
    parser existed (plain JSON with Twilio's whole form) get the same ranges as new ones.
    Raises spool.Later when the record must wait for an earlier one."""
    now = datetime.fromisoformat(record["received_at"])
    kind = record["kind"]
    if ("incoming" if kind == "transfer" else kind) not in twilio_form.PARSERS:
        raise ValueError(f"unknown spool record kind {kind!r}")
    form = record["form"]
    token = str(record.get("token") or "")[:200] or None
    path = str(record.get("path") or f"/voice/{kind}")
    label = "spooled"
    try:
        # Each kind calls its own parser by name, so its verb gets the form's own type.
        if kind == "incoming":
            webhooks.incoming(ctx, twilio_form.call_fields(form), now, token, path, label,
                              exact_context=record["context"])
        elif kind == "transfer":
            webhooks.transfer(ctx, str(record["transfer"])[:32], record.get("facts"),
                              twilio_form.call_fields(form), now, token, path, label,
                              exact={"context": record["context"],
                                     "language": record["language"]})
        elif kind == "gather":
            parsed = twilio_form.gather_input(form)
            step = twilio_form.integer({"step": record.get("step")}, "step",
                                       parsed.call.call_sid)
            if step is None:  # without its step a replay could apply the keys twice
                raise ValueError(f"gather record without a step in 0..{INT32_MAX}")
            webhooks.gather(ctx, str(record.get("run") or "")[:32], step, record.get("state"),
                            parsed, now, token, path, label)
        elif kind == "status":
            webhooks.status(ctx, twilio_form.status_callback(form), now, token, path, label)
        else:
            webhooks.recording(ctx, twilio_form.recording_callback(form), now, token, path,
                               label)
    except (webhooks.RunBehind, webhooks.UnknownRun) as exc:
        raise Later(f"{type(exc).__name__}: the run has not reached this step") from None


def drain_if_pending(sp: Spool, ctx: calls.Context, wait: float = 0.2,
                     budget: float = 0.5) -> DrainReport | None:
    """Replay waiting records before serving a request (cheap when the spool is empty).

    A caller is waiting, so this drains for at most about `budget` seconds (and waits at
    most `wait` for another process's drain); the next requests go on where it stopped.
    A request whose call still has records waiting is spooled behind them
    (calls.RunBehind), so the order holds."""
    if not sp.pending():
        return None
    report = sp.drain(functools.partial(apply_record, ctx), wait=wait, budget=budget)
    if report.applied or report.stopped or report.quarantined:
        log.info("spool drain applied=%d waiting=%d quarantined=%d stopped=%s",
                 report.applied, report.waiting, len(report.quarantined), report.stopped)
    return report
