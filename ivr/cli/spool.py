"""`python -m ivr spool status|drain|quarantine list|show|retry|discard`."""

from __future__ import annotations

import hashlib
import json

import click

from ivr.storage import audit_store
from ivr.storage.spool import UnreadableRecord
from ivr.web.current import apply_record, session, spool

from .context import with_app

# Shown as "[phone]" by `quarantine show`: the operator needs the record's shape, not the
# caller's number (the database keeps it encrypted, and so does the spool file).
_PHONE_FIELDS = ("From", "To")


@click.group("spool")
def spool_cli():
    """Webhooks kept on local disk while the database was unreachable."""


@spool_cli.command("status")
@with_app
def status():
    """How many records wait in this server's spool, and how many are quarantined."""
    sp = spool()
    click.echo(f"{sp.depth()} record(s) waiting in {sp.directory}")
    held = sp.quarantine_depth()
    click.echo(f"{held} record(s) quarantined in {sp.quarantine_dir}"
               + (": see `python -m ivr spool quarantine list`" if held else ""))


def _drain_and_report() -> int:
    sp = spool()
    report = sp.drain(apply_record)
    click.echo(f"applied {report.applied}, waiting {report.waiting}, "
               f"quarantined {len(report.quarantined)}, left {sp.depth()}"
               + (f" ({report.stopped})" if report.stopped else ""))
    for rid in report.quarantined:
        q, _path = sp.quarantine_entry(rid)
        click.echo(f"quarantined {rid}: {q.error}", err=True)
    return 1 if report.stopped else 0


@spool_cli.command("drain")
@with_app
def drain():
    """Replay the waiting records into the database, in order.

    Exits 1 if the drain stopped (database unreachable, or another process draining);
    records it could not apply are quarantined and named on stderr."""
    raise SystemExit(_drain_and_report())


@spool_cli.group("quarantine")
def quarantine():
    """Spooled records that could not be applied, kept aside with their error."""


def _entry(rid: str):
    try:
        return spool().quarantine_entry(rid)
    except KeyError:
        raise click.ClickException(f"no quarantined record {rid!r}: see "
                                   "`python -m ivr spool quarantine list`") from None


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@with_app
def quarantine_list(as_json: bool):
    """The quarantined records, oldest first: id, kind, call SID, when, and the error."""
    held = spool().quarantined()
    if as_json:
        click.echo(json.dumps([q.as_dict() for q in held], indent=2))
        return
    if not held:
        click.echo("no record in quarantine")
    for q in held:
        click.echo(f"{q.id}  {q.kind or '-'}  {q.call_sid or '-'}  {q.quarantined_at}  "
                   f"{q.error}")


@quarantine.command("show")
@click.argument("record_id")
@with_app
def quarantine_show(record_id: str):
    """One quarantined record: its error and its fields (phone numbers masked)."""
    q, path = _entry(record_id)
    doc = q.as_dict()
    try:
        record = spool().read(path)
    except UnreadableRecord as e:
        doc["record"] = None
        doc["unreadable"] = str(e)
    else:
        form = record.get("form")
        if isinstance(form, dict):
            record["form"] = {k: ("[phone]" if k in _PHONE_FIELDS and v else v)
                              for k, v in form.items()}
        doc["record"] = record
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True))


@quarantine.command("retry")
@click.argument("record_id")
@with_app
def quarantine_retry(record_id: str):
    """Put a quarantined record back in the spool and drain it (once the cause is fixed)."""
    _entry(record_id)
    with spool().lock(5) as got:
        if not got:
            raise click.ClickException("another process is draining the spool: try again")
        spool().release(record_id)
    click.echo(f"{record_id} is back in the spool")
    code = _drain_and_report()
    if spool().quarantine_depth() and record_id in {q.id for q in spool().quarantined()}:
        raise click.ClickException(f"{record_id} failed again and is back in quarantine")
    raise SystemExit(code)


@quarantine.command("discard")
@click.argument("record_id")
@click.option("--reason", default="", help="Why it is discarded (kept in the audit log).")
@with_app
def quarantine_discard(record_id: str, reason: str):
    """Delete a quarantined record for good; the audit log keeps an entry saying so."""

    with spool().lock(5) as got:  # no retry or drain moves it meanwhile
        if not got:
            raise click.ClickException("another process is draining the spool: try again")
        q, path = _entry(record_id)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        s = session()
        with s.begin():
            audit_store.append(s, [("spool.discarded", q.call_sid, {
                "record": q.id, "kind": q.kind, "call_sid": q.call_sid, "error": q.error,
                "received_at": q.received_at, "quarantined_at": q.quarantined_at,
                "file_sha256": digest, "reason": reason[:500]})])
        spool().remove_quarantined(record_id)
    click.echo(f"{record_id} discarded (audit entry spool.discarded)")
