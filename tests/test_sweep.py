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
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from ivr import create_app
from ivr.accounts import add_user
from ivr.db import database, session
from ivr.simulate import Caller, flask_transport

from .conftest import AUTH_TOKEN
from .test_health import render_all_prompts

EXAMPLES = 800  # per backend: a few seconds each on 2 cores

FORM_KEYS = ["CallSid", "AccountSid", "From", "To", "Digits", "CallStatus", "Direction",
             "SequenceNumber", "Timestamp", "CallDuration", "RecordingSid", "RecordingStatus",
             "RecordingDuration", "RecordingStartTime", "RecordingUrl", "ErrorCode",
             "QueueResult", "DialCallStatus", "name", "secret", "next", "csrf_token", "phone",
             "call_sid", "since", "until", "decision", "limit", "fmt"]
QUERY_KEYS = ["run", "step", "s", "transfer", "phone", "since", "until", "decision", "limit",
              "call_sid", "next", "page"]
JSON_KEYS = ["phone", "channels", "reason", "call_sid", "return_to", "language", "flow",
             "force", "type", "queue", "number", "url"]

weird_text = st.one_of(
    st.text(max_size=40),
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
