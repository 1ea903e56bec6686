"""`python -m ivr simulate`: a call placed as Twilio would place it, printed as it is heard.

Where the call goes: `--url URL` (an error if nothing answers there), `--in-process` (the
app inside this command, its logs on stderr), or by default the configured IVR_PUBLIC_URL
(http://127.0.0.1:5000, where `make run` serves), again an error if nothing answers.
"""

from __future__ import annotations

import re
import secrets
from contextlib import ExitStack
from urllib.parse import urlsplit

import click
import phonenumbers
import requests
from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ivr.adapters.simulate import (
    Caller,
    SimulationError,
    Turn,
    flask_transport,
    http_transport,
    manifest_seconds,
    manifest_texts,
)
from ivr.adapters.twilio_standin import RemoteStandIn, TwilioStandIn
from ivr.storage.models import Call, Consent
from ivr.web.current import database, session
from ivr.web.transfers import twilio_settings

from .context import with_app

PREFIX = ".venv/bin/python -m ivr"
KEYS = re.compile(r"[0-9*#th]*")
SILENCE, HANG_UP = "t", "h"
# Where a transferred caller goes back to: the agent's queue.
RETURN_QUEUE = "agents"


def check_digits(ctx, param, value: str | None) -> str | None:
    """--digits: 0-9 * # are keys, 't' is a silence until the timeout, 'h' hangs up."""
    if value is not None and not KEYS.fullmatch(value):
        bad = sorted(set(value) - set("0123456789*#th"))
        raise click.BadParameter(
            f"{''.join(bad)!r} is not a key: use 0-9 * #, 't' for a silence, 'h' to hang up")
    return value


