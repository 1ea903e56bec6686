"""`python -m ivr subject ...`: Article 11 reports, requests and erasure."""

from __future__ import annotations

import json
from datetime import date

import click
from flask import current_app

from ivr.domain.kvkk.businessdays import local_date
from ivr.domain.times import utcnow
from ivr.services.kvkk import subject_requests as sr
from ivr.services.kvkk.runner import destroy
from ivr.services.kvkk.subject_report import LANGS, build, render_text
from ivr.services.kvkk.withdrawals import WithdrawalError, e164
from ivr.storage import audit_store
from ivr.web.current import personal_data, session

from .context import with_app
from .kvkk_retention import load, print_plan, twilio_account


def _phone(raw: str) -> str:
    try:
        return e164(raw)
    except WithdrawalError as e:
        raise click.ClickException(str(e).replace("'phone'", "PHONE")) from None


@click.group("subject")
def subject_cli():
    """Data subjects' requests under KVKK Article 11 (answered within 30 days)."""


@subject_cli.command("report")
@click.argument("phone")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--lang", type=click.Choice(LANGS), default="tr", show_default=True)
@click.option("--by", default=None, help="Who asks for the report (recorded in the audit log).")
@click.option("--out", type=click.File("w", encoding="utf-8"), default="-")
def report_cmd(phone, fmt, lang, by, out):
    """Everything held about a phone number: calls, recordings, consents, the notice's
    purposes, legal bases and recipients, and how to use each right."""

    @with_app
    def run():
        number = _phone(phone)
        s, pii, now = session(), personal_data(), utcnow()
        policy = load()
        with s.begin():
            report = build(s, pii, number, policy, lang, now)
            # Who saw whose data, and when: the report is itself an audit fact.
            audit_store.append(s, [("subject.report", None, {
                "phone": pii.fingerprint(number), "format": fmt, "language": lang,
                "by": (by or "")[:100] or None, "calls": len(report["calls"]),
                "consent_events": sum(len(v) for v in report["consents"]["history"].values()),
            })], at=now)
        if fmt == "json":
            out.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
        else:
            out.write(render_text(report))

    run()


@subject_cli.group("request")
def request_cli():
    """Log requests, close them, and see which are due."""


def _received(value: str | None) -> date:
    if not value:
        return local_date(utcnow())
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not a date (YYYY-MM-DD): {value}") from None


@request_cli.command("open")
@click.argument("phone")
@click.option("--kind", type=click.Choice(sr.KINDS), required=True)
@click.option("--channel", type=click.Choice(sr.RECEIVED_BY), default="email",
              show_default=True, help="How the request arrived.")
@click.option("--received", default=None, help="The day it was received (default: today).")
@click.option("--note", default=None, help="A note (stored encrypted).")
def request_open(phone, kind, channel, received, note):
    """Log a request received from a data subject."""

    @with_app
    def run():
        number = _phone(phone)
        received_on = _received(received)
        s = session()
        try:
            with s.begin():
                req = sr.open_request(s, personal_data(), phone=number, kind=kind,
                                      channel=channel, received_on=received_on, note=note,
                                      now=utcnow())
        except sr.RequestError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"Opened request #{req.id} ({req.kind}), received {req.received_on}, "
                   f"answer due by {req.due_on}.")

    run()


@request_cli.command("close")
@click.argument("request_id", type=int)
@click.option("--outcome", required=True, help="What was done or answered.")
@click.option("--erase", is_flag=True,
              help="Erase the subject's data first (where no legal duty to keep applies).")
def request_close(request_id, outcome, erase):
    """Close a request; with --erase, honour an erasure request first."""

    @with_app
    def run():
        s, pii = session(), personal_data()
        with s.begin():
            req = s.get(sr.SubjectRequest, request_id)
            if req is None:
                raise click.ClickException(f"no request #{request_id}")
            if req.status == "closed":
                raise click.ClickException(f"request #{request_id} is already closed")
            phone = pii.decrypt(req.phone_enc) if req.phone_enc else None
        if erase:
            if phone is None:
                raise click.ClickException(f"request #{request_id} no longer holds a number")
            _erase(phone, request_id, dry_run=False)
        try:
            with s.begin():
                req = sr.close_request(s, pii, request_id, outcome=outcome, now=utcnow())
        except sr.RequestError as e:
            raise click.ClickException(str(e)) from None
        late = "" if local_date(req.closed_at) <= req.due_on else " (LATE: it was due " \
            f"{req.due_on})"
        click.echo(f"Closed request #{req.id}{late}.")

    run()


@request_cli.command("list")
@click.option("--all", "include_closed", is_flag=True, help="Closed requests too.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def request_list(include_closed, as_json):
    """Requests by due date, flagging those due within 7 days or overdue (30-day limit)."""

    @with_app
    def run():
        s = session()
        today = local_date(utcnow())
        with s.begin():
            rows = [{"id": r.id, "kind": r.kind, "channel": r.channel,
                     "received_on": r.received_on.isoformat(), "due_on": r.due_on.isoformat(),
                     "days_left": (r.due_on - today).days if r.status == "open" else None,
                     "state": sr.due_state(r, today)}
                    for r in sr.list_requests(s, include_closed)]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            click.echo("No open requests." if not include_closed else "No requests.")
            return
        click.echo(f"{'#':>5}  {'kind':<20} {'received':<10}  {'due':<10}  {'days left':>9}  state")
        for r in rows:
            left = "-" if r["days_left"] is None else str(r["days_left"])
            click.echo(f"{r['id']:>5}  {r['kind']:<20} {r['received_on']:<10}  {r['due_on']:<10}"
                       f"  {left:>9}  {r['state'].upper()}")
        overdue = sum(1 for r in rows if r["state"] == "overdue")
        soon = sum(1 for r in rows if r["state"] == "due soon")
        if overdue:
            click.echo(f"WARNING: {overdue} request(s) are past the 30-day limit (KVKK Art. 13).",
                       err=True)
        if soon:
            click.echo(f"WARNING: {soon} request(s) are due within {sr.SOON_DAYS} days.",
                       err=True)

    run()


def _erase(phone: str, request_id: int | None, dry_run: bool) -> None:
    s, pii, now = session(), personal_data(), utcnow()
    policy = load()
    subject = pii.fingerprint(phone)
    reason = f"erasure request #{request_id}" if request_id else "erasure request"
    p, outcome = destroy(s, policy, twilio_account(current_app.config), now=now,
                         dry_run=dry_run, reason=reason, kind="subject.erased", subject=subject,
                         ref=f"request:{request_id}" if request_id else None,
                         audit={"phone": subject, "request": request_id})
    print_plan(p, outcome, dry_run)
    if p.kept:
        click.echo("Kept (a legal duty to keep applies):")
        for k in p.kept:
            until = f"until {k['until']:%Y-%m-%d}" if k["until"] else "while it is needed"
            click.echo(f"  {k['category']:<21} {k['ref']:<44} {until}: {k['why']}")


@subject_cli.command("erase")
@click.argument("phone")
@click.option("--request", "request_id", type=int, default=None,
              help="The erasure request this honours.")
@click.option("--dry-run", is_flag=True, help="Show what would be erased; change nothing.")
def erase_cmd(phone, request_id, dry_run):
    """Erase a person's data where no legal duty to keep applies; say what is kept and why."""

    @with_app
    def run():
        _erase(_phone(phone), request_id, dry_run)

    run()
