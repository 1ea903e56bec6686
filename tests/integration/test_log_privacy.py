"""Logs hold no phone numbers, by construction: every encoded form of a number, sent where
clients send them, through each logger (the request log of `ivr serve`, gunicorn's access
log, the application's logs), and identifiers that are not numbers left as they are."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

from ivr import create_app
from ivr.adapters.simulate import Caller, flask_transport
from ivr.domain.redact import loggable_target, redact
from ivr.web.current import database
from ivr.web.logs import JsonLogFormatter, RedactingFilter, TextLogFormatter
from tests.support.gunicorn_server import free_port

from .conftest import AUTH_TOKEN, ROOT

SID = "CA" + "0123456789abcdef" * 2
# Every form of the issue, as a URL carries it; each a number of its own, so a leak of any
# one is seen. The national digits are what must never reach a log in any spelling.
FORMS = {
    "%2B905330001122": "5330001122",
    "0532+123+00+04": "5321230004",
    "0532%20123%2000%2007": "5321230007",
    "(0532)%20123-00-05": "5321230005",
    "%2B90+532+123+00+06": "5321230006",
    "%280532%29%20123%2000%2008": "5321230008",
}


def leaks(text: str) -> list[str]:
    """The forms whose number appears in `text`, whatever separators or escapes it has."""
    return [form for form, digits in FORMS.items()
            if re.search(r"\D{0,6}".join(digits), text) or form in text]


def targets(form: str) -> list[str]:
    """Where clients put a number: the API's and the workspace's search, a login redirect
    back to a search, and (by mistake) a path."""
    return [f"/api/consents?phone={form}&limit=5",
            f"/auditor/?phone={form}&call_sid={SID}&decision=granted",
            "/login?next=" + quote(f"/auditor/?phone={form}", safe=""),
            f"/auditor/calls/{form}"]


# --- the redaction itself -------------------------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
def test_encoded_numbers_are_redacted(form):
    for target in targets(form):
        assert leaks(redact(target)) == [], target
    assert redact(f"phone={form}&x=1") == "phone=[phone]&x=1"


@pytest.mark.parametrize("value", [
    f"call_sid={SID}", f"/auditor/?call_sid={SID}&step=3",
    "since=2026-11-30T08%3A25%3A58%2B03%3A00",
    "until=2026-11-30", "limit=100&step=12", "RE12345678901234567890123456789012",
    "run=9f86d081884c7d659a2feaa0c55ad015", "a%2012345", "x=1+2+3",
    "s=eyJydW4iOiJhYmMi-0532123456789", "version 1.05321234567",
])
def test_values_that_are_not_numbers_are_kept(value):
    assert redact(value) == value


@pytest.mark.parametrize("target,logged", [
    ("/voice/gather?run=9f86d081&step=2&s=abc", "/voice/gather?run=9f86d081&step=2&s=-"),
    ("/api/consents?phone=%2B905330001122&limit=5", "/api/consents?phone=-&limit=5"),
    (f"/auditor/?call_sid={SID}&decision=granted", f"/auditor/?call_sid={SID}&decision=granted"),
    ("/login?next=%2Fauditor%2F%3Fphone%3D0532", "/login?next=-"),
    ("/auditor/calls/05321230004", "/auditor/calls/[phone]"),
    ("/healthz", "/healthz"),
    ("/x?&&a", "/x?a=-"),
])
def test_request_targets_keep_allow_listed_parameters_only(target, logged):
    assert loggable_target(target) == logged


# --- each logger ------------------------------------------------------------------------------

def _env(tmp_path, port: int, url: str) -> dict:
    """A served app's environment: a fresh schema at `url`, its tables made, keys in
    instance/."""
    instance = tmp_path / "instance"
    app = create_app({"DATABASE_URL": url, "INSTANCE_DIR": str(instance),
                      "TWILIO_AUTH_TOKEN": AUTH_TOKEN})
    database(app).create_all()
    database(app).engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update({"IVR_DATABASE_URL": url, "IVR_INSTANCE_DIR": str(instance),
                "IVR_AUDIO_DIR": str(tmp_path), "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "IVR_PUBLIC_URL": f"http://127.0.0.1:{port}", "IVR_LOG_LEVEL": "INFO"})
    return env


def _serve_and_request(command: list[str], env: dict, port: int, log_file,
                       sent: list[str] | None = None, agent: str | None = None) -> list[int]:
    """Start a server, send every target of every form (or `sent`, with the User-Agent
    `agent`) exactly as written, stop it."""
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the server stopped"
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        codes = []
        every = sent if sent is not None else [t for form in FORMS for t in targets(form)]
        for target in every:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.putrequest("GET", target, skip_accept_encoding=True)
                if agent is not None:
                    conn.putheader("User-Agent", agent)
                conn.endheaders()
                response = conn.getresponse()
                response.read()
                codes.append(response.status)
            finally:
                conn.close()
        return codes
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_request_log_of_ivr_serve_holds_no_number(tmp_path, database_url):
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        codes = _serve_and_request([sys.executable, "-m", "ivr", "serve", "--port", str(port)],
                                   _env(tmp_path, port, database_url), port, log)
    assert all(c < 500 for c in codes), codes
    logged = log_path.read_text()
    requests_logged = [ln for ln in logged.splitlines() if '"GET /' in ln]
    assert len(requests_logged) >= len(FORMS) * 4, logged[-2000:]
    assert leaks(logged) == []
    # The parameters that help an operator are kept, the others named only.
    assert f"call_sid={SID}&decision=granted" in logged and "phone=-" in logged


def test_gunicorns_access_log_holds_no_number(tmp_path, database_url):
    port = free_port()
    env = _env(tmp_path, port, database_url)
    access = tmp_path / "access.log"
    env.update({"IVR_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "IVR_THREADS": "2",
                "IVR_ACCESS_LOG": str(access)})
    with open(tmp_path / "gunicorn.log", "wb") as log:
        codes = _serve_and_request([sys.executable, "-m", "gunicorn", "-c",
                                    str(ROOT / "gunicorn.conf.py"), "wsgi:app"], env, port, log)
    assert all(c < 500 for c in codes), codes
    lines = access.read_text().splitlines()
    assert len([ln for ln in lines if '"GET /' in ln]) >= len(FORMS) * 4
    assert any('"GET /api/consents HTTP/1.1" 401' in ln for ln in lines), lines[:3]
    assert leaks("\n".join(lines)) == []
    assert leaks((tmp_path / "gunicorn.log").read_text()) == []


# A path that would forge a line, write a NUL byte, an escape sequence or a backslash.
FORGING = ["/forged%0A127.0.0.1%20-%20-%20[01/Jan/2026]%20%22GET%20/admin%20HTTP/1.1%22%20200",
           "/nul%00byte", "/cr%0Dreturn", "/esc%1B[2Jclear", "/del%7Fc1%C2%85end",
           "/back%5Cx0aslash"]


def test_gunicorns_access_log_escapes_control_characters(tmp_path, database_url):
    port = free_port()
    env = _env(tmp_path, port, database_url)
    access = tmp_path / "access.log"
    env.update({"IVR_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "IVR_THREADS": "2",
                "IVR_ACCESS_LOG": str(access)})
    with open(tmp_path / "gunicorn.log", "wb") as log:
        codes = _serve_and_request([sys.executable, "-m", "gunicorn", "-c",
                                    str(ROOT / "gunicorn.conf.py"), "wsgi:app"], env, port, log,
                                   sent=FORGING, agent="probe\tagent")
    assert len(codes) == len(FORGING) and all(400 <= c < 500 for c in codes), codes
    raw = access.read_bytes()
    assert not any(0 <= b < 0x20 and b != 0x0A or b == 0x7F for b in raw), raw
    lines = raw.decode("utf-8").splitlines()
    probes = [ln for ln in lines if '"GET /' in ln and "/healthz" not in ln]
    assert len(probes) == len(FORGING), lines  # one line per request: nothing forged
    text = "\n".join(probes)
    for kept in ("/forged\\x0a127.0.0.1", "/nul\\x00byte", "/cr\\x0dreturn",
                 "/esc\\x1b[2Jclear", "/del\\x7fc1", "/back\\\\x0aslash",
                 '"probe\\x09agent"', '\\"GET /admin HTTP/1.1\\"'):
        assert kept in text, (kept, text)


@pytest.mark.parametrize("formatter", [JsonLogFormatter, TextLogFormatter])
def test_application_logs_hold_no_number(formatter):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("ivr.test.log_privacy")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for form in FORMS:
            for target in targets(form):
                logger.warning("request %s", target, extra={"target": target,
                                                            "nested": {"t": [target]}})
                logger.warning(f"inline {target}")
            try:
                raise ValueError(f"bad phone {form}")
            except ValueError:
                logger.exception("failed")
        logger.warning("kept call_sid=%s", SID)
    finally:
        logger.removeHandler(handler)
    logged = out.getvalue()
    assert logged.count("[phone]") >= len(FORMS) * 4
    assert leaks(logged) == [], logged
    assert f"call_sid={SID}" in logged


@pytest.mark.parametrize("form", FORMS)
def test_a_webhook_whose_sid_holds_a_number_is_logged_without_it(app, client, form, caplog):
    caplog.set_level(logging.INFO)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(RedactingFilter())
    logging.getLogger().addHandler(handler)
    try:
        c = Caller(app.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(client), call_sid=form)
        c.status("ringing")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert any(ln.get("event") == "webhook" for ln in lines)
    assert leaks(out.getvalue() + "\n".join(r.getMessage() for r in caplog.records)) == []
