"""`python -m ivr iys ...`: export to İYS, list what is pending, push batches."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click
from flask import current_app
from sqlalchemy import select

from ivr.domain import times
from ivr.domain.kvkk import iys
from ivr.domain.kvkk.businessdays import (
    HolidayConfigError,
    deadline_state,
    iys_deadline,
    load_calendar,
)
from ivr.domain.times import utcnow
from ivr.services.kvkk import iys_export, iys_push
from ivr.storage.kvkk_models import IysBatch
from ivr.web.current import personal_data, session

from .context import parse_when, with_app


def mask(phone: str | None) -> str:
    """A phone number shown to an operator: enough to recognise, not to dial."""
    if not phone:
        return "-"
    return phone[:6] + "*" * max(len(phone) - 8, 0) + phone[-2:] if len(phone) > 8 else "***"


def _calendar():
    try:
        return load_calendar(current_app.config.get("HOLIDAYS_FILE"))
    except HolidayConfigError as e:
        raise click.ClickException(str(e)) from None


def _token() -> str:
    token = current_app.config.get("IYS_TOKEN")
    if not token:
        raise click.ClickException("IVR_IYS_TOKEN is not set: the İYS endpoint needs a bearer "
                                   "token (set it in the environment, never in a file here)")
    return token


def _timeout() -> float:
    try:
        return float(current_app.config.get("IYS_TIMEOUT") or 30)
    except ValueError:
        raise click.ClickException("IVR_IYS_TIMEOUT must be a number of seconds") from None


@click.group("iys")
def iys_cli():
    """İYS (İleti Yönetim Sistemi): register marketing consents within 3 business days."""


def _push(url: str, only: list[str] | None = None, new: dict[str, bytes] | None = None) -> bool:
    """Push batches in creation order, stopping at the first that fails (order matters
    to İYS: a later date must never arrive before an earlier one). True if all went."""
    token, timeout = _token(), _timeout()
    s, pii = session(), personal_data()
    new = new or {}
    with s.begin():
        q = select(IysBatch).order_by(IysBatch.created_at, IysBatch.id)
        if only is not None:
            q = q.where(IysBatch.id.in_(only))
        else:
            q = q.where((IysBatch.status == "push_failed") | IysBatch.id.in_(list(new)))
        queue = list(s.scalars(q))
    if not queue:
        click.echo("Nothing to push.")
        return True
    for batch in queue:
        if batch.status in ("accepted", "rejected"):
            click.echo(f"  {batch.id}: already {batch.status}, not sent again")
            continue
        with s.begin():
            try:
                data = new.get(batch.id) or iys_export.rebuild(s, pii, batch)
            except iys_export.BatchUnavailable as e:
                raise click.ClickException(str(e)) from None
        answer = iys_push.send(url, token, data, timeout)
        with s.begin():
            batch = s.get_one(IysBatch, batch.id)
            iys_push.record_answer(s, batch, answer, url, utcnow())
        codes = ", ".join(f"{e['code']}" + (f" (record {e['index']})" if e["index"] is not None
                                            else "") for e in answer.errors)
        if answer.outcome == "accepted":
            click.echo(f"  {batch.id}: accepted, transactionId {answer.transaction_id}")
        elif answer.outcome == "rejected":
            click.echo(f"  {batch.id}: REJECTED (HTTP {answer.http_status}): {codes}. Records "
                       "İYS named are marked rejected; the others will go in the next export.")
        else:
            click.echo(f"  {batch.id}: FAILED (HTTP {answer.http_status or '-'}: {codes}); "
                       "retry with `.venv/bin/python -m ivr iys push URL`. Later batches were "
                       "held back.")
            return False
    return True


@iys_cli.command("export")
@click.option("--since", default=None, help="Only consent events from this ISO date/time (UTC).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the batch files (default: instance/iys).")
@click.option("--push", "push_url", default=None,
              help="Also send the batches to this İYS endpoint (token: IVR_IYS_TOKEN).")
@click.option("--batch-size", type=click.IntRange(1, iys.BATCH_MAX), default=iys.BATCH_MAX,
              show_default=True)
def export_cmd(since, out_dir, push_url, batch_size):  # noqa: C901 - the command's options and outcomes in one place
    """Write every pending consent decision as İYS batch files (JSON, ≤1000 records each)."""

    @with_app
    def run():
        if push_url:
            _token()
        cal = _calendar()
        s, pii, now = session(), personal_data(), utcnow()
        folder = Path(out_dir or current_app.config["IYS_OUT_DIR"])
        try:
            with s.begin():
                result = iys_export.export(s, pii, now=now, since=parse_when(since),
                                           out_dir=folder, size=batch_size)
        except iys.InvalidBatch as e:
            raise click.ClickException(f"internal error, nothing exported: {e}") from None
        except OSError as e:
            raise click.ClickException(f"cannot write batch files in {folder}: {e}") from None
        result.finalize()
        exported = result.count("export")
        click.echo(f"Exported {exported} record(s) in {len(result.batches)} batch(es)"
                   + (f" to {folder}" if result.batches else "") + ".")
        for b in result.batches:
            click.echo(f"  {b.id}: {b.count} records  {b.path}")
        codes = Counter(d.code for d in result.decisions if d.outcome == "skipped")
        if codes:
            click.echo(f"Not exported, reason recorded: {result.count('skipped')} "
                       f"({', '.join(f'{k} ×{v}' for k, v in sorted(codes.items()))}).")
        if result.count("superseded"):
            click.echo(f"Superseded by a later decision: {result.count('superseded')}.")
        late = [d for d in result.decisions if d.outcome == "export"
                and iys_deadline(d.candidate.consent_at, cal) < now]
        if late:
            click.echo(f"WARNING: {len(late)} exported record(s) are past the 3-business-day "
                       "İYS limit; İYS may refuse them (H467).", err=True)
        if push_url:
            ok = _push(push_url, new={b.id: b.body for b in result.batches})
            if not ok:
                raise SystemExit(1)

    run()


@iys_cli.command("push")
@click.argument("url")
@click.option("--batch", "batch_ids", multiple=True,
              help="Push this batch (default: every batch whose push failed).")
def push_cmd(url, batch_ids):
    """Send recorded batches to an İYS endpoint again (after a failed push)."""

    @with_app
    def run():
        if not _push(url, only=list(batch_ids) or None):
            raise SystemExit(1)

    run()


@iys_cli.command("pending")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pending_cmd(as_json):
    """List consent decisions not yet exported, with their 3-business-day deadlines."""

    @with_app
    def run():
        cal = _calendar()
        s, pii, now = session(), personal_data(), utcnow()
        with s.begin():
            decisions = iys_export.preview(s, pii)
        rows, moments = [], []
        for d in decisions:
            c = d.candidate
            deadline = iys_deadline(c.consent_at, cal)
            state = deadline_state(deadline, now, cal) if d.outcome == "export" else "-"
            moments.append((c.consent_at, deadline))
            rows.append({"consent_id": c.consent_id, "type": c.type, "status": c.status,
                         "recipient": mask(c.recipient), "consentDate": iys.consent_date(
                             c.consent_at), "deadline": deadline.strftime("%Y-%m-%d %H:%M:%S"),
                         "state": state, "action": d.outcome, "reason": d.reason})
        if as_json:
            click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        else:
            n_export = sum(1 for r in rows if r["action"] == "export")
            click.echo(f"Pending İYS records: {len(rows)} ({n_export} to export, "
                       f"{len(rows) - n_export} not to be exported)")
            if rows:
                click.echo(f"  {'consent':>7}  {'type':<6} {'status':<6} {'recipient':<15} "
                           f"{'state':<8} action; collected and deadline in {times.LABEL} "
                           "(UTC in brackets)")
            for (collected, deadline), r in zip(moments, rows, strict=True):
                click.echo(f"  {r['consent_id']:>7}  {r['type']:<6} {r['status']:<6} "
                           f"{r['recipient']:<15} {r['state'].upper():<8} {r['action']}"
                           + (f": {r['reason']}" if r["reason"] else ""))
                click.echo(f"           collected {times.text(collected)}; "
                           f"deadline {times.text(deadline)}")
        overdue = sum(1 for r in rows if r["state"] == "overdue")
        due = sum(1 for r in rows if r["state"] == "due")
        if overdue:
            click.echo(f"WARNING: {overdue} record(s) are PAST the 3-business-day İYS limit; "
                       "export them now (İYS may refuse them with H467).", err=True)
        if due:
            click.echo(f"WARNING: {due} record(s) reach the 3-business-day İYS limit within "
                       "one business day; run `.venv/bin/python -m ivr iys export`.", err=True)

    run()


@iys_cli.command("batches")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
def batches_cmd(limit):
    """The latest İYS batches and what became of them."""

    @with_app
    def run():
        s = session()
        with s.begin():
            rows = list(s.scalars(select(IysBatch).order_by(IysBatch.created_at.desc(),
                                                            IysBatch.id.desc()).limit(limit)))
        for b in rows:
            click.echo(f"{b.id}  {times.text(b.created_at)}  {b.record_count:>4} records"
                       f"  {b.status:<11} {times.value_or_dash(b.transaction_id)}")
        if not rows:
            click.echo("No İYS batches yet.")

    run()
