"""`python -m ivr`: serve, simulate, and the operator's and auditor's commands."""

from __future__ import annotations

import csv
import functools
import json
import sys
from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import ScriptInfo
from sqlalchemy.exc import SQLAlchemyError

from . import create_app
from .config import ConfigError
from .db import database, session
from .flow import InvalidFlow, load_flow, load_flows
from .pii import DataKeyError, personal_data


def _app():
    ctx = click.get_current_context(silent=True)
    info = ctx.find_object(ScriptInfo) if ctx else None
    if info is not None and info.create_app is not None:
        return info.load_app()
    return create_app()


def with_app(f):
    """Run the command inside an app context; configuration problems exit with one line."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            app = _app()
            with app.app_context():
                return f(*args, **kwargs)
        except (InvalidFlow, ConfigError, DataKeyError) as e:
            raise click.ClickException(str(e)) from None
        except SQLAlchemyError as e:
            first = str(getattr(e, "orig", e)).splitlines()[0]
            raise click.ClickException(
                f"database error: {first}. Is the database reachable and set up "
                "(python -m ivr db upgrade)?") from None

    return wrapper


def parse_when(value: str | None) -> datetime | None:
    """An ISO date or datetime from the command line, as UTC."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 date or time: {value}") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@click.group()
def cli():
    """IVR voice-flow engine for KVKK notices and marketing consent."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@with_app
def serve(host, port):
    """Start the service (development server; production uses gunicorn on wsgi:app)."""
    app = current_app._get_current_object()
    if app.config.get("TWILIO_AUTH_TOKEN_GENERATED"):
        click.echo(f"Development Twilio auth token (kept in {app.config['INSTANCE_DIR']}): "
                   f"{app.config['TWILIO_AUTH_TOKEN']}")
    click.echo(f"Public URL: {app.config['PUBLIC_URL']}  "
               f"(webhooks: /voice/incoming, /voice/status, /voice/recording)")
    app.run(host=host, port=port, threaded=True, debug=False, use_reloader=False)


@cli.command()
@click.option("--digits", default=None,
              help="Keys to press in order: 0-9 * #, 't' for silence, 'h' to hang up.")
@click.option("--url", default=None, help="Server base URL (default: IVR_PUBLIC_URL).")
@click.option("--in-process", is_flag=True, help="Run the app in this process, no server.")
@click.option("--from", "from_number", default="+905321234567", show_default=True)
@click.option("--to", "to_number", default="+902122223344", show_default=True)
@click.option("--call-sid", default=None, help="Use this CallSid (default: a random one).")
@with_app
def simulate(digits, url, in_process, from_number, to_number, call_sid):
    """Place a simulated call, signed exactly as Twilio signs, and print what is heard."""
    from .simulate import Caller, SimulationError, flask_transport, http_transport, manifest_texts

    app = current_app._get_current_object()
    base = (url or app.config["PUBLIC_URL"]).rstrip("/")
    texts = manifest_texts(app.config["AUDIO_DIR"])
    transport = None
    if not in_process:
        import requests

        try:
            requests.get(base + "/healthz", timeout=3)
            transport = http_transport()
        except requests.RequestException:
            click.echo(f"No server answers at {base}; running the app in-process instead.")
    if transport is None:
        database().create_all()
        transport = flask_transport(app.test_client())
        base = app.config["PUBLIC_URL"]
    caller = Caller(base, app.config["TWILIO_AUTH_TOKEN"], transport, from_number=from_number,
                    to_number=to_number, call_sid=call_sid, audio_texts=texts)
    interactive = digits is None
    keys = list(digits or "")

    def next_key():
        if interactive:
            return click.prompt("press (0-9*#, t=silence, h=hang up)", default="t",
                                show_default=False)
        return keys.pop(0) if keys else None

    click.echo(f"Calling {base}/voice/incoming as {from_number} (CallSid {caller.call_sid})")
    try:
        turn = caller.dial()
        while True:
            for i, h in enumerate(turn.heard):
                if turn.recording_started and i == turn.recording_after:
                    click.echo("  (recording starts)")
                click.echo(f"  caller hears: {h.text}")
            if turn.recording_started and turn.recording_after == len(turn.heard):
                click.echo("  (recording starts)")
            if not turn.gather_action:
                break
            key = next_key()
            if key is None or key == "h":
                click.echo("  caller hangs up")
                break
            click.echo(f"  caller presses: {'(silence)' if key == 't' else key}")
            turn = caller.press(turn, "" if key == "t" else key)
        caller.hang_up()
    except SimulationError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Call ended: {turn.end or 'hangup'}")


@cli.group()
def flows():
    """Flow files."""


@flows.command("check")
@click.argument("files", nargs=-1, type=click.Path())
def flows_check(files):
    """Validate flow files (default: IVR_FLOW and the flows folder)."""
    from .config import finalize, from_env

    try:
        if files:
            loaded = [load_flow(f) for f in files]
        else:
            cfg = finalize(from_env())
            loaded = [load_flow(cfg["FLOW"]), *load_flows(cfg["FLOWS_DIR"]).values()]
    except InvalidFlow as e:
        raise click.ClickException(str(e)) from None
    seen = set()
    for f in loaded:
        if f.source in seen:
            continue
        seen.add(f.source)
        click.echo(f"ok  {f.source}  id={f.id}  version={f.version}  nodes={len(f.nodes)}  "
                   f"languages={','.join(f.languages)}")


@cli.group()
def consents():
    """Consent records."""


@consents.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True)
@click.option("--since", default=None, help="ISO date/time (UTC), inclusive.")
@click.option("--until", default=None, help="ISO date/time (UTC), exclusive.")
@click.option("--out", type=click.File("w", encoding="utf-8"), default="-")
@with_app
def consents_export(fmt, since, until, out):
    """Export consent records, one per line."""
    from .consents import EXPORT_FIELDS, export_record
    from .reports import consents_query

    fields = [*EXPORT_FIELDS, "transfer_id"]
    pii = personal_data()
    q = consents_query(parse_when(since), parse_when(until))
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
    for rec in session().scalars(q.execution_options(yield_per=500)):
        row = {k: export_record(rec, pii)[k] for k in fields}
        if writer:
            writer.writerow({**row, "channels": json.dumps(row["channels"])})
        else:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


@cli.group()
def calls():
    """Calls and their transaction-security data."""


@calls.command("show")
@click.argument("call_sid")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_app
def calls_show(call_sid, as_json):
    """The timeline of one call, as the auditor's call page shows it."""
    from .reports import call_timeline, timeline_text

    data = call_timeline(session(), call_sid, personal_data())
    if data is None:
        click.echo(f"Unknown call: {call_sid}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    click.echo(timeline_text(data))


@cli.command("init-db")
@with_app
def init_db():
    """Create the database schema if it is not there."""
    database().create_all()
    click.echo("Database ready.")


def _register() -> None:
    from .accounts import users_cli
    from .audio.cli import audio
    from .audit.cli import audit_cli
    from .dbcli import db_cli
    from .kvkk.cli import register as kvkk_commands
    from .spool_cli import spool_cli

    cli.add_command(users_cli)
    cli.add_command(audio)
    cli.add_command(audit_cli)
    cli.add_command(db_cli)
    cli.add_command(spool_cli)
    kvkk_commands(cli)


_register()


def main() -> None:
    """Entry point of `python -m ivr`."""
    cli(prog_name="python -m ivr")
