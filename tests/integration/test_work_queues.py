"""The work queues (/auditor/queues) over HTTP: what they list
against the stored records, and their actions, each refused without its CSRF token and
each written to the audit log with who did it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ivr.services.kvkk import subject_requests as sr
from ivr.storage.kvkk_models import IysBatch, IysPushAnswer, SubjectRequest
from ivr.storage.models import Consent
from ivr.web.current import apply_record, database, personal_data, spool
from tests.integration.test_spool_quarantine import _offline_call
from tests.support.auditor import audit_bodies, csrf_token, login, make_user, parse_html
from tests.support.fake_iys import FakeIys
from tests.support.lifecycle import add_consent, run_cli

NOW = datetime.now(UTC).replace(microsecond=0)
TOKEN = "iys-test-token"


@pytest.fixture
def app_config(app_config, tmp_path):
    app_config["IYS_TOKEN"] = TOKEN
    app_config["IYS_OUT_DIR"] = str(tmp_path / "iys-out")
    return app_config


@pytest.fixture
def fake_iys():
    server = FakeIys(TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def auditor(app, client):
    """A client logged in as the auditor "selin"."""
    assert login(client, "selin", make_user(app, "selin", "auditor")).status_code == 302
    return client


def open_request(app, phone: str, days_ago: int) -> int:
    with app.app_context():
        s = database(app).sessionmaker()
        with s.begin():
            req = sr.open_request(s, personal_data(), phone=phone, kind="learn",
                                  channel="email", received_on=(NOW - timedelta(days=days_ago))
                                  .date(), note=None, now=NOW)
        s.close()
    return req.id


def page(client):
    r = client.get("/auditor/queues")
    assert r.status_code == 200, r.get_data(as_text=True)
    return parse_html(r.get_data(as_text=True))


def quarantine(app) -> tuple[str, str, dict]:
    """Two quarantined records: a key press whose call start is elsewhere (it applies once
    the start arrives), and a record of an unknown kind; and the start record."""
    with app.app_context():
        sp = spool()
        sp.max_wait = 0
        start, key = _offline_call(app, "CA" + "2" * 32, "1")
        sp.write(key)
        sp.write({"kind": "telepathy", "received_at": NOW.isoformat(), "form": {}})
        assert len(sp.drain(apply_record).quarantined) == 2
        gather_id, unknown_id = [q.id for q in sp.quarantined()]
    return gather_id, unknown_id, start


def test_the_queues_list_what_is_stored(app, auditor):
    add_consent(app, "+905320000001", "granted", NOW - timedelta(days=30))
    add_consent(app, "+905320000002", "granted", NOW, channels=["ARAMA"])
    add_consent(app, "+905320000003", "declined", NOW - timedelta(days=30), channels=["ARAMA"])
    late = open_request(app, "+905320000004", 35)
    soon = open_request(app, "+905320000005", 2)
    doc = page(auditor)
    rows = {(r.get("data-consent"), r.get("data-type")): r
            for r in doc.findall("tr", data_consent=True)}
    # The CLI's own list is the reference: same records, same states and actions.
    listed = json.loads(run_cli(app, "iys", "pending", "--json").output.split("WARNING")[0])
    assert {(str(x["consent_id"]), x["type"]) for x in listed} == set(rows)
    for x in listed:
        row = rows[(str(x["consent_id"]), x["type"])]
        assert row.get("data-state") == x["state"] and row.get("data-action") == x["action"]
    overdue = [r for r in rows.values() if r.get("data-state") == "overdue"]
    assert len(overdue) == 3 and all("state-overdue" in r.get("class") for r in overdue)
    assert "3 record(s) are past the İYS deadline" in doc.find("p", id="iys-overdue").text
    skipped = [r for r in rows.values() if r.get("data-action") == "skipped"]
    assert len(skipped) == 1 and "H175" in skipped[0].text
    # Open requests with days left; the overdue one says so.
    reqs = {r.get("data-request"): r for r in doc.findall("tr", data_request=True)}
    assert reqs[str(late)].get("data-days-left") == "-5"
    assert "5 day(s) overdue" in reqs[str(late)].text
    assert reqs[str(soon)].get("data-days-left") == "28"
    assert "No record is in quarantine." in doc.find("section", id="quarantine").text
    [seen] = [b["data"] for b in audit_bodies(app, "auditor.access")]
    assert (seen["action"], seen["user"], seen["query"]) == (
        "view.queues", "selin", {"iys_pending": len(listed), "subject_requests": 2})


def test_close_a_request_needs_the_token_and_is_audited(app, auditor):
    rid = open_request(app, "+905320000004", 3)
    r = auditor.post(f"/auditor/queues/requests/{rid}/close", data={"outcome": "answered"})
    assert r.status_code == 400 and "security token" in r.get_data(as_text=True)
    with database(app).sessionmaker() as s:
        assert s.get(SubjectRequest, rid).status == "open"
    token = csrf_token(auditor, "/auditor/queues")
    r = auditor.post(f"/auditor/queues/requests/{rid}/close",
                     data={"outcome": "", "csrf_token": token})
    assert r.status_code == 302
    assert "Write what was done" in auditor.get("/auditor/queues").get_data(as_text=True)
    r = auditor.post(f"/auditor/queues/requests/{rid}/close",
                     data={"outcome": "sent the report by email", "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/auditor/queues"
    html = auditor.get("/auditor/queues").get_data(as_text=True)
    assert f"Request #{rid} is closed." in html and "No subject request is open." in html
    with database(app).sessionmaker() as s:
        req = s.get(SubjectRequest, rid)
        assert req.status == "closed"
        assert app.extensions["ivr_pii"].decrypt(req.outcome_enc) == "sent the report by email"
    [closed] = audit_bodies(app, "subject.request.closed")
    assert closed["data"]["request"] == rid and closed["data"]["on_time"] is True
    action = [b["data"] for b in audit_bodies(app, "auditor.access")
              if b["data"]["action"] == "close.subject_request"]
    assert action == [{"user_id": action[0]["user_id"], "user": "selin", "role": "auditor",
                       "action": "close.subject_request", "via": "web", "request": rid,
                       "on_time": True}]


def test_retry_a_failed_iys_push(app, auditor, fake_iys):
    add_consent(app, "+905320000001", "granted", NOW - timedelta(hours=1))
    fake_iys.fail_next = [503]
    run_cli(app, "iys", "export", "--push", fake_iys.url, ok=False)
    with database(app).sessionmaker() as s:
        batch = s.scalars(select(IysBatch)).one()
    assert batch.status == "push_failed"
    doc = page(auditor)
    assert doc.find("tr", data_batch=batch.id) is not None
    r = auditor.post(f"/auditor/queues/iys/{batch.id}/push")
    assert r.status_code == 400 and len(fake_iys.requests) == 1
    token = csrf_token(auditor, "/auditor/queues")
    r = auditor.post(f"/auditor/queues/iys/{batch.id}/push", data={"csrf_token": token})
    assert r.status_code == 302
    assert "was accepted by İYS" in auditor.get("/auditor/queues").get_data(as_text=True)
    assert fake_iys.requests[0]["body"] == fake_iys.requests[1]["body"]
    with database(app).sessionmaker() as s:
        assert s.get(IysBatch, batch.id).status == "accepted"
        assert [a.outcome for a in s.scalars(select(IysPushAnswer).order_by(IysPushAnswer.id))
                ] == ["failed", "accepted"]
    assert [b["data"]["outcome"] for b in audit_bodies(app, "iys.pushed")] == ["failed",
                                                                               "accepted"]
    [who] = [b["data"] for b in audit_bodies(app, "auditor.access")
             if b["data"]["action"] == "retry.iys_push"]
    assert who["batch"] == batch.id and who["outcome"] == "accepted" and who["user"] == "selin"
    # Accepted now: a second retry is refused and sends nothing.
    auditor.post(f"/auditor/queues/iys/{batch.id}/push", data={"csrf_token": token})
    assert "only a failed push is retried" in auditor.get("/auditor/queues").get_data(as_text=True)
    assert len(fake_iys.requests) == 2


def test_retry_and_discard_quarantined_records(app, auditor):
    gather_id, unknown_id, start = quarantine(app)
    doc = page(auditor)
    assert [r.get("data-record") for r in doc.findall("tr", data_record=True)] == [
        gather_id, unknown_id]
    for action in ("retry", "discard"):
        r = auditor.post(f"/auditor/queues/spool/{gather_id}/{action}")
        assert r.status_code == 400
    token = csrf_token(auditor, "/auditor/queues")
    # Retried before its cause is fixed: back in quarantine, and the entry says so.
    r = auditor.post(f"/auditor/queues/spool/{gather_id}/retry", data={"csrf_token": token})
    assert r.status_code == 302
    assert f"Record {gather_id} was retried: quarantined again." in \
        auditor.get("/auditor/queues").get_data(as_text=True)
    # The call's start arrives (from another server's spool): the retry applies the key.
    with app.app_context():
        spool().write(start)
        assert spool().drain(apply_record).applied == 1
    auditor.post(f"/auditor/queues/spool/{gather_id}/retry", data={"csrf_token": token})
    assert f"Record {gather_id} was retried: applied." in \
        auditor.get("/auditor/queues").get_data(as_text=True)
    with database(app).sessionmaker() as s:
        assert [(c.call_sid, c.decision) for c in s.scalars(select(Consent))] == [
            ("CA" + "2" * 32, "granted")]
    retried = [b["data"] for b in audit_bodies(app, "spool.retried")]
    assert [(d["record"], d["outcome"], d["user"]) for d in retried] == [
        (gather_id, "quarantined again", "selin"), (gather_id, "applied", "selin")]
    r = auditor.post(f"/auditor/queues/spool/{unknown_id}/discard",
                     data={"csrf_token": token, "reason": "a test record"})
    assert r.status_code == 302
    with app.app_context():
        assert spool().quarantined() == []
    [discarded] = audit_bodies(app, "spool.discarded")
    assert discarded["data"]["record"] == unknown_id
    assert discarded["data"]["reason"] == "a test record"
    assert [b["data"]["record"] for b in audit_bodies(app, "auditor.access")
            if b["data"]["action"] == "discard.spool_record"] == [unknown_id]
    auditor.post(f"/auditor/queues/spool/{unknown_id}/discard", data={"csrf_token": token})
    assert f"There is no quarantined record {unknown_id}." in \
        auditor.get("/auditor/queues").get_data(as_text=True)


def test_retention_runs_are_listed_with_their_log(app, auditor):
    add_consent(app, "+905320000009", "declined", NOW - timedelta(days=5 * 365))
    run_cli(app, "retention", "run")
    doc = page(auditor)
    [run] = doc.findall("details", data_run=True)
    [entry] = audit_bodies(app, "retention.run")
    assert run.get("data-run") == entry["data"]["run_id"]
    assert "consent_records 1" in run.text and "retention period ended" in run.text
    assert "consent_records 1,095" in run.text  # the policy in force, in days (Babel, en)
