"""İYS export: batches valid against a JSON Schema of İYS's rules, split at 1000, İYS's
rules across records respected, recorded once, pushed to a local İYS that answers like
İYS; and the 3-business-day deadline with weekends and holidays."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import insert, select

from ivr.domain.kvkk import iys
from ivr.domain.kvkk.businessdays import (
    ISTANBUL,
    Calendar,
    HolidayConfigError,
    deadline_state,
    iys_deadline,
    load_calendar,
)
from ivr.storage.kvkk_models import IysBatch, IysPushAnswer, IysRecord
from ivr.storage.models import AuditEntry, Consent
from ivr.web.current import personal_data
from tests.support.fake_iys import FakeIys
from tests.support.lifecycle import PHONE, add_consent, run_cli, session

SCHEMA = json.loads(Path(iys.SCHEMA_PATH).read_text(encoding="utf-8"))
TOKEN = "iys-test-token"
NOW = datetime.now(UTC).replace(microsecond=0)


def phone(n: int) -> str:
    return f"+90532{n:07d}"


@pytest.fixture
def fake_iys():
    server = FakeIys(TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def app_config(app_config, tmp_path):
    app_config["IYS_TOKEN"] = TOKEN
    app_config["IYS_OUT_DIR"] = str(tmp_path / "iys-out")
    return app_config


def batch_files(app) -> list[Path]:
    return sorted(Path(app.config["IYS_OUT_DIR"]).glob("iys-*.json"))


def load_batches(app) -> list[list[dict]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in batch_files(app)]


def records(app) -> list[IysRecord]:
    s = session(app)
    try:
        return list(s.scalars(select(IysRecord).order_by(IysRecord.id)))
    finally:
        s.close()


def check_like_iys(batches: list[list[dict]], fake: FakeIys | None = None) -> FakeIys:
    """Every batch valid against the schema and accepted, in order, by İYS's rules."""
    fake = fake or FakeIys(TOKEN, serve=False)
    for b in batches:
        jsonschema.Draft202012Validator(SCHEMA).validate(b)
        status, answer = fake.handle("/", f"Bearer {TOKEN}", json.dumps(b).encode())
        assert status == 200, answer
    return fake


# --- the schema itself ----------------------------------------------------------------

GOOD = {"recipient": PHONE, "type": "ARAMA", "source": "HS_CAGRI_MERKEZI", "status": "ONAY",
        "consentDate": "2026-11-25 14:07:33", "recipientType": "BIREYSEL"}


