"""Retention: the periodic job destroys what is due and keeps what is not, logs every act
in a destruction log kept at least 3 years, deletes recordings at Twilio (a local fake
over real HTTP, through the real twilio client), and leaves the audit chain verifiable."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update

from ivr.domain.kvkk.policy import PolicyError, load_policy
from ivr.storage import audit_store
from ivr.storage.kvkk_models import DestructionLog, IysBatch, SubjectRequest
from ivr.storage.models import AuditEntry, Call, Consent, Recording, WebhookRequest
from tests.integration.conftest import ROOT
from tests.support.lifecycle import add_consent, run_cli, session

NOW = datetime.now(UTC)
YEAR = timedelta(days=365)
REC_PATH = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Recordings/(RE\w+)\.json$")


class FakeTwilioRecordings:
    """DELETE /2010-04-01/Accounts/{AccountSid}/Recordings/{Sid}.json, as Twilio answers."""

    def __init__(self):
        self.deleted: list[str] = []
        self.known: set[str] = set()
        self.broken: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_DELETE(self):
                m = REC_PATH.match(self.path)
                sid = m.group(2) if m else None
                if sid in fake.broken:
                    return self._json(500, {"code": 20500, "message": "Internal Server Error",
                                            "status": 500})
                if sid not in fake.known:
                    return self._json(404, {"code": 20404, "status": 404,
                                            "message": "The requested resource was not found"})
                fake.known.discard(sid)
                fake.deleted.append(sid)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def twilio():
    fake = FakeTwilioRecordings()
    yield fake
    fake.stop()


@pytest.fixture
def app_config(app_config, twilio):
    app_config["TWILIO_API_URL"] = twilio.url
    return app_config


def backdate_call(app, call_sid: str, when: datetime) -> None:
    s = session(app)
    with s.begin():
        s.execute(update(Call).where(Call.call_sid == call_sid)
                  .values(created_at=when, started_at=when, answered_at=when, ended_at=when))
        s.execute(update(WebhookRequest).where(WebhookRequest.call_sid == call_sid)
                  .values(received_at=when))
        s.execute(update(Consent).where(Consent.call_sid == call_sid).values(captured_at=when))
    s.close()


def recording(c, rsid: str):
    r = c.signed_post(c.url("/voice/recording"), c.params(
        RecordingSid=rsid, RecordingStatus="completed", RecordingDuration="30",
        RecordingUrl=f"https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/{rsid}"))
    assert r.status == 200


def counts(app) -> dict:
    s = session(app)
    try:
        return {
            "calls_with_phone": s.scalar(select(func.count()).select_from(Call)
                                         .where(Call.phone_enc.is_not(None))),
            "consents_with_phone": s.scalar(select(func.count()).select_from(Consent)
                                            .where(Consent.phone_enc.is_not(None))),
            "recordings": s.scalar(select(func.count()).select_from(Recording)),
            "webhooks": s.scalar(select(func.count()).select_from(WebhookRequest)),
            "log": s.scalar(select(func.count()).select_from(DestructionLog)),
            "audit": s.scalar(select(func.count()).select_from(AuditEntry)),
        }
    finally:
        s.close()


def test_a_retention_run_destroys_what_is_due_and_logs_it(local_caller, app, twilio, tmp_path):
    old = NOW - 3 * YEAR
    # A call three years ago that decided nothing: due (2 years for call data).
    silent = local_caller(from_number="+905550000001")
    silent.run(["h"])
    recording(silent, "RE" + "1" * 32)
    backdate_call(app, silent.call_sid, old)
    # A consent given three years ago and still valid: kept, with its call and recording.
    granted = local_caller(from_number="+905550000002")
    granted.run(["1"])
    recording(granted, "RE" + "2" * 32)
    backdate_call(app, granted.call_sid, old)
    # Granted five years ago, withdrawn four years ago (> 3 years of proof): due.
    gone = local_caller(from_number="+905550000003")
    gone.run(["1"])
    backdate_call(app, gone.call_sid, NOW - 5 * YEAR)
    add_consent(app, "+905550000003", "withdrawn", NOW - 4 * YEAR, source="api")
    # Granted two years ago, withdrawn a year ago: still within the proof period.
    proof = local_caller(from_number="+905550000004")
    proof.run(["1"])
    backdate_call(app, proof.call_sid, NOW - 2 * YEAR)
    add_consent(app, "+905550000004", "withdrawn", NOW - YEAR, source="api")
    # A call today.
    fresh = local_caller(from_number="+905550000005")
    fresh.run(["2"])
    recording(fresh, "RE" + "5" * 32)
    twilio.known |= {"RE" + n * 32 for n in "125"}
    s = session(app)
    with s.begin():
        s.add_all([SubjectRequest(phone_hmac="x" * 64, phone_enc="enc", kind="learn",
                                  channel="email", received_on=(NOW - 4 * YEAR).date(),
                                  due_on=(NOW - 4 * YEAR).date(), status="closed",
                                  opened_at=NOW - 4 * YEAR, closed_at=NOW - 4 * YEAR + YEAR / 52),
                   SubjectRequest(phone_hmac="y" * 64, phone_enc="enc", kind="erasure",
                                  channel="email", received_on=(NOW - 4 * YEAR).date(),
                                  due_on=(NOW - 4 * YEAR).date(), status="open",
                                  opened_at=NOW - 4 * YEAR)])
        old_file = tmp_path / "iys-old.json"
        old_file.write_text("[]")
        s.add(IysBatch(id="iys-old", created_at=NOW - timedelta(days=40), record_count=1,
                       sha256="0" * 64, file=str(old_file), status="accepted"))
        s.execute(insert(DestructionLog), [
            dict(at=NOW - 4 * YEAR, run_id="r" * 32, category="webhook_logs", action="deleted",
                 table_name="webhook_requests", row_ref="1", reason="old"),
            dict(at=NOW - 2 * YEAR, run_id="s" * 32, category="webhook_logs", action="deleted",
                 table_name="webhook_requests", row_ref="2", reason="recent")])
        # Each earlier fact has its leaf, as the export and the earlier runs would have.
        audit_store.append(s, [
            ("iys.export", None, {"batches": [{"id": "iys-old", "records": 1,
                                               "sha256": "0" * 64}]}),
            *[("retention.run", f"retention:{rid}", {"run_id": rid, "counts": {}})
              for rid in ("r" * 32, "s" * 32)]])
    s.close()

    before = counts(app)
    dry = run_cli(app, "retention", "run", "--dry-run").output
    assert "Would destroy" in dry
    assert re.search(r"transaction_security\s+2", dry) and re.search(r"consent_records\s+2", dry)
    assert "destruction records older than the kept period: 1 would be removed" in dry
    assert counts(app) == before and twilio.deleted == [] and old_file.exists()

    out = run_cli(app, "retention", "run").output
    assert "Destroyed (deleted or anonymised), per category:" in out
    run_id = re.search(r"run ([0-9a-f]{32})", out).group(1)
    s = session(app)
    calls = {c.call_sid: c for c in s.scalars(select(Call))}
    assert calls[silent.call_sid].phone_enc is None and calls[silent.call_sid].phone_hmac is None
    assert calls[gone.call_sid].phone_enc is None
    for kept in (granted, proof, fresh):
        assert calls[kept.call_sid].phone_enc is not None
    decisions = {(c.call_sid, c.decision): c for c in s.scalars(select(Consent))}
    assert decisions[(gone.call_sid, "granted")].phone_enc is None
    assert decisions[(granted.call_sid, "granted")].phone_enc is not None
    assert decisions[(proof.call_sid, "granted")].phone_enc is not None
    assert [c.decision for c in s.scalars(select(Consent).where(Consent.phone_enc.is_(None),
                                                                Consent.call_sid.is_(None)))] \
        == ["withdrawn"]
    assert {r.recording_sid for r in s.scalars(select(Recording))} == {"RE" + "2" * 32,
                                                                       "RE" + "5" * 32}
    assert twilio.deleted == ["RE" + "1" * 32]
    assert s.scalar(select(func.count()).select_from(WebhookRequest).where(
        WebhookRequest.call_sid.in_([silent.call_sid, granted.call_sid, gone.call_sid,
                                     proof.call_sid]))) == 0
    assert s.scalar(select(func.count()).select_from(WebhookRequest).where(
        WebhookRequest.call_sid == fresh.call_sid)) > 0
    reqs = {r.status: r for r in s.scalars(select(SubjectRequest))}
    assert reqs["closed"].phone_enc is None and reqs["open"].phone_enc == "enc"
    assert not old_file.exists()
    log = list(s.scalars(select(DestructionLog).where(DestructionLog.run_id == run_id)))
    acts = {}
    for e in log:
        acts.setdefault((e.category, e.action), set()).add(e.row_ref)
    assert acts[("transaction_security", "anonymised")] == {silent.call_sid, gone.call_sid}
    assert acts[("recording_metadata", "deleted")] == {"RE" + "1" * 32}
    assert len(acts[("consent_records", "anonymised")]) == 2
    assert acts[("subject_requests", "anonymised")] == {str(reqs["closed"].id)}
    assert acts[("iys_batch_files", "deleted")] == {"iys-old"}
    assert len(acts[("webhook_logs", "deleted")]) > 0
    assert all(e.reason == "retention period ended" for e in log)
    # Destruction records are kept 3 years: the 4-year-old one went, the 2-year-old stays.
    assert {e.reason for e in s.scalars(select(DestructionLog).where(
        DestructionLog.run_id != run_id))} == {"recent"}
    entry = s.scalars(select(AuditEntry).where(AuditEntry.kind == "retention.run",
                                               AuditEntry.ref == f"retention:{run_id}")).one()
    s.close()
    body = json.loads(entry.body)["data"]
    assert body["run_id"] == run_id and body["counts"]["transaction_security"] == 2
    assert body["pruned_destruction_log"] == 1
    assert "+90555" not in entry.body
    # The chain holds no personal data and was never touched: it still verifies.
    verify = run_cli(app, "audit", "verify")
    assert verify.output.startswith("ok:"), verify.output
    # A second run finds nothing more to destroy.
    again = run_cli(app, "retention", "run").output
    assert all(line.strip().endswith(" 0") for line in again.splitlines()[1:7]), again
    assert run_cli(app, "audit", "verify").output.startswith("ok:")


def test_a_recording_twilio_cannot_delete_waits_for_the_next_run(local_caller, app, twilio):
    c = local_caller()
    c.run(["h"])
    recording(c, "RE" + "9" * 32)
    backdate_call(app, c.call_sid, NOW - 3 * YEAR)
    twilio.known.add("RE" + "9" * 32)
    twilio.broken.add("RE" + "9" * 32)
    r = run_cli(app, "retention", "run", ok=False)
    assert r.exit_code == 1
    assert f"NOT DONE RE{'9' * 32}: Twilio answered HTTP 500" in r.output
    s = session(app)
    assert s.scalar(select(func.count()).select_from(Recording)) == 1
    assert s.get(Call, c.call_sid).phone_enc is None  # the rest of the run went ahead
    s.close()
    twilio.broken.clear()
    run_cli(app, "retention", "run")
    s = session(app)
    assert s.scalar(select(func.count()).select_from(Recording)) == 0
    s.close()
    assert twilio.deleted == ["RE" + "9" * 32]


def policy_text(**changes) -> str:
    text = (ROOT / "config" / "retention.yaml").read_text(encoding="utf-8")
    for old, new in changes.items():
        text = text.replace(old, new)
    return text


def test_the_policy_file_is_checked(tmp_path, app):
    f = tmp_path / "retention.yaml"
    f.write_text(policy_text(**{"keep_days: 1095": "keep_days: 1000"}))
    with pytest.raises(PolicyError, match="at least 1095 days"):
        load_policy(f)
    app.config["RETENTION_FILE"] = str(f)
    r = run_cli(app, "retention", "run", ok=False)
    assert r.exit_code == 1 and "at least 1095 days (3 years)" in r.output
    f.write_text(policy_text(**{"retention_days: 90": "retention_days: -1"}))
    with pytest.raises(PolicyError, match="webhook_logs/retention_days"):
        load_policy(f)
    f.write_text(policy_text(**{"webhook_logs:": "weblogs:"}))
    with pytest.raises(PolicyError):
        load_policy(f)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    default = load_policy(Path(ROOT / "config" / "retention.yaml"))
    assert default.describe()["destruction_log"] >= 1095
    app.config["RETENTION_FILE"] = str(ROOT / "config" / "retention.yaml")
    out = run_cli(app, "retention", "policy").output
    assert json.loads(out.split("\n", 1)[1]) == default.describe()
