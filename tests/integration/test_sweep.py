"""A property sweep over every route of the app: whatever the method, path, query, body and
headers, a bad request gets a 4xx (or a valid answer), never a 500 or a traceback.

Hypothesis draws the requests: random forms, JSON documents and bytes; missing, garbage or
valid credentials (bearer tokens of each role, a logged-in auditor session, and Twilio
signatures computed over the very request, so webhooks are exercised past the signature
check). The routes come from app.url_map, so a route added later is swept too.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from ivr import create_app
from ivr.adapters.simulate import Caller, flask_transport
from ivr.services.accounts import add_user
from ivr.web.current import database, session

from .conftest import AUTH_TOKEN
from .test_health import render_all_prompts

EXAMPLES = 800  # per backend: a few seconds each on 2 cores

WEBHOOK_KEYS = ["CallSid", "AccountSid", "From", "To", "Digits", "CallStatus", "Direction",
                "SequenceNumber", "Timestamp", "CallDuration", "CallbackSource",
                "RecordingSid", "RecordingStatus", "RecordingDuration", "RecordingChannels",
                "RecordingSource", "RecordingTrack", "RecordingStartTime", "RecordingUrl",
                "ErrorCode"]
FORM_KEYS = [*WEBHOOK_KEYS,
             "QueueResult", "DialCallStatus", "name", "secret", "next", "csrf_token", "phone",
             "call_sid", "since", "until", "decision", "limit", "fmt"]
QUERY_KEYS = ["run", "step", "s", "transfer", "phone", "since", "until", "decision", "limit",
              "call_sid", "next", "page"]
JSON_KEYS = ["phone", "channels", "reason", "call_sid", "return_to", "language", "flow",
             "force", "type", "queue", "number", "url"]

# Beyond every column and every datetime: numbers past 64 bits, far-future and far-past
# dates (with zones that push them over datetime's ends in UTC), and over-long fields.
FAR_DATES = ["Fri, 31 Dec 9999 23:59:59 -0100", "Mon, 01 Jan 0001 00:00:00 +0100",
             "Fri, 31 Dec 9999 23:59:59 +0000", "Mon, 01 Jan 0001 00:00:00 -2359",
             "Sat, 01 Jan 2100 00:00:00 +0000", "Wed, 31 Dec 1969 23:59:59 +0000",
             "Wed, 25 Nov 26 20:00:00 +0000", "9999-12-31T23:59:59-01:00",
             "0001-01-01T00:00:00+01:00", "Wed, 25 Nov 2026 20:00:00 +9999"]
extreme_text = st.one_of(
    st.integers(min_value=-2**80, max_value=2**80).map(str),
    st.sampled_from([str(2**31), str(2**31 - 1), str(2**53), str(2**63), str(2**63 - 1),
                     str(2**64), str(2**64 + 1), str(-2**63), str(-2**63 - 1), str(-2**64 - 1),
                     "9" * 5000, "-" + "9" * 400]),
    st.sampled_from(FAR_DATES),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=st.just(UTC)).map(lambda d: format_datetime(d, usegmt=True)),
    st.sampled_from(["CA" + "a" * 4998, "x" * 5000, "é" * 3000, "1" * 5000]),
)
weird_text = st.one_of(
    st.text(max_size=40),
    extreme_text,
    st.sampled_from(["", " ", "0", "-1", "1e309", "NaN", "null", "true", "[]", "{}",
                     "+905321234567", "0532 123 45 67", "2026-02-30", "2026-01-01T25:00:00Z",
                     "9" * 400, "\x00", "é" * 50, "../../etc/passwd", "%00", "<script>",
                     "completed", "in-progress", "granted", "ARAMA", "tr", "en", "CA" + "0" * 32,
                     "a" * 32]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False) | weird_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(JSON_KEYS) | st.text(max_size=8), children, max_size=5),
    max_leaves=12)


@pytest.fixture
def sweep_app(app_config):
    app_config.update(RATELIMIT_API="1000000 per minute", RATELIMIT_LOGIN="1000000 per minute",
                      WTF_CSRF_ENABLED=False)
    application = create_app(app_config)
    database(application).create_all()
    render_all_prompts(application)  # so /readyz is 200 and a 503 there would be a finding
    yield application
    database(application).engine.dispose()


def _tokens(app) -> dict[str, str]:
    out = {}
    with app.app_context():
        s = session()
        with s.begin():
            for role in ("admin", "agent", "auditor"):
                out[role] = add_user(s, f"sweep-{role}", role)[1]
    return out


def _routes(app) -> list[tuple[str, str, list[str]]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, method, sorted(rule.arguments)))
    return sorted(out)


def test_no_request_gets_a_500(sweep_app):
    app = sweep_app
    tokens = _tokens(app)
    routes = _routes(app)
    assert any(r[0] == "/voice/incoming" for r in routes) and any(
        r[0].startswith("/api/") for r in routes)
    anonymous = app.test_client()
    auditor = app.test_client()
    r = auditor.post("/login", data={"name": "sweep-auditor", "secret": tokens["auditor"]})
    assert r.status_code == 302
    # A real call, so that run ids, call SIDs and steps drawn below sometimes exist.
    caller = Caller(app.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(app.test_client()))
    first = caller.dial()
    run_match = re.search(r"run=(\w+)", first.gather_action or "")
    known = {"call_sid": caller.call_sid, "run": run_match.group(1) if run_match else "x"}
    validator = RequestValidator(AUTH_TOKEN)
    seen: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def sweep(data):
        rule, method, args = data.draw(st.sampled_from(routes), label="route")
        path = rule
        for name in args:
            value = data.draw(st.one_of(weird_text, st.just(known["call_sid"]),
                                        st.sampled_from(["csv", "json", "zip", "a" * 32])),
                              label=name)
            path = re.sub(rf"<(?:\w+:)?{name}>", quote(value, safe="") or "x", path)
        query = data.draw(st.dictionaries(
            st.sampled_from(QUERY_KEYS), st.one_of(weird_text, st.just(known["run"]),
                                                   st.integers(-1, 5).map(str)), max_size=4),
            label="query")
        url = path + ("?" + urlencode(query) if query else "")
        kind = data.draw(st.sampled_from(["none", "form", "json", "bytes"]), label="body")
        headers = {}
        kwargs = {}
        form = None
        if kind == "form":
            form = data.draw(st.dictionaries(st.sampled_from(FORM_KEYS) | st.text(max_size=6),
                                             weird_text, max_size=8), label="form")
            if data.draw(st.booleans(), label="real CallSid"):
                form["CallSid"] = known["call_sid"]
            kwargs["data"] = form
        elif kind == "json":
            kwargs["data"] = json.dumps(data.draw(json_values, label="json"))
            kwargs["content_type"] = "application/json"
        elif kind == "bytes":
            kwargs["data"] = data.draw(st.binary(max_size=200), label="bytes")
            kwargs["content_type"] = data.draw(st.sampled_from([
                "application/json", "application/x-www-form-urlencoded", "text/plain",
                "multipart/form-data; boundary=x", "application/json; charset=utf-16"]),
                label="content type")
        auth = data.draw(st.sampled_from(["none", "garbage", "admin", "agent", "auditor"]),
                         label="auth")
        if auth == "garbage":
            headers["Authorization"] = data.draw(st.sampled_from(
                ["Bearer", "Bearer ", "Basic abc", "Bearer " + "x" * 300, "bearer ivr_x"]))
        elif auth != "none":
            headers["Authorization"] = f"Bearer {tokens[auth]}"
        if data.draw(st.booleans(), label="signed"):
            signed_url = app.config["PUBLIC_URL"] + url
            headers["X-Twilio-Signature"] = validator.compute_signature(
                signed_url, form if form is not None else {})
            headers["I-Twilio-Idempotency-Token"] = data.draw(weird_text.filter(
                lambda t: "\n" not in t and "\r" not in t), label="token")
        client = auditor if data.draw(st.booleans(), label="logged in") else anonymous
        response = client.open(url, method=method, headers=headers, **kwargs)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        body = response.get_data().decode("utf-8", "replace")  # zips and WAVs too
        assert response.status_code < 500, (method, url, kind, auth, body[:300])
        assert "Traceback" not in body

    sweep()
    # The sweep reached the code behind the doors, not only the 4xx at the doors.
    assert seen.get(200, 0) + seen.get(201, 0) + seen.get(204, 0) > 10, seen
    assert len(seen) >= 5, seen


WEBHOOK_EXAMPLES = 300  # per backend


def test_signed_webhooks_with_values_beyond_every_range(sweep_app):
    """Every voice webhook, always signed, mostly for a real call and run: numbers beyond
    64 bits, far dates and over-long fields get 200 with valid TwiML (or a 400 for a
    CallSid Twilio never sends), never a 5xx; the call goes on and stores what it can."""
    app = sweep_app
    caller = Caller(app.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(app.test_client()))
    first = caller.dial()
    run = re.search(r"run=(\w+)", first.gather_action).group(1)
    token = re.search(r"[?&]s=([^&]+)", first.gather_action).group(1)
    client = app.test_client()
    validator = RequestValidator(AUTH_TOKEN)
    paths = ["/voice/incoming", "/voice/status", "/voice/recording", "/voice/gather",
             "/voice/transfer"]
    seen: dict[int, int] = {}

    @settings(max_examples=WEBHOOK_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def sweep(data):
        path = data.draw(st.sampled_from(paths), label="path")
        form = {**caller.params(), **data.draw(st.dictionaries(
            st.sampled_from(WEBHOOK_KEYS), extreme_text | weird_text, max_size=8),
            label="form")}
        if data.draw(st.booleans(), label="real CallSid"):
            form["CallSid"] = caller.call_sid
        query = {}
        if path == "/voice/gather":
            query = {"run": data.draw(st.sampled_from([run, "x" * 40]), label="run"),
                     "step": data.draw(st.one_of(st.integers(0, 3).map(str), extreme_text),
                                       label="step"),
                     "s": data.draw(st.sampled_from([token, "garbage", ""]), label="s")}
        elif path == "/voice/transfer":
            query = {"transfer": data.draw(weird_text, label="transfer")}
        # NUL characters get a 400 before any route (tests/test_security.py): not here.
        form = {k: v.replace("\x00", "") for k, v in form.items()}
        query = {k: v.replace("\x00", "") for k, v in query.items()}
        url = path + ("?" + urlencode(query) if query else "")
        headers = {"X-Twilio-Signature": validator.compute_signature(
            app.config["PUBLIC_URL"] + url, form)}
        response = client.post(url, data=form, headers=headers)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        sid = form["CallSid"].strip()
        body = response.get_data(as_text=True)
        assert response.status_code < 500, (url, form, body[:300])
        if len(urlencode(form)) > app.config["MAX_CONTENT_LENGTH"]:
            assert response.status_code == 413
        elif not sid or len(sid) > 64 or not sid.isprintable():
            assert response.status_code == 400, (url, form, body[:300])
        else:
            assert response.status_code == 200, (url, form, body[:300])
            assert ET.fromstring(body).tag == "Response"

    sweep()
    assert seen.get(200, 0) > WEBHOOK_EXAMPLES // 2, seen
    # The real call was stored through all of it.
    with app.app_context():
        from ivr.storage.models import Call

        assert session().get(Call, caller.call_sid) is not None


def test_the_openapi_document_lists_exactly_the_api_routes(app):
    """ivr/static/openapi.yaml (served at /static/openapi.yaml) documents every /api route."""
    from pathlib import Path

    import yaml
    from jsonschema import Draft202012Validator

    spec_path = Path(app.static_folder) / "openapi.yaml"
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    assert spec["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items()
                  for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            served |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served
    # Every schema in it is a valid JSON Schema (OpenAPI 3.1 uses draft 2020-12).
    for schema in spec["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    with app.test_client().get("/static/openapi.yaml") as served_file:
        assert served_file.status_code == 200