@pytest.mark.parametrize("change", [
    pytest.param({"extra": "x"}, id="unknown-field-H118"),
    pytest.param({"retailerCode": 1}, id="a-field-we-never-send"),
    pytest.param({"recipient": "05321234567"}, id="not-e164"),
    pytest.param({"recipient": "+9053212345678901"}, id="longer-than-15"),
    pytest.param({"type": "SMS"}, id="bad-type"),
    pytest.param({"source": "HS_WEB"}, id="other-source"),
    pytest.param({"status": "RED"}, id="bad-status"),
    pytest.param({"recipientType": "TACIR"}, id="not-bireysel"),
    pytest.param({"consentDate": "2026-11-25T14:07:33"}, id="iso-date"),
    pytest.param({"consentDate": "2026-11-25 14:07"}, id="no-seconds"),
    pytest.param({"consentDate": "2015-04-30 23:59:59"}, id="before-2015-05-01"),
])
def test_the_schema_refuses_what_iys_refuses(change):
    jsonschema.Draft202012Validator(SCHEMA).validate([GOOD])
    bad = {**GOOD, **change}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate([bad])
    missing = {k: v for k, v in GOOD.items() if k != "consentDate"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate([missing])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate([GOOD] * 1001)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate([])


# --- export ------------------------------------------------------------------------------


def test_batches_of_at_most_1000_valid_and_never_exported_twice(app):
    captured = NOW - timedelta(hours=5)
    with app.app_context():
        pii = personal_data()
        rows = [dict(phone_hmac=pii.fingerprint(phone(i)), phone_enc=pii.encrypt(phone(i)),
                     purpose="marketing", channels=["ARAMA"], decision="granted", digits="1",
                     captured_at=captured + timedelta(seconds=i), source="ivr", audio={})
                for i in range(2345)]
    s = session(app)
    with s.begin():
        s.execute(insert(Consent), rows)
    s.close()
    out = run_cli(app, "iys", "export").output
    assert "Exported 2345 record(s) in 3 batch(es)" in out
    batches = load_batches(app)
    assert [len(b) for b in batches] == [1000, 1000, 345]
    check_like_iys(batches)
    first = batches[0][0]
    assert list(first) == ["recipient", "type", "source", "status", "consentDate",
                           "recipientType"]
    assert first == {"recipient": phone(0), "type": "ARAMA", "source": "HS_CAGRI_MERKEZI",
                     "status": "ONAY", "consentDate": captured.astimezone(ISTANBUL).strftime(
                         "%Y-%m-%d %H:%M:%S"), "recipientType": "BIREYSEL"}
    assert sorted(r["recipient"] for b in batches for r in b) == sorted(
        phone(i) for i in range(2345))
    for p in batch_files(app):
        assert p.stat().st_mode & 0o777 == 0o600
    s = session(app)
    recorded = list(s.scalars(select(IysBatch).order_by(IysBatch.id)))
    assert [b.record_count for b in recorded] == [1000, 1000, 345]
    assert all(b.status == "written" for b in recorded)
    s.close()
    again = run_cli(app, "iys", "export").output
    assert "Exported 0 record(s) in 0 batch(es)" in again
    assert len(batch_files(app)) == 3
    assert len(records(app)) == 2345


def test_iys_rules_across_records_and_runs(app):
    t = NOW - timedelta(days=1)
    a, b, c, d, e, f = (phone(n) for n in range(1, 7))
    add_consent(app, a, "granted", t)                       # exported ONAY
    add_consent(app, b, "declined", t)                      # never ONAY: no first RET
    add_consent(app, c, "granted", t)                       # granted, then withdrawn before
    add_consent(app, c, "withdrawn", t + timedelta(minutes=5))  # any export: nothing to send
    add_consent(app, d, "granted", t)
    add_consent(app, e, "granted", t, channels=["ARAMA"])
    add_consent(app, f, "granted", t + timedelta(hours=2))
    run_cli(app, "iys", "export")
    first = load_batches(app)
    assert len(first) == 1
    sent = {(r["recipient"], r["type"]): r["status"] for r in first[0]}
    assert sent == {**{(a, ch): "ONAY" for ch in ("ARAMA", "MESAJ", "EPOSTA")},
                    **{(d, ch): "ONAY" for ch in ("ARAMA", "MESAJ", "EPOSTA")},
                    (e, "ARAMA"): "ONAY",
                    **{(f, ch): "ONAY" for ch in ("ARAMA", "MESAJ", "EPOSTA")}}
    by = {}
    for r in records(app):
        by.setdefault(r.outcome, []).append(r)
    assert {r.reason.split(":")[0] for r in by["skipped"]} == {
        "a first İYS record for a recipient and type cannot be RET (H175)"}
    assert len(by["skipped"]) == 6 and len(by["superseded"]) == 3
    assert all("H175" in r.reason for r in by["skipped"])

    # Second run: d confirms again (nothing new), e withdraws ARAMA and grants MESAJ (two
    # statuses for one recipient: never in one batch), f has a decision older than the one
    # İYS holds (arrived late), a withdraws.
    add_consent(app, d, "granted", t + timedelta(hours=3))
    add_consent(app, e, "withdrawn", t + timedelta(hours=3), channels=["ARAMA"])
    add_consent(app, e, "granted", t + timedelta(hours=4), channels=["MESAJ"])
    add_consent(app, f, "withdrawn", t + timedelta(hours=1))
    add_consent(app, a, "withdrawn", t + timedelta(hours=5))
    run_cli(app, "iys", "export", "--batch-size", "1000")
    batches = load_batches(app)
    second = [b for b in batches if b not in first]
    check_like_iys(first + second)
    for batch in second:
        statuses = {}
        for r in batch:
            assert statuses.setdefault(r["recipient"], r["status"]) == r["status"]
    sent2 = sorted((r["recipient"], r["type"], r["status"]) for b in second for r in b)
    assert sent2 == sorted([(a, "ARAMA", "RET"), (a, "MESAJ", "RET"), (a, "EPOSTA", "RET"),
                            (e, "ARAMA", "RET"), (e, "MESAJ", "ONAY")])
    assert len(second) == 2  # e's RET and ONAY went in different batches
    reasons = {r.reason.split("(")[-1].rstrip(")") for r in records(app)
               if r.outcome == "skipped" and r.decided_at > NOW - timedelta(minutes=5)
               and "H175" not in r.reason}
    assert any("H178" in x for x in reasons)
    skipped_d = [r for r in records(app) if r.outcome == "skipped" and "nothing new" in r.reason]
    assert len(skipped_d) == 3

    # Third run: a withdraws again (the same RET: H174) → not exported.
    add_consent(app, a, "withdrawn", t + timedelta(hours=6))
    out = run_cli(app, "iys", "export").output
    assert "Exported 0 record(s)" in out and "H174 ×3" in out
    # The export is on the audit chain, without phone numbers.
    s = session(app)
    bodies = [x.body for x in s.scalars(select(AuditEntry).where(AuditEntry.kind == "iys.export"))]
    s.close()
    assert len(bodies) == 3 and not any(a in body or a[1:] in body for body in bodies)


def test_push_records_each_answer(app, fake_iys):
    add_consent(app, PHONE, "granted", NOW - timedelta(hours=1))
    out = run_cli(app, "iys", "export", "--push", fake_iys.url).output
    assert "accepted, transactionId" in out
    [req] = fake_iys.requests
    assert req["auth"] == f"Bearer {TOKEN}"
    [path] = batch_files(app)
    assert req["body"] == path.read_bytes()
    s = session(app)
    batch = s.scalars(select(IysBatch)).one()
    answer = s.scalars(select(IysPushAnswer)).one()
    s.close()
    assert batch.status == "accepted" and batch.transaction_id == answer.transaction_id
    assert answer.http_status == 200 and answer.url == fake_iys.url
    assert fake_iys.state[(PHONE, "ARAMA")][0] == "ONAY"


def test_push_failures_are_retried_in_order(app, fake_iys):
    add_consent(app, PHONE, "granted", NOW - timedelta(hours=1))
    fake_iys.fail_next = [503]
    r = run_cli(app, "iys", "export", "--push", fake_iys.url, ok=False)
    assert r.exit_code == 1 and "FAILED (HTTP 503" in r.output
    s = session(app)
    assert s.scalars(select(IysBatch)).one().status == "push_failed"
    s.close()
    out = run_cli(app, "iys", "push", fake_iys.url).output
    assert "accepted" in out
    assert fake_iys.requests[0]["body"] == fake_iys.requests[1]["body"]
    s = session(app)
    assert s.scalars(select(IysBatch)).one().status == "accepted"
    assert [a.outcome for a in s.scalars(select(IysPushAnswer).order_by(IysPushAnswer.id))] \
        == ["failed", "accepted"]
    s.close()
    assert "Nothing to push." in run_cli(app, "iys", "push", fake_iys.url).output


def test_a_refusal_made_in_iys_meets_our_withdrawal_h174(app, fake_iys):
    add_consent(app, PHONE, "granted", NOW - timedelta(hours=3))
    run_cli(app, "iys", "export", "--push", fake_iys.url)
    # The person refused calls directly in İYS; then withdraws everything with us.
    fake_iys.state[(PHONE, "ARAMA")] = ("RET", fake_iys.state[(PHONE, "ARAMA")][1])
    add_consent(app, PHONE, "withdrawn", NOW - timedelta(hours=1))
    out = run_cli(app, "iys", "export", "--push", fake_iys.url).output
    assert "REJECTED (HTTP 422): H174 (record 0)" in out
    recs = {(r.type, r.status): r for r in records(app)}
    assert recs[("ARAMA", "RET")].outcome == "rejected"
    assert recs[("ARAMA", "RET")].reason.startswith("H174")
    assert ("MESAJ", "RET") not in recs and ("EPOSTA", "RET") not in recs  # pending again
    out = run_cli(app, "iys", "export", "--push", fake_iys.url).output
    assert "Exported 2 record(s)" in out and "accepted" in out
    assert fake_iys.state[(PHONE, "MESAJ")][0] == fake_iys.state[(PHONE, "EPOSTA")][0] == "RET"


def test_an_onay_never_uploaded_makes_the_ret_a_first_ret_h175(app, fake_iys):
    add_consent(app, PHONE, "granted", NOW - timedelta(hours=3), channels=["MESAJ"])
    run_cli(app, "iys", "export")  # written to a file that nobody uploaded
    add_consent(app, PHONE, "withdrawn", NOW - timedelta(hours=1), channels=["MESAJ"])
    out = run_cli(app, "iys", "export", "--push", fake_iys.url).output
    assert "H175" in out
    rec = [r for r in records(app) if r.status == "RET"][0]
    assert rec.outcome == "rejected" and rec.reason.startswith("H175")
    s = session(app)
    statuses = [b.status for b in s.scalars(select(IysBatch).order_by(IysBatch.created_at))]
    s.close()
    assert statuses == ["written", "rejected"]


def test_push_needs_a_token(app, app_config, fake_iys):
    app.config["IYS_TOKEN"] = None
    add_consent(app, PHONE, "granted", NOW)
    r = run_cli(app, "iys", "export", "--push", fake_iys.url, ok=False)
    assert r.exit_code != 0 and "IVR_IYS_TOKEN" in r.output
    assert records(app) == [] and fake_iys.requests == []
    app.config["IYS_TOKEN"] = "wrong"
    r = run_cli(app, "iys", "export", "--push", fake_iys.url, ok=False)
    assert "FAILED (HTTP 401" in r.output  # kept for a retry with the right token
    app.config["IYS_TOKEN"] = TOKEN
    assert "accepted" in run_cli(app, "iys", "push", fake_iys.url).output


def test_pending_warns_about_the_3_business_day_limit(app):
    add_consent(app, phone(1), "granted", NOW - timedelta(days=30))
    add_consent(app, phone(2), "granted", NOW, channels=["ARAMA"])
    add_consent(app, phone(3), "declined", NOW - timedelta(days=30), channels=["ARAMA"])
    r = run_cli(app, "iys", "pending")
    assert "Pending İYS records: 5 (4 to export, 1 not to be exported)" in r.output
    assert "WARNING: 3 record(s) are PAST the 3-business-day İYS limit" in r.output
    rows = json.loads(run_cli(app, "iys", "pending", "--json").output.split("WARNING")[0])
    states = {(x["recipient"], x["type"]): (x["state"], x["action"]) for x in rows}
    assert states[("+90532*****01", "ARAMA")] == ("overdue", "export")
    assert states[("+90532*****02", "ARAMA")] == ("ok", "export")
    assert states[("+90532*****03", "ARAMA")] == ("-", "skipped")
    assert all(PHONE not in r.output for _ in [0])
    run_cli(app, "iys", "export")
    assert "Pending İYS records: 0" in run_cli(app, "iys", "pending").output


# --- business days (pure) ----------------------------------------------------------------

def at(day: str, hm: str = "14:00") -> datetime:
    return datetime.fromisoformat(f"{day}T{hm}").replace(tzinfo=ISTANBUL)


@pytest.mark.parametrize("captured,holidays,last_day", [
    pytest.param(at("2026-11-23"), set(), "2026-11-26", id="monday-to-thursday"),
    pytest.param(at("2026-11-26"), set(), "2026-12-01", id="thursday-over-the-weekend"),
    pytest.param(at("2026-11-27"), set(), "2026-12-02", id="friday"),
    pytest.param(at("2026-11-28"), set(), "2026-12-02", id="saturday"),
    pytest.param(at("2026-11-29", "23:59"), set(), "2026-12-02", id="sunday-late"),
    pytest.param(at("2026-11-27"), {date(2026, 11, 30)}, "2026-12-03", id="friday-holiday-monday"),
    pytest.param(at("2026-11-27"), {date(2026, 12, 1), date(2026, 12, 2)}, "2026-12-04",
                 id="two-holidays"),
])
def test_deadline_counts_business_days(captured, holidays, last_day):
    cal = Calendar(use_package=False, added=frozenset(holidays))
    deadline = iys_deadline(captured, cal)
    assert deadline.astimezone(ISTANBUL).strftime("%Y-%m-%d %H:%M:%S") == f"{last_day} 23:59:59"


def test_deadline_uses_turkey_time_and_the_holiday_package():
    cal = Calendar()
    # 22:30 UTC on Friday is 01:30 on Saturday in Istanbul.
    friday_night = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)
    assert iys_deadline(friday_night, cal).date() == date(2026, 12, 2)
    # 29 October (Republic Day) is a public holiday in the package's Turkish calendar.
    assert cal.is_holiday(date(2026, 10, 29)) and not cal.is_business_day(date(2026, 10, 29))
    # Wednesday 28th → (Thursday off) Friday 30th, Monday 2nd, Tuesday 3rd.
    assert iys_deadline(at("2026-10-28"), cal).date() == date(2026, 11, 3)
    # Kurban Bayramı 2026 (Wednesday 27 to Saturday 30 May): Monday 1, Tuesday 2, Wednesday 3.
    assert iys_deadline(at("2026-05-26"), cal).date() == date(2026, 6, 3)


