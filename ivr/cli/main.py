"""`python -m ivr`: serve, simulate, and the operator's and auditor's commands."""

from __future__ import annotations

import csv
import json
import sys
from urllib.parse import urlsplit

import click
from flask import current_app

from ivr.adapters.twilio_standin import TwilioStandIn
from ivr.domain.config import finalize, from_env
from ivr.domain.flow import InvalidFlow, load_flow, load_flows
from ivr.domain.spreadsheet import safe_row
from ivr.services.consents import EXPORT_FIELDS, export_record
from ivr.services.reports import call_timeline, consents_query, timeline_text
from ivr.web.app import init_db_command
from ivr.web.current import personal_data, session
from ivr.web.logs import RequestLogHandler

from .audio import audio
from .audit import audit_cli
from .context import parse_when, with_app
from .db import db_cli
from .kvkk import register as kvkk_commands
from .simulate import simulate
from .spool import spool_cli
from .users import users_cli
from .witness import witness_cli


@click.group()
def cli():
    """IVR voice-flow engine for KVKK notices and marketing consent."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int, envvar="IVR_PORT",
              help="The port to serve on (also IVR_PORT).")
@with_app
def serve(host, port):
    """Start the service (development server; production uses gunicorn on wsgi:app)."""
    app = current_app._get_current_object()
    if app.config.get("TWILIO_AUTH_TOKEN_GENERATED"):
        click.echo(f"Development Twilio auth token (kept in {app.config['INSTANCE_DIR']}): "
                   f"{app.config['TWILIO_AUTH_TOKEN']}")
    if app.config.get("DATABASE_EMBEDDED"):
        click.echo(f"Database: the embedded PostgreSQL server in {app.config['INSTANCE_DIR']}/"
                   "pg (it keeps running after this: `.venv/bin/python -m ivr db stop-embedded`)")
    click.echo(f"Public URL: {app.config['PUBLIC_URL']}  "
               f"(webhooks: /voice/incoming, /voice/status, /voice/recording)")
    _host_twilio_standin(app)
    # The request log shows paths and allow-listed parameters only: never a phone number.
    app.run(host=host, port=port, threaded=True, debug=False, use_reloader=False,
            request_handler=RequestLogHandler)


def _host_twilio_standin(app) -> TwilioStandIn | None:
    """When IVR_TWILIO_API_URL names a port on this machine, answer there as Twilio (the
    development stand-in: call updates and recordings' media) for as long as we serve.
    Returns the running stand-in, if one was started."""
    api = urlsplit(app.config["TWILIO_API_URL"])
    if api.scheme != "http" or api.hostname not in ("127.0.0.1", "localhost") or not api.port:
        return None
    try:
        standin = TwilioStandIn(app.config["TWILIO_ACCOUNT_SID"],
                                app.config["TWILIO_AUTH_TOKEN"], api.port)
    except OSError as e:
        click.echo(f"Twilio: {app.config['TWILIO_API_URL']} (not hosted here: port {api.port} "
                   f"is taken, {e.strerror})")
        return None
    standin.__enter__()  # a daemon thread: it ends with the server
    click.echo(f"Twilio: the development stand-in on {standin.url} (call updates, and a "
               "short tone for every recording; ivr/adapters/twilio_standin.py)")
    return standin


@cli.group()
def flows():
    """Flow files."""


@flows.command("check")
@click.argument("files", nargs=-1, type=click.Path())
def flows_check(files):
    """Validate flow files (default: IVR_FLOW and the flows folder)."""

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
            writer.writerow(safe_row({**row, "channels": json.dumps(row["channels"])}))
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

    data = call_timeline(session(), call_sid, personal_data())
    if data is None:
        click.echo(f"Unknown call: {call_sid}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    click.echo(timeline_text(data))


# One init-db: the command Flask's own CLI gets (ivr/web/app.py), run inside our app context.
cli.command("init-db", help="Create the database schema if it is not there.")(
    with_app(init_db_command.callback))


def _register() -> None:
    cli.add_command(users_cli)
    cli.add_command(audio)
    cli.add_command(audit_cli)
    cli.add_command(db_cli)
    cli.add_command(spool_cli)
    cli.add_command(simulate)
    cli.add_command(witness_cli)
    kvkk_commands(cli)


_register()


def main() -> None:
    """Entry point of `python -m ivr`."""
    cli(prog_name=".venv/bin/python -m ivr")
