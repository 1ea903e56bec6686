"""Hostile and careless input to the JSON API and the auditor pages: a 400 (or 422) with a
clear message, or a clamped open end; never a 5xx."""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml

from ivr.domain import inputs
from ivr.domain.flow import load_flow
from tests.support.auditor import auditor, csrf_token, make_user, place_call

from .conftest import ROOT

__all__ = ["auditor"]  # a fixture, so pytest finds it

ALICE = "+905321234567"
LATEST = "9999-12-30T23:59:59.999999Z"
EARLIEST = "0001-01-02T00:00:00Z"


@pytest.fixture
def granted(local_caller):
    """One call in which Alice grants consent."""
    return place_call(local_caller, ["1"], from_number=ALICE)


def bearer(app, role: str) -> dict:
    return {"Authorization": f"Bearer {make_user(app, f'{role}-inputs', role)}"}


# --- GET /api/consents ----------------------------------------------------------------

@pytest.mark.parametrize("query,field,message", [
    ({"since": "9999-12-31T23:59:59-01:00"}, "since", "after the last date this service"),
    ({"since": "9999-12-31"}, "since", "after the last date this service"),
    ({"until": "0001-01-01T00:00:00+01:00"}, "until", "before the first date this service"),
    ({"since": "å"}, "since", "not an ISO 8601 date or date-time"),
    ({"until": "10000-01-01"}, "until", "not an ISO 8601 date or date-time"),
    ({"limit": "²"}, "limit", "a whole number from 1 to 10000"),
    ({"limit": "9" * 5000}, "limit", "a whole number from 1 to 10000"),
    ({"limit": "0"}, "limit", "a whole number from 1 to 10000"),
    ({"limit": "٣"}, "limit", "a whole number from 1 to 10000"),
])
def test_consents_api_refuses_with_a_json_400(app, client, query, field, message):
    r = client.get("/api/consents", headers=bearer(app, "auditor"), query_string=query)
    assert r.status_code == 400 and r.is_json
    assert r.json["message"] == "invalid query parameters"
    assert message in r.json["errors"][field]


@pytest.mark.parametrize("query,echo", [
    ({"since": "0001-01-01T00:00:00+01:00"}, {"since": EARLIEST}),
    ({"since": "0001-01-01"}, {"since": EARLIEST}),
    ({"until": "9999-12-31T23:59:59-01:00"}, {"until": LATEST}),
    ({"until": "9999-12-31", "since": "2000-01-01"},
     {"until": LATEST, "since": "2000-01-01T00:00:00Z"}),
])
def test_consents_api_clamps_an_open_end(app, client, granted, query, echo):
    r = client.get("/api/consents", headers=bearer(app, "auditor"), query_string=query)
    assert r.status_code == 200, r.json
    assert r.json["query"] == echo
    [row] = r.json["consents"]
    assert row["call_sid"] == granted.call_sid


@pytest.mark.parametrize("path", [
    "/api/calls/" + "C" * 5000, "/api/calls/CA%F0%9F%92%A5", "/api/transfers/" + "f" * 5000,
    "/api/transfers/%E2%80%8B",
])
def test_odd_ids_in_the_path_are_a_json_404(app, client, path):
    r = client.get(path, headers=bearer(app, "admin"))
    assert r.status_code == 404 and r.is_json


# --- the auditor pages and exports ------------------------------------------------------

@pytest.mark.parametrize("query", [
    {"until": "9999-12-31"}, {"since": "0001-01-01"},
    {"since": "0001-01-01", "until": "9999-12-31"},
])
def test_search_page_clamps_an_open_end(auditor, granted, query):
    r = auditor.get("/auditor/", query_string=query)
    assert r.status_code == 200
    assert f"/auditor/calls/{granted.call_sid}" in r.get_data(as_text=True)


@pytest.mark.parametrize("query,message", [
    ({"since": "9999-12-31"}, "after the last date this service can hold"),
    ({"until": "0001-01-01"}, "before the first date this service can hold"),
    ({"since": "0000-01-01"}, "not a date (YYYY-MM-DD)"),
    ({"until": "10000-01-01"}, "not a date (YYYY-MM-DD)"),
])
def test_search_page_refuses_with_an_html_400(auditor, query, message):
    r = auditor.get("/auditor/", query_string=query)
    assert r.status_code == 400 and r.mimetype == "text/html"
    assert message in r.get_data(as_text=True)


def export(client, fmt: str, **criteria):
    token = csrf_token(client, "/auditor/")
    return client.post(f"/auditor/export.{fmt}", data={"csrf_token": token, **criteria})


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("criteria", [
    {"until": "9999-12-31"}, {"since": "0001-01-01"},
])
def test_exports_clamp_an_open_end(auditor, granted, fmt, criteria):
    r = export(auditor, fmt, **criteria)
    assert r.status_code == 200
    body = r.get_data(as_text=True)
    if fmt == "csv":
        sids = [row["call_sid"] for row in csv.DictReader(io.StringIO(body))]
    else:
        doc = json.loads(body)
        sids = [row["call_sid"] for row in doc["rows"]]
        assert doc["query"] == {k: inputs.day(v, k, end=k == "until").isoformat()
                                for k, v in criteria.items()}
    assert sids == [granted.call_sid]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("criteria,message", [
    ({"since": "9999-12-31"}, "after the last date this service can hold"),
    ({"until": "0001-01-01"}, "before the first date this service can hold"),
])
def test_exports_refuse_with_an_html_400(auditor, fmt, criteria, message):
    r = export(auditor, fmt, **criteria)
    assert r.status_code == 400 and r.mimetype == "text/html"
    assert message in r.get_data(as_text=True)