def test_deadline_state():
    cal = Calendar(use_package=False)
    deadline = iys_deadline(at("2026-11-23"), cal)  # Thursday 26th, end of day
    assert deadline_state(deadline, at("2026-11-24"), cal) == "ok"
    assert deadline_state(deadline, at("2026-11-25"), cal) == "due"
    assert deadline_state(deadline, at("2026-11-26", "23:59"), cal) == "due"
    assert deadline_state(deadline, at("2026-11-27", "00:00"), cal) == "overdue"


def test_holidays_file(tmp_path):
    f = tmp_path / "holidays.yaml"
    f.write_text("package: false\nadd:\n  - 2026-11-30\n  - {date: 2026-12-01, name: idari izin}\n"
                 "remove: []\n")
    cal = load_calendar(f)
    assert cal.is_holiday(date(2026, 11, 30)) and cal.is_holiday(date(2026, 12, 1))
    assert not cal.is_holiday(date(2026, 10, 29))  # the package is off
    assert iys_deadline(at("2026-11-27"), cal).date() == date(2026, 12, 4)
    f.write_text("package: true\nremove: [2026-10-29]\n")
    assert not load_calendar(f).is_holiday(date(2026, 10, 29))
    for bad in ["add: [2026-13-01]\n", "holidays: []\n", "package: maybe\n", "- 1\n"]:
        f.write_text(bad)
        with pytest.raises(HolidayConfigError):
            load_calendar(f)
