"""Recordings in development: the project's Twilio stand-in (ivr/adapters/twilio_standin.py)
serves a WAV for a recording, so a newcomer can play one from the call page; when Twilio
cannot be reached the page and the player say so in the user's language, with the program's
own words kept as detail. Also: the call page shows the signing key's whole name."""

from __future__ import annotations

import io
import socket
import wave
from pathlib import Path

import pytest
import requests

from ivr.adapters.twilio_standin import RemoteStandIn, TwilioStandIn
from ivr.cli.main import _host_twilio_standin
from tests.integration.conftest import AUTH_TOKEN, CHROMIUM_ARGS, chromium
from tests.support.auditor import login, make_user, parse_html
from tests.support.lifecycle import run_cli

ACCOUNT = "AC" + "1" * 32  # the conftest app's TWILIO_ACCOUNT_SID
RSID = "RE" + "8" * 32
UNREACHABLE_TR = "Twilio'ya ulaşılamadı; ses kaydı şu an çalınamıyor."
UNREACHABLE_EN = "Twilio could not be reached, so the recording cannot be played now."


def free_port() -> int:
    """A local port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def standin():
    with TwilioStandIn(ACCOUNT, AUTH_TOKEN) as s:
        yield s


def media(base: str, sid: str = RSID, ext: str = "wav") -> str:
    return f"{base}/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid}.{ext}"


def recorded_call(make_caller, rsid: str = RSID):
    """A call with a completed recording callback; returns the caller."""
    c = make_caller(account_sid=ACCOUNT)
    c.run(["1"])
    r = c.signed_post(c.url("/voice/recording"), c.params(
        RecordingSid=rsid, RecordingStatus="completed", RecordingDuration="2",
        RecordingChannels="1", RecordingSource="StartCallRecordingTwiML",
        RecordingUrl=f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{rsid}"))
    assert r.status == 200
    return c


def test_the_standin_serves_a_wav_for_a_recording_as_twilio_does(standin):
    r = requests.get(media(standin.url), auth=(ACCOUNT, AUTH_TOKEN), timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() == 16000  # two seconds
    # Basic auth as at Twilio; a deleted recording is gone.
    wrong = requests.get(media(standin.url), auth=(ACCOUNT, "nope"), timeout=5)
    assert (wrong.status_code, wrong.json()["code"]) == (401, 20003)
    gone = requests.delete(media(standin.url, ext="json"), auth=(ACCOUNT, AUTH_TOKEN), timeout=5)
    assert gone.status_code == 204
    after = requests.get(media(standin.url), auth=(ACCOUNT, AUTH_TOKEN), timeout=5)
    assert (after.status_code, after.json()["code"]) == (404, 20404)


def test_another_process_drives_a_hosted_standin(standin):
    """`simulate --transfer` against `ivr serve`, which hosts the stand-in on its port."""
    sid = "CA" + "3" * 32
    remote = RemoteStandIn.found_at(standin.url)
    assert remote is not None and RemoteStandIn.found_at(f"http://127.0.0.1:{free_port()}") \
        is None
    remote.set_status(sid, "in-progress")
    assert standin.calls[sid] == "in-progress"
    assert remote.next_redirect(timeout=0, call_sid=sid) is None
    r = requests.post(f"{standin.url}/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json",
                      data={"Url": "http://ivr.test/voice/transfer?t=1"},
                      auth=(ACCOUNT, AUTH_TOKEN), timeout=5)
    assert r.status_code == 200
    assert remote.next_redirect(timeout=1, call_sid=sid) == (sid, "http://ivr.test/voice/"
                                                                  "transfer?t=1")


def test_serve_hosts_the_standin_on_a_local_twilio_url(app, capsys):
    port = free_port()
    app.config["TWILIO_API_URL"] = f"http://127.0.0.1:{port}"
    hosted = _host_twilio_standin(app)
    assert "the development stand-in on" in capsys.readouterr().out
    try:
        r = requests.get(media(f"http://127.0.0.1:{port}"), auth=(ACCOUNT, AUTH_TOKEN),
                         timeout=5)
        assert r.status_code == 200 and r.headers["Content-Type"] == "audio/wav"
        assert _host_twilio_standin(app) is None  # the port is taken now: said, not fatal
        assert "not hosted here: port" in capsys.readouterr().out
    finally:
        hosted.__exit__(None, None, None)
    app.config["TWILIO_API_URL"] = "https://api.twilio.com"
    assert _host_twilio_standin(app) is None  # never for a remote Twilio
    assert capsys.readouterr().out == ""


@pytest.fixture
def auditor(app, client):
    assert login(client, "selin", make_user(app, "selin", "auditor")).status_code == 302
    return client


def test_a_newcomer_plays_a_recording_through_the_standin(app_config, request, standin):
    app_config["TWILIO_API_URL"] = standin.url
    app = request.getfixturevalue("app")
    client = app.test_client()
    from ivr.adapters.simulate import Caller, flask_transport

    c = recorded_call(lambda **kw: Caller(app.config["PUBLIC_URL"], AUTH_TOKEN,
                                          flask_transport(client), **kw))
    assert login(client, "selin", make_user(app, "selin", "auditor")).status_code == 302
    r = client.get(f"/auditor/calls/{c.call_sid}/recordings/{RSID}.wav")
    assert r.status_code == 200 and r.mimetype == "audio/wav"
    with wave.open(io.BytesIO(r.get_data())) as w:
        assert w.getnframes() / w.getframerate() == 2.0


@pytest.mark.parametrize("lang,sentence", [("tr", UNREACHABLE_TR), ("en", UNREACHABLE_EN)])
def test_twilio_unreachable_reads_as_a_sentence_in_the_users_language(app, lang, sentence):
    client = app.test_client()  # Twilio is down: see app_config below
    from ivr.adapters.simulate import Caller, flask_transport

    c = recorded_call(lambda **kw: Caller(app.config["PUBLIC_URL"], AUTH_TOKEN,
                                          flask_transport(client), **kw))
    secret = make_user(app, "selin", "auditor", language=lang)
    assert login(client, "selin", secret, lang=lang).status_code == 302
    r = client.get(f"/auditor/calls/{c.call_sid}/recordings/{RSID}.wav")
    assert r.status_code == 502
    doc = parse_html(r.get_data(as_text=True))
    assert doc.find("p", role="alert").text.startswith(sentence)
    assert doc.find("p", **{"class": "detail"}).find("code").text.startswith("ConnectionError")


def test_the_call_page_shows_the_signing_keys_whole_name(app, auditor, local_caller):
    c = local_caller(account_sid=ACCOUNT)
    c.run(["1"])
    run_cli(app, "audit", "checkpoint")
    doc = parse_html(auditor.get(f"/auditor/calls/{c.call_sid}").get_data(as_text=True))
    [key] = doc.find("p", id="inclusion").findall("code", **{"class": "key-name"})
    origin, _, rest = key.text.partition("+")
    assert origin and "/" in origin and len(rest) > 40, key.text  # origin+hash+key, whole
    style = (Path(app.static_folder) / "style.css").read_text()
    assert "code.key-name { overflow-wrap: anywhere;" in style


@pytest.mark.browser
def test_the_player_shows_why_a_recording_cannot_be_played(live_app, caller):
    """Chromium presses play with Twilio down: the player's error event brings the server's
    Turkish sentence next to the player, the program's words as detail."""
    app = live_app.app
    recorded = recorded_call(caller)
    secret = make_user(app, "selin", "auditor", language=None)
    path = chromium("the recording player test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        page = browser.new_context(locale="tr-TR").new_page()
        page.goto(f"{live_app.url}/login")
        page.fill("input[name=name]", "selin")
        page.fill("input[name=secret]", secret)
        page.click("button[type=submit]")
        page.wait_for_url("**/auditor/**")
        page.goto(f"{live_app.url}/auditor/calls/{recorded.call_sid}")
        box = page.locator(f"p.player-error[data-recording='{RSID}']")
        assert box.is_hidden()
        page.locator(f"audio[data-recording='{RSID}']").evaluate(
            "a => a.play().catch(() => null)")
        box.wait_for(state="visible", timeout=10000)
        text = box.inner_text()
        assert text.startswith(UNREACHABLE_TR), text
        assert "Ayrıntılar: ConnectionError" in text, text
        browser.close()


@pytest.fixture
def app_config(app_config):
    """Twilio is down unless a test says otherwise: a local port nothing listens on."""
    app_config["TWILIO_API_URL"] = f"http://127.0.0.1:{free_port()}"
    app_config["TWILIO_TIMEOUT"] = 2
    return app_config