def check_phone(ctx, param, value: str) -> str:
    """--from/--to: an E.164 number, or a Turkish one (0532 123 45 67), sent as E.164."""
    try:
        number = phonenumbers.parse(value, "TR")
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise click.BadParameter(f"{value!r} is not a valid phone number: give it in E.164 "
                                 "(+905321234567) or as a Turkish number (0532 123 45 67)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _answers(base: str) -> bool:
    try:
        requests.get(base + "/healthz", timeout=3)
    except requests.RequestException:
        return False
    return True


def _where(url: str | None, in_process: bool, app) -> str:
    """The base URL to call; an error when no server answers there."""
    if url and in_process:
        raise click.UsageError("give either --url or --in-process, not both")
    if in_process:
        return app.config["PUBLIC_URL"]
    base = (url or app.config["PUBLIC_URL"]).rstrip("/")
    if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
        raise click.BadParameter(f"{base!r} is not an http(s) URL", param_hint="--url")
    if not _answers(base):
        origin = "--url" if url else "IVR_PUBLIC_URL"
        raise click.ClickException(
            f"no server answers at {base} ({origin}). Start one (`make run`), or run the app "
            f"inside this command: {PREFIX} simulate --in-process")
    return base


def _print_turn(turn: Turn) -> None:
    for i, heard in enumerate(turn.heard):
        if turn.recording_started and i == turn.recording_after:
            click.echo("  (recording starts)")
        click.echo(f"  caller hears: {heard.text}")
    if turn.recording_started and turn.recording_after == len(turn.heard):
        click.echo("  (recording starts)")


def _follow(caller: Caller, turn: Turn, next_key) -> Turn:
    """Play the call out from `turn`: print what is heard, press keys, until it ends."""
    while True:
        _print_turn(turn)
        if not turn.gather_action:
            return turn
        key = next_key()
        if key is None or key == HANG_UP:
            click.echo("  caller hangs up")
            return turn
        click.echo(f"  caller presses: {'(silence)' if key == SILENCE else key}")
        turn = caller.press(turn, "" if key == SILENCE else key)


def _decision(call_sid: str) -> str | None:
    """The decision recorded for the call, or None when this command's database does not
    know the call (a server with a database of its own)."""
    try:
        s = session()
        with s.begin():
            if s.get(Call, call_sid) is None:
                return None
            decision = s.scalar(select(Consent.decision).where(Consent.call_sid == call_sid)
                                .order_by(Consent.captured_at.desc(), Consent.id.desc())
                                .limit(1))
    except SQLAlchemyError:
        return None
    return decision or "none (no decision was recorded: the caller hung up before choosing)"


def _transfer(caller: Caller, api, standin: TwilioStandIn | RemoteStandIn) -> tuple[str, Turn]:
    """An agent sends the live call into the consent flow; Twilio fetches the new TwiML.
    Returns the transfer's id and the first turn of the flow."""
    standin.set_status(caller.call_sid, "in-progress")
    click.echo(f"  the caller is talking to an agent; the agent transfers the call "
               f"(return to queue {RETURN_QUEUE!r})")
    status, body = api("POST", "/api/transfers", {
        "call_sid": caller.call_sid, "return_to": {"type": "queue", "name": RETURN_QUEUE}},
        {"Idempotency-Key": secrets.token_hex(8)})
    if status != 201:
        raise click.ClickException(f"the transfer was refused (HTTP {status}): "
                                   f"{body.get('message') or body}")
    click.echo(f"  transfer {body['id']}: {body['status']}")
    redirect = standin.next_redirect(timeout=5, call_sid=caller.call_sid)
    if redirect is None:
        raise click.ClickException(
            "the server did not ask the Twilio stand-in to redirect the call; is it "
            f"started with IVR_TWILIO_API_URL={standin.url}?")
    return body["id"], caller.fetch(redirect[1])


def _agent_api(app, in_process: bool, base: str, token: str):
    """The server's API as the agent calls it: in this process, or over HTTP."""
    auth = {"Authorization": f"Bearer {token}"}
    if in_process:
        client = app.test_client()

        def call(method, path, body=None, headers=None):
            r = client.open(path, method=method, json=body, headers={**auth, **(headers or {})})
            return r.status_code, r.get_json(silent=True) or {}
    else:
        def call(method, path, body=None, headers=None):
            r = requests.request(method, base + path, json=body, timeout=30,
                                 headers={**auth, **(headers or {})})
            try:
                return r.status_code, r.json()
            except ValueError:
                return r.status_code, {"message": r.text[:200]}
    return call


def _standin(app, in_process: bool) -> TwilioStandIn | RemoteStandIn:
    """The Twilio stand-in, where the app's REST client will look for Twilio: this
    command's own, or the one `ivr serve` already hosts on that port."""
    cfg = app.config
    if in_process:
        standin = TwilioStandIn(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"])
        cfg["TWILIO_API_URL"] = standin.url
        app.extensions["ivr_twilio_rest"] = twilio_settings(cfg)
        return standin
    api = urlsplit(cfg["TWILIO_API_URL"])
    if api.scheme != "http" or api.hostname not in ("127.0.0.1", "localhost") or not api.port:
        raise click.ClickException(
            f"--transfer answers as Twilio's REST API on a local port, but IVR_TWILIO_API_URL "
            f"is {cfg['TWILIO_API_URL']}. Start the server and this command with the same "
            "IVR_TWILIO_API_URL=http://127.0.0.1:5099, or use --in-process")
    try:
        return TwilioStandIn(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"], api.port)
    except OSError as e:
        hosted = RemoteStandIn.found_at(cfg["TWILIO_API_URL"])
        if hosted is not None:
            return hosted
        raise click.ClickException(f"cannot answer as Twilio on port {api.port}: "
                                   f"{e.strerror}") from None


@click.command()
@click.option("--digits", default=None, callback=check_digits,
              help="Keys to press in order: 0-9 * #, 't' for silence, 'h' to hang up "
                   "(default: ask for each key).")
@click.option("--url", default=None,
              help="Server base URL (default: IVR_PUBLIC_URL); an error if nothing answers.")
@click.option("--in-process", is_flag=True,
              help="Run the app inside this command, no server; its logs go to stderr.")
@click.option("--from", "from_number", default="+905321234567", show_default=True,
              callback=check_phone, help="The caller's number: E.164 or Turkish.")
@click.option("--to", "to_number", default="+902122223344", show_default=True,
              callback=check_phone, help="The number called: E.164 or Turkish.")
@click.option("--call-sid", default=None, help="Use this CallSid (default: a random one).")
@click.option("--transfer", is_flag=True,
              help="An agent transfers the call into the consent flow through a local Twilio "
                   "stand-in; the caller then goes back to the agent's queue.")
@click.option("--agent-token", default=None,
              help="With --transfer: the bearer token of an agent or admin account "
                   f"({PREFIX} users add NAME --role agent).")
@with_app
def simulate(digits, url, in_process, from_number, to_number, call_sid, transfer,
             agent_token):
    """Place a simulated call, signed exactly as Twilio signs, and print what is heard."""
    app = current_app._get_current_object()
    if transfer and not agent_token:
        raise click.UsageError("--transfer needs --agent-token (an agent's bearer token)")
    base = _where(url, in_process, app)
    if in_process:
        database().create_all()
        transport = flask_transport(app.test_client())
    else:
        transport = http_transport()
    audio = app.config["AUDIO_DIR"]
    caller = Caller(base, app.config["TWILIO_AUTH_TOKEN"], transport, from_number=from_number,
                    to_number=to_number, call_sid=call_sid, audio_texts=manifest_texts(audio),
                    audio_seconds=manifest_seconds(audio), recording_callbacks=True)
    keys = list(digits or "")

    def next_key():
        if digits is not None:
            return keys.pop(0) if keys else None
        return click.prompt("press (0-9*#, t=silence, h=hang up)", default=SILENCE,
                            show_default=False, value_proc=_one_key)

    standin = _standin(app, in_process) if transfer else None
    where = "the app in this process (no server)" if in_process else base
    click.echo(f"Calling {where} as {from_number} (CallSid {caller.call_sid})")
    try:
        with ExitStack() as stack:
            if standin is not None:
                stack.enter_context(standin)
                api = _agent_api(app, in_process, base, agent_token)
                transfer_id, turn = _transfer(caller, api, standin)
            else:
                turn = caller.dial()
            turn = _follow(caller, turn, next_key)
            caller.hang_up()
            if standin is not None:
                _, body = api("GET", f"/api/transfers/{transfer_id}")
                click.echo(f"  transfer {transfer_id}: {body.get('status')}")
    except SimulationError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Call ended: {turn.end or 'hangup'} after {caller.duration} s"
               + (f", recording {caller.recordings[0].sid}" if caller.recordings else ""))
    decision = _decision(caller.call_sid)
    if decision is None:
        click.echo(f"Decision: unknown here (the server at {base} keeps its own database; "
                   f"see {PREFIX} calls show {caller.call_sid} there)")
    else:
        click.echo(f"Decision: {decision}")


def _one_key(value: str) -> str:
    if len(value) != 1 or not KEYS.fullmatch(value):
        raise click.UsageError("one key: 0-9 * #, 't' for a silence, 'h' to hang up")
    return value

