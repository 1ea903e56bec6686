"""Observability: one JSON log line per webhook, no phone number anywhere in the logs,
and /metrics counting committed facts, protected, and summed over gunicorn workers."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from ivr.adapters.simulate import Caller, http_transport
from ivr.domain.redact import redact
from ivr.storage.models import Consent
from ivr.web.current import database, session
from ivr.web.logs import JsonLogFormatter, RedactingFilter
from ivr.web.metrics import set_spool_depth_source

from .conftest import AUTH_TOKEN, ROOT

# --- redaction ----------------------------------------------------------------------------

PHONES = [
    "+905321234567", "+90 532 123 45 67", "+90 (532) 123-45-67", "905321234567",
    "05321234567", "0532 123 45 67", "0 (532) 123 45 67", "(0532) 123-4567", "5321234567",
    "532 123 45 67", "532-123-4567", "00905321234567", "+14155550123", "+44 20 7946 0958",
    "+4930123456",
]

NOT_PHONES = [
    "CA0123456789abcdef0123456789abcdef", "RE12345678901234567890123456789012",
    "3f2a9c8e0d1b4a6f8e7d6c5b4a392817" + "1234567890", "2026-01-02 10:11:12",
    "2026-01-02T10:11:12.123456Z", "192.168.100.200", "latency_ms=12.5", "seq 12345",
    "run 9f86d081884c7d659a2feaa0c55ad015", "HTTP/1.1 200", "step=3 digits=1",
]


@pytest.mark.parametrize("number", PHONES)
def test_phone_numbers_are_redacted(number):
    assert redact(f"from {number} to x") == "from [phone] to x"
    assert redact(f"call_sid={number}") == "call_sid=[phone]"


@pytest.mark.parametrize("value", NOT_PHONES)
def test_other_identifiers_are_kept(value):
    assert redact(f"value {value} end") == f"value {value} end"


def test_json_formatter_redacts_message_extras_and_tracebacks():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("ivr.test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("caller %s", "+905321234567", extra={"who": "0532 123 45 67",
                                                              "nested": {"n": "5321234567"}})
        try:
            raise ValueError("bad number 05321234567")
        except ValueError:
            logger.exception("failed for %s", "+90 532 123 45 67")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["message"] == "caller [phone]"
    assert lines[0]["who"] == "[phone]" and lines[0]["nested"] == {"n": "[phone]"}
    assert lines[0]["level"] == "WARNING" and lines[0]["logger"] == "ivr.test.redaction"
    assert "[phone]" in lines[1]["exc_info"]
    # Every form logged above, digits run together or spaced; not "0532" alone, which a
    # timestamp's microseconds can hold by chance.
    assert "5321234567" not in out.getvalue() and "532 123 45 67" not in out.getvalue()


# --- logs of real calls --------------------------------------------------------------------

def _phone_like(text_: str) -> list[str]:
    """Every phone number of PHONES (in any of its shapes) that appears in text_."""
    digits_only = {re.sub(r"\D", "", p) for p in PHONES}
    found = [p for p in PHONES if p in text_]
    # Also catch a number written with other separators than the ones we sent.
    for run in re.findall(r"\+?\d[\d \-().]{6,}\d", text_):
        if re.sub(r"\D", "", run) in digits_only | {d[2:] for d in digits_only}:
            found.append(run)
    return found


@pytest.fixture
def json_log():
    """Everything logged during the test, as the production JSON handler writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(RedactingFilter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_one_json_line_per_webhook(caller, json_log):
    c = caller(from_number="+905321234567")
    c.run(["1"])
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    hooks = [ln for ln in lines if ln.get("event") == "webhook"]
    # incoming, one gather, the completed status callback
    assert [h["path"] for h in hooks] == ["/voice/incoming", "/voice/gather", "/voice/status"]
    for h in hooks:
        assert h["call_sid"] == c.call_sid
        assert h["outcome"] in ("ok", "applied")
        assert isinstance(h["latency_ms"], float) and h["latency_ms"] >= 0
        assert h["level"] == "INFO" and h["logger"] == "ivr.webhook" and "time" in h


def test_no_phone_number_in_any_log(live_app, caller, json_log, caplog):
    caplog.set_level(logging.DEBUG)
    numbers = ["+905321234567", "05321234567", "+90 532 123 45 67", "0532 123 45 67",
               "5321234567", "+14155550123"]
    for n in numbers:
        caller(from_number=n, to_number="+902122223344").run(["7", "t", "2"])
    # A forged request puts a phone number where the call SID goes: it is logged as rejected.
    forged = requests.post(live_app.url + "/voice/incoming",
                           data={"CallSid": "+905321234567", "From": "+905321234567"},
                           headers={"X-Twilio-Signature": "forged"}, timeout=5)
    assert forged.status_code == 403
    # A signed callback whose SID field holds a number is accepted and logged by SID.
    c = Caller(live_app.url, AUTH_TOKEN, http_transport(), call_sid="0532 123 45 67",
               from_number="+905321234567")
    c.status("ringing")
    logged = json_log.getvalue() + "\n".join(r.getMessage() for r in caplog.records)
    assert "webhook" in logged and "[phone]" in logged
    assert _phone_like(logged) == []


# --- metrics ------------------------------------------------------------------------------

def scrape(client, **kwargs) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics", **kwargs)
    assert r.status_code == 200, r.data
    out = {}
    for family in text_string_to_metric_families(r.data.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_whole_call(app, client, local_caller):
    before = scrape(client)
    c = local_caller(from_number="+905321234567")
    turn = c.dial()
    turn = c.press(turn, "7")  # no such option
    turn = c.press(turn, "")  # silence
    turn = c.press(turn, "1")  # granted
    assert not turn.gather_action
    token = "retry-of-the-final-status"
    assert c.status("completed", duration=30, token=token).status == 200
    assert c.status("completed", duration=30, token=token).status == 200  # Twilio's retry
    assert c.status("completed", duration=31).status == 200  # a second, later report
    # A forged one counts as a signature failure and nothing else.
    assert client.post("/voice/status", data={"CallSid": c.call_sid}).status_code == 403
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ivr_calls_started_total", origin="incoming") == 1
    assert delta("ivr_gather_invalid_keys_total") == 1
    assert delta("ivr_gather_timeouts_total") == 1
    assert delta("ivr_gather_inputs_total", input="digits", valid="true") == 1
    assert delta("ivr_gather_inputs_total", input="digits", valid="false") == 1
    assert delta("ivr_consents_total", decision="granted") == 1
    assert delta("ivr_calls_completed_total", status="completed") == 1
    assert delta("ivr_signature_failures_total") == 1
    assert delta("ivr_webhook_seconds_count", path="/voice/gather", outcome="ok") == 3
    assert delta("ivr_webhook_seconds_count", path="/voice/incoming", outcome="ok") == 1
    assert delta("ivr_webhook_seconds_count", path="/voice/status", outcome="retry") == 1
    with app.app_context():
        assert session().query(Consent).count() == 1


def test_a_rolled_back_transaction_counts_nothing(app, client):
    def consents():
        return value(scrape(client), "ivr_consents_total", decision="declined")

    start = consents()
    with app.app_context():
        s = session()
        s.begin()
        s.add(Consent(purpose="marketing", channels=[], decision="declined"))
        s.flush()
        s.rollback()
    assert consents() == start
    with app.app_context():
        s = session()
        with s.begin():
            s.add(Consent(purpose="marketing", channels=[], decision="declined"))
    assert consents() == start + 1


def test_spool_depth(app, client):
    assert value(scrape(client), "ivr_spool_depth") == 0
    app.extensions["ivr_spool"].write({"kind": "test"})
    assert value(scrape(client), "ivr_spool_depth") == 1
    set_spool_depth_source(lambda: 7, app)
    assert value(scrape(client), "ivr_spool_depth") == 7


def test_metrics_are_loopback_only_without_a_token(client):
    assert client.get("/metrics").status_code == 200
    r = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert r.status_code == 403
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_metrics_token(app_config):
    from ivr import create_app

    app_config["METRICS_TOKEN"] = "s3cret-metrics-token"
    application = create_app(app_config)
    try:
        client = application.test_client()
        r = client.get("/metrics")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"},
                        environ_base={"REMOTE_ADDR": "203.0.113.9"})
        assert ok.status_code == 200 and b"ivr_calls_started_total" in ok.data
    finally:
        database(application).engine.dispose()


# --- several gunicorn workers -------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_pids(metrics_dir: Path) -> set[str]:
    """The processes that wrote metrics: prometheus_client names its files <kind>_<pid>.db."""
    return {p.name.split("_")[-1].split(".")[0] for p in metrics_dir.glob("*.db")}


@pytest.mark.slow
def test_gunicorn_workers_share_metrics_and_log_json(app, app_config, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update({
        "IVR_DATABASE_URL": app_config["DATABASE_URL"], "IVR_INSTANCE_DIR":
        app_config["INSTANCE_DIR"], "IVR_AUDIO_DIR": app_config["AUDIO_DIR"],
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": app_config["TWILIO_ACCOUNT_SID"],
        "IVR_PUBLIC_URL": url, "IVR_FLOW": app_config["FLOW"],
        "IVR_FLOWS_DIR": app_config["FLOWS_DIR"], "IVR_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "3", "IVR_THREADS": "2", "IVR_LOG_LEVEL": "INFO",
        "IVR_GUNICORN_LOG_LEVEL": "warning", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    })
    log_path = Path(app_config["INSTANCE_DIR"]) / "gunicorn.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c",
                                 str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        def call(i: int) -> str:
            # Each request on a fresh connection, so the calls can land on any worker.
            c = Caller(url, AUTH_TOKEN, http_transport(), from_number=f"+90532123{i:04d}")
            c.run(["2"])
            return c.call_sid

        sids: list[str] = []
        # Four callers at a time; the kernel picks the worker, so go on (up to 48 calls)
        # until at least two workers have served some.
        with ThreadPoolExecutor(max_workers=4) as pool:
            while len(sids) < 12 or (len(worker_pids(metrics_dir)) < 2 and len(sids) < 48):
                sids += pool.map(call, range(len(sids), len(sids) + 4))
        calls = len(sids)
        for _ in range(6):
            # Whichever worker answers the scrape, it reports every worker's counts.
            r = requests.get(url + "/metrics", timeout=5, headers={"Connection": "close"})
            assert r.status_code == 200
            samples = {}
            for family in text_string_to_metric_families(r.text):
                for s in family.samples:
                    samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
            assert value(samples, "ivr_calls_started_total", origin="incoming") == calls
            assert value(samples, "ivr_consents_total", decision="declined") == calls
            assert value(samples, "ivr_calls_completed_total", status="completed") == calls
        with database(app).engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM consents")).scalar() == calls
        assert len(worker_pids(metrics_dir)) >= 2, "the webhooks were not spread over workers"
    finally:
        proc.terminate()
        proc.wait(15)
    logged = log_path.read_text()
    hooks = [json.loads(line) for line in logged.splitlines()
             if line.startswith("{") and '"event": "webhook"' in line]
    assert {h["call_sid"] for h in hooks} == set(sids)
    assert _phone_like(logged) == []
