"""`python -m ivr simulate`: where the call goes, what Twilio would send, what it prints."""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import sys
from email.utils import parsedate_to_datetime

import pytest
from sqlalchemy import func, select

from ivr.adapters.simulate import Caller, flask_transport, manifest_seconds
from ivr.cli.main import cli
from ivr.services.accounts import add_user
from ivr.storage.models import Call, CallEvent, Consent, Recording
from ivr.storage.transfer_models import Transfer
from ivr.web.current import database, session
from tests.integration.conftest import AUTH_TOKEN, ROOT, pg_schema_url


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def consent_audio(tmp_path_factory):
    """The consent flow's prompts, rendered once with the offline voice."""
    from ivr.adapters.audio.build import build

    folder = tmp_path_factory.mktemp("consent-audio")
    build([ROOT / "flows" / "consent.yaml"], folder, engine="offline", progress=False)
    return folder


@pytest.fixture
def audio_dir(tmp_path, consent_audio):
    d = tmp_path / "audio"
    shutil.copytree(consent_audio, d)
    return d


@pytest.fixture
def make_app():
    """Apps built in the test from a config, their database engines closed afterwards."""
    from ivr import create_app

    made = []

    def make(config: dict):
        made.append(create_app(config))
        database(made[-1]).create_all()
        return made[-1]

    yield make
    for built in made:
        database(built).engine.dispose()


def simulate(runner, *args):
    return runner.invoke(cli, ["simulate", *args])


def stored(app, model, **where):
    """Every row of `model` matching `where`."""
    with app.app_context():
        s = session()
        with s.begin():
            return list(s.scalars(select(model).filter_by(**where)))


def rows(app) -> int:
    with app.app_context():
        s = session()
        with s.begin():
            return s.scalar(select(func.count()).select_from(Call))


# --- where the call goes -------------------------------------------------------------------

def test_an_explicit_url_that_does_not_answer_is_an_error(runner, app):
    url = f"http://127.0.0.1:{closed_port()}"
    result = simulate(runner, "--url", url, "--digits", "1")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: no server answers at {url} (--url). Start one (`make run`), or run the app "
        "inside this command: .venv/bin/python -m ivr simulate --in-process"]
    assert rows(app) == 0


def test_without_url_the_configured_public_url_must_answer(app_config, make_app):
    app_config["PUBLIC_URL"] = f"http://127.0.0.1:{closed_port()}"
    runner = make_app(app_config).test_cli_runner()
    result = simulate(runner, "--digits", "1")
    assert result.exit_code == 1
    assert f"no server answers at {app_config['PUBLIC_URL']} (IVR_PUBLIC_URL)" in result.output
    assert "Calling" not in result.output


def test_url_and_in_process_together_are_refused(runner):
    result = simulate(runner, "--url", "http://127.0.0.1:5000", "--in-process")
    assert result.exit_code == 2
    assert "give either --url or --in-process, not both" in result.output


