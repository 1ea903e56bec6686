"""The auditor's JSON API: GET /api/calls/<CallSid> and GET /api/consents."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from ivr.services.consents import EXPORT_FIELDS
from ivr.services.reports import call_timeline
from ivr.web.current import database, personal_data
from tests.support.auditor import audit_bodies, make_user, place_call

ALICE = "+905321234567"
BOB = "+905339876543"


@pytest.fixture
def auth(app):
    return {"Authorization": f"Bearer {make_user(app, 'api-auditor', 'auditor')}"}


@pytest.fixture
def calls(local_caller):
    return {"alice": place_call(local_caller, ["1"], from_number=ALICE),
            "bob": place_call(local_caller, ["2"], from_number=BOB)}


def test_call_document_is_the_timeline(app, client, auth, calls):
    sid = calls["alice"].call_sid
    r = client.get(f"/api/calls/{sid}", headers=auth)
    assert r.status_code == 200 and r.is_json
    with app.app_context():
        s = database(app).sessionmaker()
        expected = call_timeline(s, sid, personal_data())
        s.close()
    assert r.json == expected
    assert r.json["consent"]["decision"] == "granted" and r.json["from"] == ALICE
    [entry] = audit_bodies(app, "auditor.access")
    assert entry["ref"] == sid
    assert entry["data"]["action"] == "api.call" and entry["data"]["via"] == "api"
    assert entry["data"]["user"] == "api-auditor" and entry["data"]["found"] is True


def test_unknown_call_is_a_json_404(app, client, auth):
    r = client.get("/api/calls/CA" + "0" * 32, headers=auth)
    assert r.status_code == 404 and r.is_json and r.json["status"] == 404
    assert client.get("/api/calls/x%20y", headers=auth).status_code == 404
    assert audit_bodies(app, "auditor.access")[0]["data"]["found"] is False


def test_consents_by_phone_and_decision(app, client, auth, calls):
    r = client.get("/api/consents", headers=auth, query_string={"phone": "0532 123 45 67"})
    assert r.status_code == 200
    [row] = r.json["consents"]
    assert set(EXPORT_FIELDS) <= set(row)
    assert row["call_sid"] == calls["alice"].call_sid and row["phone"] == ALICE
    assert r.json["count"] == 1 and r.json["truncated"] is False
    phone_hmac = r.json["query"]["phone"]
    assert re.fullmatch(r"[0-9a-f]{64}", phone_hmac)  # echoed as its HMAC, not the number
    r = client.get("/api/consents?decision=declined", headers=auth)
    assert [c["call_sid"] for c in r.json["consents"]] == [calls["bob"].call_sid]
    entry = audit_bodies(app, "auditor.access")[0]["data"]
    assert entry["action"] == "api.consents" and entry["call_sids"] == [calls["alice"].call_sid]
    assert entry["phone"] == phone_hmac and entry["query"] == {"phone": phone_hmac}


def test_consents_by_time_range_and_limit(client, auth, calls):
    now = datetime.now(UTC)
    since = (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    r = client.get("/api/consents", headers=auth, query_string={"since": since})
    assert r.json["count"] == 2
    r = client.get("/api/consents", headers=auth,
                   query_string={"until": (now - timedelta(hours=1)).date().isoformat()})
    assert r.json["count"] == 0
    r = client.get("/api/consents?limit=1", headers=auth)
    assert r.json["count"] == 1 and r.json["truncated"] is True
    assert r.json["consents"][0]["call_sid"] == calls["alice"].call_sid  # oldest first


@pytest.mark.parametrize("query,field", [
    ("phone=hello", "phone"),
    ("since=yesterday", "since"),
    ("until=2025-02-30", "until"),
    ("decision=maybe", "decision"),
    ("limit=0", "limit"),
    ("limit=abc", "limit"),
    ("phone_number=%2B905321234567", "parameters"),
])
def test_bad_parameters_are_a_400_naming_the_field(app, client, auth, query, field):
    r = client.get(f"/api/consents?{query}", headers=auth)
    assert r.status_code == 400 and r.is_json
    assert field in r.json["errors"], r.json
    assert not audit_bodies(app, "auditor.access")


@pytest.mark.parametrize("query", ["since=2025-02-01&until=2025-01-01",
                                   "since=2025-01-01&until=2025-01-01T00:00:00Z"])
def test_an_empty_time_range_is_a_422_naming_until(app, client, auth, query):
    r = client.get(f"/api/consents?{query}", headers=auth)
    assert r.status_code == 422 and r.is_json
    assert r.json["errors"] == {"until": "must be after since"}
    assert not audit_bodies(app, "auditor.access")
