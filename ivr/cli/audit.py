"""`python -m ivr audit ...`: verify the chain, sign checkpoints, export the key, replay calls."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from sqlalchemy import func, select

from ..audit import checkpoint as cps
from ..audit.errors import AuditError, VerificationError
from ..audit.replay import replay_call, replay_range
from ..audit.verify import BATCH, segment, verify_chain
from ..storage.db import session
from ..storage.flowstore import flows
from ..storage.models import AuditEntry
from .context import parse_when, with_app


def _with_app(f):
    return with_app(f)


def _read_checkpoints(paths) -> list:
    out = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise click.ClickException(f"{path}: cannot read a checkpoint: {e}") from None
        try:
            out.append(cps.from_document(doc, f"checkpoint file {path}"))
        except AuditError as e:
            raise click.ClickException(str(e)) from None
    return out


def _read_public_keys(paths) -> dict:
    keys = cps.app_public_keys()
    for path in paths:
        try:
            keys.update(cps.public_keys(cps.load_public_key(Path(path).read_bytes())))
        except (OSError, AuditError) as e:
            raise click.ClickException(f"{path}: {e}") from None
    return keys


@click.group("audit")
def audit_cli():
    """The tamper-evident audit log: verify, checkpoints, public key, replay."""


@audit_cli.command("verify")
@click.option("--checkpoint", "checkpoint_files", multiple=True,
              type=click.Path(dir_okay=False),
              help="A checkpoint JSON kept outside the database (repeatable).")
@click.option("--public-key", "key_files", multiple=True, type=click.Path(dir_okay=False),
              help="PEM public key of a checkpoint signer besides the app's own (repeatable).")
@click.option("--progress", is_flag=True, help="Report progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(checkpoint_files, key_files, progress, as_json):
    """Stream the whole chain from seq 1: every hash, link and checkpoint signature.

    Exits 0 with a one-line summary, or 1 naming the first bad sequence number and the
    problem (body modified, entry deleted, entry inserted, order changed, checkpoint mismatch).
    """

    @_with_app
    def run():
        extra = _read_checkpoints(checkpoint_files)
        keys = _read_public_keys(key_files)
        report = (lambda seq: click.echo(f"  verified up to seq {seq}", err=True)) \
            if progress else None
        try:
            summary = verify_chain(session(), public_keys=keys, progress=report,
                                   checkpoints=extra)
        except VerificationError as e:
            if as_json:
                click.echo(json.dumps({"ok": False, **e.to_dict()}))
            else:
                click.echo(f"FAILED at seq {e.seq}: {e.problem}: expected {e.expected}, "
                           f"found {e.found}" + (f" ({e.detail})" if e.detail else ""))
            sys.exit(1)
        except AuditError as e:
            raise click.ClickException(str(e)) from None
        click.echo(json.dumps(summary.to_dict()) if as_json else summary.line())

    run()


@audit_cli.command("checkpoint")
def checkpoint():
    """Sign the chain head (seq, hash, time) and print the checkpoint as JSON."""

    @_with_app
    def run():
        try:
            key = cps.signing_key()
            s = session()
            with s.begin():
                row = cps.make_checkpoint(s, key)
        except AuditError as e:
            raise click.ClickException(str(e)) from None
        doc = cps.from_row(row).to_dict(public_key=cps.public_key_pem(key))
        click.echo(json.dumps(doc, indent=2))

    run()


@audit_cli.command("public-key")
def public_key():
    """Print the checkpoint signing key's public half (PEM); its key id goes to stderr."""

    @_with_app
    def run():
        try:
            key = cps.signing_key()
        except AuditError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"key id {cps.key_id(key)}", err=True)
        click.echo(cps.public_key_pem(key), nl=False)

    run()


@audit_cli.command("entries")
@click.option("--from", "first", type=int, default=1, show_default=True, help="First seq.")
@click.option("--to", "last", type=int, default=None, help="Last seq (default: the head).")
@click.option("--call", "call_sid", default=None, help="Only this call's entries.")
def entries(first, last, call_sid):
    """Print entries as JSON lines {seq, prev_hash, body, hash}, for outside verification."""


    @_with_app
    def run():
        s = session()
        if call_sid:
            q = (select(AuditEntry.seq, AuditEntry.prev_hash, AuditEntry.body, AuditEntry.hash)
                 .where(AuditEntry.ref == call_sid).order_by(AuditEntry.seq)
                 .execution_options(yield_per=BATCH))
            rows = ({"seq": r.seq, "prev_hash": r.prev_hash, "body": r.body, "hash": r.hash}
                    for r in s.execute(q))
        else:
            end = last if last is not None else (s.scalar(select(func.max(AuditEntry.seq))) or 0)
            rows = segment(s, first, end)
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))

    run()


@audit_cli.command("replay")
@click.argument("call_sid", required=False)
@click.option("--since", default=None, help="ISO date/time (UTC), inclusive.")
@click.option("--until", default=None, help="ISO date/time (UTC), exclusive.")
@click.option("--verbose", "-v", is_flag=True, help="With --since/--until: every path in full.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON lines).")
def replay(call_sid, since, until, verbose, as_json):
    """Re-run a call's recorded inputs through the engine and compare with the record.

    Give a CALL_SID, or --since/--until for every call whose flow started in that range.
    Exits 1 if any replay differs from what was stored, naming where the paths diverge.
    """

    if bool(call_sid) == bool(since or until):
        raise click.UsageError("give either CALL_SID or --since/--until")
    start, end = parse_when(since), parse_when(until)

    @_with_app
    def run():
        s = session()
        try:
            if call_sid:
                results = [replay_call(s, flows(), call_sid)]
            else:
                results = replay_range(s, flows(), start, end)
            bad = total = 0
            for r in results:
                total += 1
                bad += not r.ok
                if as_json:
                    click.echo(json.dumps(r.to_dict(), ensure_ascii=False))
                elif call_sid or verbose:
                    click.echo(r.render())
                else:
                    click.echo(r.summary())
                s.rollback()  # read-only; on SQLite this also lets writers in between calls
        except AuditError as e:
            raise click.ClickException(str(e)) from None
        if not call_sid and not as_json:
            click.echo(f"replayed {total} calls: {total - bad} ok, {bad} mismatched")
        if bad:
            sys.exit(1)

    run()