def test_in_process_logs_go_to_stderr_never_into_the_transcript(tmp_path, database_url):
    env = {**os.environ, "IVR_INSTANCE_DIR": str(tmp_path / "instance"),
           "IVR_AUDIO_DIR": str(tmp_path / "audio"), "IVR_LOG_FORMAT": "json",
           "IVR_LOG_LEVEL": "INFO", "IVR_DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, "-m", "ivr", "simulate", "--in-process",
                           "--digits", "1"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("Calling the app in this process (no server)")
    assert all(line.startswith(("Calling", "  ", "Call ended", "Decision")) for line in out)
    assert out[-1] == "Decision: granted"
    assert '"logger": "ivr.webhook"' in done.stderr


def test_a_live_server_gets_the_call_and_the_decision_is_read_back(live_app, runner):
    result = simulate(runner, "--url", live_app.url, "--digits", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"Calling {live_app.url} as +905321234567")
    assert lines[-1] == "Decision: granted"


# --- what Twilio would send ----------------------------------------------------------------

def test_the_recording_callbacks_are_sent_as_twilio_sends_them(runner, app):
    result = simulate(runner, "--in-process", "--digits", "1")
    assert result.exit_code == 0, result.output
    [call] = stored(app, Call)
    [rec] = stored(app, Recording, call_sid=call.call_sid)
    assert rec.recording_sid in result.output
    assert (rec.status, rec.channels, rec.source, rec.track) == (
        "completed", 2, "StartCallRecordingTwiML", "both")
    events = stored(app, CallEvent, call_sid=call.call_sid, kind="recording")
    assert sorted(e.status for e in events) == ["completed", "in-progress"]
    # The recording starts after the sentence that says the call is recorded, so it is
    # shorter than the call, and it starts after the call did.
    assert 0 < rec.duration < call.duration
    assert rec.start_time > call.started_at


def test_the_duration_is_the_audio_heard_plus_the_waits(app, client, audio_dir):
    seconds = manifest_seconds(audio_dir)
    c = Caller(app.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(client),
               audio_seconds=seconds)
    c.run(["t", "1"])
    heard = [h for turn in c.turns for h in turn.heard]
    assert heard and all(h.verb == "play" for h in heard)
    timeout = c.turns[0].gather_timeout
    expected = sum(seconds[h.url.rsplit("/", 1)[-1]] for h in heard) + timeout + 1
    assert c.duration == math.ceil(expected)
    [call] = stored(app, Call)
    assert call.duration == c.duration
    assert call.ended_at is not None and call.started_at is not None
    [done] = stored(app, CallEvent, call_sid=c.call_sid, kind="status")
    ended = parsedate_to_datetime(done.data["Timestamp"])
    assert (ended - c.started_at).total_seconds() == pytest.approx(c.duration, abs=1)


def call_seconds(runner, digits: str) -> int:
    result = simulate(runner, "--in-process", "--digits", digits)
    assert result.exit_code == 0, result.output
    ended = result.output.splitlines()[-2]
    return int(ended.split(" after ")[1].split(" s")[0])


def test_a_caller_who_hears_the_notice_twice_has_a_longer_call(runner, app):
    once, twice = call_seconds(runner, "1"), call_seconds(runner, "91")
    assert twice > once > 30
    assert sorted(c.duration for c in stored(app, Call)) == [once, twice]


# --- what it prints last -------------------------------------------------------------------

@pytest.mark.parametrize(("first", "digits", "decision"), [
    (None, "1", "granted"),
    (None, "2", "declined"),
    (None, "ttt", "no_input"),
    ("1", "3", "withdrawn"),
    (None, "h", "none (no decision was recorded: the caller hung up before choosing)"),
    (None, "", "none (no decision was recorded: the caller hung up before choosing)"),
])
def test_the_last_line_names_the_decision(runner, first, digits, decision):
    if first:
        assert simulate(runner, "--in-process", "--digits", first).exit_code == 0
    result = simulate(runner, "--in-process", "--digits", digits)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"Decision: {decision}"


@pytest.fixture
def other_database_url():
    """A second fresh schema, for an app that does not share the test's database."""
    yield from pg_schema_url()


def test_the_decision_is_not_guessed_for_a_server_with_its_own_database(live_app, app_config,
                                                                         other_database_url,
                                                                         make_app):
    other = make_app({**app_config, "DATABASE_URL": other_database_url})
    result = simulate(other.test_cli_runner(), "--url", live_app.url, "--digits", "1")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith(
        f"Decision: unknown here (the server at {live_app.url} keeps its own database")


# --- checked options -----------------------------------------------------------------------

@pytest.mark.parametrize(("option", "value", "message"), [
    ("--digits", "x", "'x' is not a key: use 0-9 * #, 't' for a silence, 'h' to hang up"),
    ("--digits", "1a2", "'a' is not a key"),
    ("--from", "abc", "'abc' is not a valid phone number"),
    ("--from", "+90532", "'+90532' is not a valid phone number"),
    ("--to", "12", "'12' is not a valid phone number"),
])
def test_bad_keys_and_numbers_are_refused(runner, app, option, value, message):
    result = simulate(runner, "--in-process", option, value)
    assert result.exit_code == 2
    assert message in result.output
    assert rows(app) == 0


@pytest.mark.parametrize("number", ["0532 123 45 67", "+905321234567", "5321234567"])
def test_a_turkish_number_is_sent_as_e164(runner, app, number):
    result = simulate(runner, "--in-process", "--from", number, "--digits", "2")
    assert result.exit_code == 0, result.output
    assert "as +905321234567 " in result.output
    [consent] = stored(app, Consent)
    assert consent.decision == "declined"


def test_silence_and_every_key_are_accepted(runner):
    result = simulate(runner, "--in-process", "--digits", "*#t1")
    assert result.exit_code == 0, result.output
    assert "caller presses: (silence)" in result.output


# --- an agent's transfer -------------------------------------------------------------------

def agent_token(app) -> str:
    with app.app_context():
        s = session()
        with s.begin():
            return add_user(s, "deniz", "agent")[1]


def test_a_transfer_in_process_goes_through_the_stand_in_and_back(runner, app):
    result = simulate(runner, "--in-process", "--transfer", "--agent-token", agent_token(app),
                      "--digits", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "the agent transfers the call (return to queue 'agents')" in lines[1]
    assert lines[-2].startswith("Call ended: enqueue:agents after ")
    assert lines[-1] == "Decision: declined"
    [t] = stored(app, Transfer)
    assert (t.status, t.decision) == ("returned", "declined")
    assert lines[2] == f"  transfer {t.id}: requested"
    assert lines[-3] == f"  transfer {t.id}: returned"
    # The stand-in answered as Twilio: the transfer was redirected, and never failed.
    assert t.redirected_at is not None and t.failure_reason is None


def test_a_transfer_against_a_server_uses_its_configured_twilio_url(app_config, make_app):
    from tests.integration.conftest import LiveServer

    app_config["TWILIO_API_URL"] = f"http://127.0.0.1:{closed_port()}"
    server = LiveServer(app_config).start()
    try:
        token = agent_token(server.app)
        runner = make_app(app_config).test_cli_runner()
        result = simulate(runner, "--url", server.url, "--transfer", "--agent-token", token,
                          "--digits", "1")
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == "Decision: granted"
        [t] = stored(server.app, Transfer)
        assert (t.status, t.decision) == ("returned", "granted")
    finally:
        server.stop()


def test_a_transfer_against_a_server_that_hosts_the_stand_in(app_config, make_app):
    """`make run` with no Twilio account: `ivr serve` answers as Twilio on the port itself,
    and the simulator drives that stand-in instead of opening its own."""
    from ivr.cli.main import _host_twilio_standin
    from tests.integration.conftest import LiveServer

    app_config["TWILIO_API_URL"] = f"http://127.0.0.1:{closed_port()}"
    server = LiveServer(app_config).start()
    try:
        hosted = _host_twilio_standin(server.app)  # as `ivr serve` does before it serves
        assert hosted is not None
        token = agent_token(server.app)
        runner = make_app(app_config).test_cli_runner()
        result = simulate(runner, "--url", server.url, "--transfer", "--agent-token", token,
                          "--digits", "1")
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == "Decision: granted"
        [t] = stored(server.app, Transfer)
        assert (t.status, t.decision) == ("returned", "granted")
        assert hosted.redirected  # the server's stand-in redirected the call
        hosted.__exit__(None, None, None)
    finally:
        server.stop()


@pytest.mark.parametrize(("args", "message"), [
    (["--in-process", "--transfer"], "--transfer needs --agent-token"),
    (["--in-process", "--transfer", "--agent-token", "nope"], "the transfer was refused "
                                                              "(HTTP 401)"),
])
def test_a_transfer_needs_an_agent(runner, args, message):
    result = simulate(runner, *args, "--digits", "1")
    assert result.exit_code != 0
    assert message in result.output


def test_a_transfer_against_a_server_needs_a_local_twilio_url(live_app, runner):
    result = simulate(runner, "--url", live_app.url, "--transfer", "--agent-token", "x")
    assert result.exit_code == 1
    assert "IVR_TWILIO_API_URL=http://127.0.0.1:5099" in result.output
    assert "Calling" not in result.output


def test_the_interactive_prompt_asks_again_for_a_key_that_is_not_one(runner):
    result = runner.invoke(cli, ["simulate", "--in-process"], input="x\n12\n2\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("Error: one key: 0-9 * #, 't' for a silence, 'h' to hang up") == 2
    assert "caller presses: 2" in result.output
    assert result.output.splitlines()[-1] == "Decision: declined"


README_EXAMPLE = re.compile(r"^\.venv/bin/python -m ivr simulate (--from \S+)(?: --digits (\S+))?"
                            r"\s+# (.*)$", re.M)
SAYS = {"consent": "granted", "decline": "declined", "hear the notice again, then consent":
        "granted", "English, then consent": "granted", "three silences: no_input": "no_input",
        "the first caller again: withdraws": "withdrawn"}


def test_the_readmes_call_examples_do_what_their_comments_say(runner):
    """Each example has its own number, so each does what it says, in the README's order."""
    examples = README_EXAMPLE.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(examples) == 7
    for option, digits, comment in examples:
        if not digits:
            continue  # the interactive one
        number = option.split()[1]
        result = simulate(runner, "--in-process", "--from", number, "--digits", digits)
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == f"Decision: {SAYS[comment]}", comment
