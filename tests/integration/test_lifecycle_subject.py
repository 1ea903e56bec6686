"""Article 11: a subject's report (JSON and plain Turkish or English text), requests logged
with their 30-day limit, and erasure where no legal duty to keep applies."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from ivr.domain.kvkk.businessdays import local_date
from ivr.storage.kvkk_models import DestructionLog, SubjectRequest
from ivr.storage.models import AuditEntry, Call, Consent, Recording, WebhookRequest
from tests.support.lifecycle import PHONE, run_cli, session, token


@pytest.fixture
def app_config(app_config, tmp_path):
    # Recordings here have no copy at a (fake) Twilio to delete.
    policy = tmp_path / "retention.yaml"
    from tests.integration.conftest import ROOT

    policy.write_text((ROOT / "config" / "retention.yaml").read_text(encoding="utf-8")
                      .replace("delete_at_twilio: true", "delete_at_twilio: false"))
    app_config["RETENTION_FILE"] = str(policy)
    return app_config


def recording_callback(c, rsid: str):
    return c.signed_post(c.url("/voice/recording"), c.params(
        RecordingSid=rsid, RecordingStatus="completed", RecordingDuration="61",
        RecordingChannels="1", RecordingSource="StartCallRecording",
        RecordingStartTime="Wed, 25 Nov 2026 11:00:05 +0000",
        RecordingUrl=f"https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/{rsid}"))


def a_history(local_caller, app, client):
    c = local_caller()
    c.run(["1"])
    assert recording_callback(c, "RE" + "a" * 32).status == 200
    agent = token(app, "agent")
    r = client.post("/api/consents/withdrawals", json={
        "phone": PHONE, "channels": ["MESAJ"], "reason": "SMS istemiyor"},
        headers={"Authorization": f"Bearer {agent}"})
    assert r.status_code == 201
    return c


def test_report_as_json(local_caller, app, client):
    c = a_history(local_caller, app, client)
    report = json.loads(run_cli(app, "subject", "report", "0532 123 4567", "--format", "json",
                                "--by", "kvkk-ekibi").output)
    assert report["subject"] == {"phone": PHONE}
    [call] = report["calls"]
    assert call["call_sid"] == c.call_sid and call["started_at"].endswith("Z")
    assert call["ended_at"] and call["duration"] == c.duration
    [rec] = report["recordings"]
    assert rec["recording_sid"] == "RE" + "a" * 32 and rec["duration"] == 61
    assert rec["call_sid"] == c.call_sid
    current = report["consents"]["current"]
    assert current["ARAMA"]["status"] == current["EPOSTA"]["status"] == "granted"
    assert current["MESAJ"]["status"] == "withdrawn" and current["MESAJ"]["source"] == "api"
    assert [e["decision"] for e in report["consents"]["history"]["MESAJ"]] == [
        "granted", "withdrawn"]
    assert [e["decision"] for e in report["consents"]["history"]["ARAMA"]] == ["granted"]
    assert report["consents"]["history"]["ARAMA"][0]["keys"] == "1"
    cats = {c["id"]: c for c in report["processing"]["data_categories"]}
    assert "Açık rızanız (KVKK m.5/1)" in cats["marketing"]["legal_bases"]
    assert "Reklam / kampanya / promosyon süreçlerinin yürütülmesi" in \
        cats["marketing"]["purposes"]
    assert cats["transaction_security"]["data"] == "Arama zaman ve tarih bilgileri"
    assert len(report["processing"]["recipient_groups"]) == 8
    assert [r["id"] for r in report["rights"]] == [
        "learn", "information", "purpose", "recipients", "rectification", "erasure",
        "notify_third_parties", "objection", "compensation"]
    assert all("kvkk@pronet.com.tr" in r["how"] for r in report["rights"])
    assert "3'e" in report["withdraw_consent"]
    assert report["controller"]["name"] == "Pronet Güvenlik Hizmetleri A.Ş."
    assert report["retention_days"]["consent_records"] == 1095
    # The report is an audit fact: who asked, about whom (as the HMAC), never the number.
    s = session(app)
    entry = s.scalars(select(AuditEntry).where(AuditEntry.kind == "subject.report")).one()
    phone_hmac = s.scalar(select(Call.phone_hmac))
    s.close()
    data = json.loads(entry.body)["data"]
    assert data["by"] == "kvkk-ekibi" and data["format"] == "json" and data["calls"] == 1
    assert PHONE not in entry.body and PHONE[1:] not in entry.body
    assert data["phone"] == phone_hmac


def test_report_as_plain_text_in_turkish_and_english(local_caller, app, client):
    a_history(local_caller, app, client)
    tr = run_cli(app, "subject", "report", PHONE).output
    assert tr.startswith("KİŞİSEL VERİ BİLGİ RAPORU (KVKK madde 11)")
    for line in ["Telefon numarası: +905321234567",
                 "Telefonla arama: Güncel durum: onay verildi",
                 "SMS: Güncel durum: izin geri alındı",
                 "(kaynak: çağrı merkezi, tuşlama, tuşlar 1)",
                 "(kaynak: müşteri temsilcisi)",
                 "Verilerin aktarılabileceği alıcı grupları",
                 "- Kişisel verilerinizin işlenip işlenmediğini öğrenme",
                 "Açık rızanız (KVKK m.5/1)", "Europe/Istanbul (UTC ", "kvkk@pronet.com.tr"]:
        assert line in tr, line
    assert "{" not in tr and "Traceback" not in tr
    en = run_cli(app, "subject", "report", PHONE, "--lang", "en").output
    assert en.startswith("PERSONAL DATA REPORT (KVKK Article 11)")
    assert "Phone calls: Current status: consent given" in en
    assert "SMS: Current status: consent withdrawn" in en
    assert "Your explicit consent (KVKK Art. 5(1))" in en
    nobody = run_cli(app, "subject", "report", "+905559998877").output
    assert "Kayıtlı çağrı yok." in nobody and "E-posta: Güncel durum: kayıt yok" in nobody
    bad = run_cli(app, "subject", "report", "not-a-number", ok=False)
    assert bad.exit_code == 1 and "PHONE" in bad.output and "Traceback" not in bad.output


def test_requests_are_listed_against_the_30_day_limit(app):
    today = local_date(datetime.now(UTC))
    out = run_cli(app, "subject", "request", "open", PHONE, "--kind", "information").output
    assert f"received {today}, answer due by {today + timedelta(days=30)}" in out
    run_cli(app, "subject", "request", "open", PHONE, "--kind", "erasure",
            "--received", str(today - timedelta(days=26)), "--channel", "post")
    run_cli(app, "subject", "request", "open", "+905551112233", "--kind", "rectification",
            "--received", str(today - timedelta(days=31)), "--note", "adres yanlış")
    r = run_cli(app, "subject", "request", "list")
    lines = r.output.splitlines()
    assert "OVERDUE" in lines[1] and "DUE SOON" in lines[2] and lines[3].endswith("OPEN")
    assert "WARNING: 1 request(s) are past the 30-day limit" in r.output
    rows = json.loads(run_cli(app, "subject", "request", "list", "--json").output
                      .split("WARNING")[0])
    assert [x["days_left"] for x in rows] == [-1, 4, 30]
    out = run_cli(app, "subject", "request", "close", str(rows[0]["id"]),
                  "--outcome", "Adres düzeltildi").output
    assert "LATE" in out
    assert len(json.loads(run_cli(app, "subject", "request", "list", "--json").output
                          .split("WARNING")[0])) == 2
    assert "CLOSED" in run_cli(app, "subject", "request", "list", "--all").output
    again = run_cli(app, "subject", "request", "close", str(rows[0]["id"]), "--outcome", "x",
                    ok=False)
    assert "already closed" in again.output
    future = run_cli(app, "subject", "request", "open", PHONE, "--kind", "learn",
                     "--received", str(today + timedelta(days=2)), ok=False)
    assert "in the future" in future.output
    assert run_cli(app, "subject", "request", "open", PHONE, "--kind", "gossip",
                   ok=False).exit_code == 2
    s = session(app)
    notes = [r.note_enc for r in s.scalars(select(SubjectRequest)) if r.note_enc]
    kinds = [e.kind for e in s.scalars(select(AuditEntry).order_by(AuditEntry.seq))]
    s.close()
    assert notes and "adres" not in notes[0]  # encrypted at rest
    assert kinds.count("subject.request.opened") == 3 and "subject.request.closed" in kinds


def test_erasure_keeps_what_the_law_needs_and_logs_the_rest(local_caller, app):
    consented = local_caller()
    consented.run(["1"])
    assert recording_callback(consented, "RE" + "b" * 32).status == 200
    silent = local_caller()
    silent.run(["h"])  # hung up before any decision: no consent proves anything here
    assert recording_callback(silent, "RE" + "c" * 32).status == 200
    other = local_caller(from_number="+905557776655")
    other.run(["2"])
    out = run_cli(app, "subject", "request", "open", PHONE, "--kind", "erasure").output
    rid = out.split("#")[1].split(" ")[0]
    dry = run_cli(app, "subject", "erase", PHONE, "--dry-run").output
    assert "Would destroy" in dry
    s = session(app)
    assert s.scalar(select(func.count()).select_from(DestructionLog)) == 0
    s.close()
    out = run_cli(app, "subject", "request", "close", rid, "--erase",
                  "--outcome", "Yasal saklama dışındaki veriler silindi").output
    assert "transaction_security  1" in out and "recording_metadata    1" in out
    assert "consent_records       0" in out
    assert "Kept (a legal duty to keep applies):" in out
    assert f"call {consented.call_sid}" in out and "proof of consent" in out
    s = session(app)
    calls = {c.call_sid: c for c in s.scalars(select(Call))}
    assert calls[silent.call_sid].phone_enc is None and calls[silent.call_sid].phone_hmac is None
    assert calls[consented.call_sid].phone_enc is not None  # it proves the consent
    assert calls[other.call_sid].phone_enc is not None  # someone else
    assert {r.recording_sid for r in s.scalars(select(Recording))} == {"RE" + "b" * 32}
    assert s.scalar(select(func.count()).select_from(WebhookRequest)
                    .where(WebhookRequest.call_sid == silent.call_sid)) == 0
    assert s.scalar(select(func.count()).select_from(WebhookRequest)
                    .where(WebhookRequest.call_sid == other.call_sid)) > 0
    assert s.scalar(select(func.count()).select_from(Consent)
                    .where(Consent.phone_enc.is_not(None))) == 2
    log = list(s.scalars(select(DestructionLog)))
    assert {(x.category, x.action) for x in log} == {
        ("transaction_security", "anonymised"), ("recording_metadata", "deleted"),
        ("webhook_logs", "deleted")}
    assert all(x.reason == f"erasure request #{rid}" for x in log)
    assert s.execute(text("SELECT count(*) FROM destruction_log WHERE row_ref LIKE '%5321234567%'")
                     ).scalar() == 0
    kinds = [e.kind for e in s.scalars(select(AuditEntry).order_by(AuditEntry.seq))]
    s.close()
    assert "subject.erased" in kinds and kinds[-1] == "subject.request.closed"
    verify = run_cli(app, "audit", "verify")
    assert verify.output.startswith("ok:")
    # The report still answers for what is kept.
    report = json.loads(run_cli(app, "subject", "report", PHONE, "--format", "json").output)
    assert [c["call_sid"] for c in report["calls"]] == [consented.call_sid]
    assert report["requests"][0]["status"] == "closed"
    assert date.fromisoformat(report["requests"][0]["received_on"])