# --- POST /api/transfers ------------------------------------------------------------------

SID = "CA" + "0" * 32


@pytest.mark.parametrize("fields,field,message", [
    ({"return_to": {"type": []}}, "return_to.type", "one of queue, dial, hangup"),
    ({"return_to": {}}, "return_to.type", "one of queue, dial, hangup"),
    ({"return_to": {"type": {}}}, "return_to.type", "one of queue, dial, hangup"),
    ({"return_to": {"type": "queue", "name": "\ud800"}}, "return_to.name", "not valid Unicode"),
    ({"return_to": {"type": "queue", "name": "a\u0085b"}}, "return_to.name", "not blank"),
    ({"return_to": {"type": "dial", "client": "\udfff"}}, "return_to.client",
     "not valid Unicode"),
    ({"return_to": {"type": "dial", "number": ["+902122223344"]}}, "return_to.number",
     "must be a string"),
    ({"return_to": []}, "return_to", "must be an object"),
    ({"flow": ""}, "flow", "unknown flow ''"),
    ({"flow": 7}, "flow", "must be a string"),
    ({"flow": "\ud800"}, "flow", "not valid Unicode"),
    ({"flow": "no-such-flow"}, "flow", "unknown flow 'no-such-flow'"),
    ({"language": "tr "}, "language", "language must be one of tr, en"),
    ({"language": ["tr"]}, "language", "language must be one of tr, en"),
    ({"language": "\ud800"}, "language", "language must be one of tr, en"),
    ({"force": "yes"}, "force", "true or false"),
])
def test_transfer_fields_are_type_checked(app, client, fields, field, message):
    body = {"call_sid": SID, "return_to": {"type": "hangup"}, **fields}
    r = client.post("/api/transfers", data=json.dumps(body), content_type="application/json",
                    headers=bearer(app, "agent"))
    assert r.status_code == 400 and r.is_json
    assert r.json["field"] == field and message in r.json["message"]


@pytest.mark.parametrize("raw,field", [
    ('{"\\ud800": 1}', None),
    ('{"call_sid": "' + SID + '", "return_to": {"type": "hangup", "\\ud800": 1}}', "return_to"),
])
def test_transfer_field_names_are_valid_unicode(app, client, raw, field):
    r = client.post("/api/transfers", data=raw, content_type="application/json",
                    headers=bearer(app, "agent"))
    assert r.status_code == 400 and r.is_json
    assert r.json["field"] == field and "must be valid Unicode text" in r.json["message"]


# --- POST /api/consents/withdrawals ------------------------------------------------------

@pytest.mark.parametrize("raw,key,word", [
    ('{"phone": "+905321234567", "reason": "\\ud800"}', None, "not valid Unicode"),
    ('{"phone": "+905321234567", "reason": "a\\udfffb"}', None, "not valid Unicode"),
    ('{"phone": "+905321234567", "reason": "bell\\u0007"}', None, "no control characters"),
    ('{"phone": "+905321234567", "reason": "\\n"}', None, "not blank"),
    ('{"phone": "\\ud800", "reason": "x"}', None, "phone"),
    ('{"phone": "+905321234567", "reason": "x", "channels": null}', None, "channels"),
    ('{"phone": "+905321234567", "reason": "x", "channels": [[]]}', None, "unknown channel"),
    ('{"phone": "+905321234567", "reason": "x", "channels": [{}]}', None, "unknown channel"),
    ('{"phone": "", "reason": "x"}', None, "phone"),
    ('{"phone": "+905321234567", "reason": "x"}', " ", "Idempotency-Key"),
    ('{"phone": "+905321234567", "reason": "x"}', "", "Idempotency-Key"),
    ('{"phone": "+905321234567", "reason": "x"}', "k\x7f", "Idempotency-Key"),
])
def test_withdrawal_fields_are_checked(app, client, raw, key, word):
    headers = bearer(app, "agent")
    if key is not None:
        headers["Idempotency-Key"] = key
    r = client.post("/api/consents/withdrawals", data=raw, content_type="application/json",
                    headers=headers)
    assert r.status_code == 400 and r.is_json
    assert word in r.json["message"]


def test_a_withdrawal_reason_may_span_lines(app, client):
    r = client.post("/api/consents/withdrawals", headers=bearer(app, "agent"),
                    json={"phone": ALICE, "reason": "called in\n\tno more calls"})
    assert r.status_code == 201
    assert r.json["events"][0]["reason"] == "called in\n\tno more calls"


# --- the OpenAPI document ----------------------------------------------------------------

def test_document_lists_the_flows_and_languages_in_flows_dir():
    """The transfer request's `flow` and `language` enums are the flows shipped in flows/
    and the languages each of them offers, so that schema-valid requests are served."""
    document = yaml.safe_load((ROOT / "ivr" / "static" / "openapi.yaml").read_text())
    props = (document["paths"]["/api/transfers"]["post"]["requestBody"]["content"]
             ["application/json"]["schema"]["properties"])
    shipped = [load_flow(path) for path in sorted((ROOT / "flows").glob("*.yaml"))]
    assert sorted(props["flow"]["enum"]) == sorted(f.id for f in shipped)
    for flow in shipped:
        assert sorted(props["language"]["enum"]) == sorted(flow.languages), flow.id
