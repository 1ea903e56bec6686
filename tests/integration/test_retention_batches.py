"""A retention run in batches (many short transactions) destroys, logs and audits exactly
what the same run in one transaction does, over a random history."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select

from ivr import create_app
from ivr.domain.kvkk.policy import load_policy
from ivr.services.kvkk import retention
from ivr.services.kvkk.runner import destroy
from ivr.storage.db import database
from ivr.storage.kvkk_models import DestructionLog, SubjectRequest
from ivr.storage.models import AuditEntry, AuditQueue, Call, Consent, Recording, WebhookRequest
from ivr.web.current import personal_data

from .conftest import ROOT, pg_schema_url

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CHANNELS = ["sms", "call", "email"]
BATCH = 7


def history(seed: int) -> dict[str, list[dict]]:
    """Rows of a random history: people calling over six years, deciding, withdrawing
    through the API, with recordings, webhook logs and closed subject requests."""
    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {"calls": [], "consents": [], "recordings": [],
                                   "webhooks": [], "requests": []}
    consent_id = webhook_id = 0
    for person in range(30):
        phone = f"+9053200{person:05d}"
        for n in range(rng.randint(1, 4)):
            at = NOW - timedelta(days=rng.randint(0, 6 * 365), minutes=rng.randint(0, 600))
            sid = f"CA{person:04d}{n:02d}" + "0" * 26
            rows["calls"].append({"call_sid": sid, "phone": phone, "at": at})
            if rng.random() < 0.8:
                consent_id += 1
                rows["consents"].append({
                    "id": consent_id, "call_sid": sid, "phone": phone, "captured_at": at,
                    "decision": rng.choice(["granted", "granted", "declined", "no_input"]),
                    "channels": rng.sample(CHANNELS, rng.randint(1, 3))})
            if rng.random() < 0.4:
                rows["recordings"].append({"recording_sid": f"XR{person:04d}{n:02d}",
                                           "call_sid": sid, "at": at})
            for _ in range(rng.randint(1, 3)):
                webhook_id += 1
                rows["webhooks"].append({"id": webhook_id, "call_sid": sid, "at": at})
        if rng.random() < 0.5:
            consent_id += 1
            rows["consents"].append({
                "id": consent_id, "call_sid": None, "phone": phone, "decision": "withdrawn",
                "captured_at": NOW - timedelta(days=rng.randint(0, 6 * 365)),
                "channels": rng.sample(CHANNELS, rng.randint(1, 3))})
        if rng.random() < 0.3:
            closed = NOW - timedelta(days=rng.randint(0, 6 * 365))
            rows["requests"].append({"id": len(rows["requests"]) + 1, "phone": phone,
                                     "closed_at": closed})
    return rows


def store(app, rows: dict[str, list[dict]]) -> None:
    with app.app_context():
        pii = personal_data()
        s = database(app).sessionmaker()
        with s.begin():
            for c in rows["calls"]:
                s.add(Call(call_sid=c["call_sid"], phone_hmac=pii.fingerprint(c["phone"]),
                           phone_enc=pii.encrypt(c["phone"]), direction="inbound",
                           status="completed", started_at=c["at"], created_at=c["at"],
                           seen_incoming=True))
            for c in rows["consents"]:
                s.add(Consent(id=c["id"], call_sid=c["call_sid"],
                              phone_hmac=pii.fingerprint(c["phone"]),
                              phone_enc=pii.encrypt(c["phone"]), purpose="marketing",
                              channels=c["channels"], decision=c["decision"], digits="",
                              captured_at=c["captured_at"], audio={},
                              source="ivr" if c["call_sid"] else "api",
                              reason=None if c["call_sid"] else "asked"))
            for r in rows["recordings"]:
                s.add(Recording(recording_sid=r["recording_sid"], call_sid=r["call_sid"],
                                status="completed", updated_at=r["at"]))
            for w in rows["webhooks"]:
                s.add(WebhookRequest(id=w["id"], path="/voice/status", call_sid=w["call_sid"],
                                     received_at=w["at"], outcome="ok"))
            for r in rows["requests"]:
                s.add(SubjectRequest(id=r["id"], phone_hmac=pii.fingerprint(r["phone"]),
                                     phone_enc=pii.encrypt(r["phone"]), kind="learn",
                                     channel="email", received_on=r["closed_at"].date(),
                                     due_on=r["closed_at"].date(), status="closed",
                                     opened_at=r["closed_at"], closed_at=r["closed_at"],
                                     note_enc=pii.encrypt("note"),
                                     outcome_enc=pii.encrypt("done")))
        s.close()


def state(app) -> dict:
    """What a run leaves: personal data present or not, row sets, the destruction log
    (without run ids) and the run's audit entry (without its run id)."""
    s = database(app).sessionmaker()
    try:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.kind == "retention.run")
                          .order_by(AuditEntry.seq.desc()).limit(1)).one()
        data = json.loads(entry.body)["data"]
        data.pop("run_id")
        return {
            "calls": sorted((c.call_sid, c.phone_hmac is None, c.phone_enc is None)
                            for c in s.scalars(select(Call))),
            "consents": sorted((c.id, c.phone_hmac is None, c.phone_enc is None, c.reason)
                               for c in s.scalars(select(Consent))),
            "recordings": sorted(s.scalars(select(Recording.recording_sid))),
            "webhooks": sorted(s.scalars(select(WebhookRequest.id))),
            "requests": sorted((r.id, r.phone_enc is None, r.note_enc is None)
                               for r in s.scalars(select(SubjectRequest))),
            "log": sorted((e.category, e.action, e.table_name, e.row_ref, e.reason, e.at)
                          for e in s.scalars(select(DestructionLog))),
            "audit": data,
        }
    finally:
        s.close()


def retention_entries(app) -> list[dict]:
    """The data of the retention.run leaves, integrated or queued, oldest first."""
    s = database(app).sessionmaker()
    try:
        bodies = [*s.scalars(select(AuditEntry.body).where(AuditEntry.kind == "retention.run")
                             .order_by(AuditEntry.seq)),
                  *s.scalars(select(AuditQueue.body).where(AuditQueue.kind == "retention.run")
                             .order_by(AuditQueue.id))]
        return [json.loads(b)["data"] for b in bodies]
    finally:
        s.close()


@pytest.fixture
def twin(app_config, tmp_path):
    """A second app on its own fresh schema, with the same settings."""
    urls = pg_schema_url()
    cfg = {**app_config, "DATABASE_URL": next(urls),
           "INSTANCE_DIR": str(tmp_path / "twin-instance")}
    other = create_app(cfg)
    database(other).create_all()
    yield other
    database(other).engine.dispose()
    next(urls, None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batched_run_equals_one_transaction(app, twin, seed):
    rows = history(seed)
    store(app, rows)
    store(twin, rows)
    policy = load_policy(ROOT / "config" / "retention.yaml")
    reason, kind = "retention period ended", "retention.run"

    # As before: plan and apply in one transaction.
    with app.app_context():
        s = database(app).sessionmaker()
        with s.begin():
            p = retention.plan(s, policy, NOW)
            one = retention.apply(s, p, NOW, reason=reason, kind=kind)
        s.close()
    total = sum(one.counts.values())
    assert total > 5 * BATCH and all(one.counts[k] for k in (
        "consent_records", "transaction_security", "recording_metadata", "webhook_logs",
        "subject_requests")), one.counts

    # In batches of BATCH rows, each its own transaction.
    commits = []
    with twin.app_context():
        s = database(twin).sessionmaker()
        event.listen(s, "after_commit", lambda sess: commits.append(1))
        _p, many = destroy(s, policy, None, now=NOW, dry_run=False, reason=reason, kind=kind,
                           batch=BATCH)
        s.close()
    assert many.counts == one.counts
    # The plan's transaction, one per batch, and the last one with the audit entry (and
    # the tests' inline sequencer's pass).
    assert len(commits) >= 1 + -(-total // BATCH) + 1
    assert state(twin) == state(app)


def test_batches_cut_the_steps_in_order():
    steps = [("a", [1, 2, 3]), ("b", []), ("c", [4, 5, 6, 7, 8])]
    parts = list(retention._batches(steps, 3))
    assert parts == [[("a", [1, 2, 3])], [("c", [4, 5, 6])], [("c", [7, 8])]]
    assert list(retention._batches(steps, 100)) == [[("a", [1, 2, 3]), ("c", [4, 5, 6, 7, 8])]]


def test_a_run_stopped_between_batches_is_finished_by_the_next(app, twin, monkeypatch):
    rows = history(4)
    store(app, rows)
    store(twin, rows)
    policy = load_policy(ROOT / "config" / "retention.yaml")
    with app.app_context():
        s = database(app).sessionmaker()
        with s.begin():
            one = retention.apply(s, retention.plan(s, policy, NOW), NOW,
                                  reason="retention period ended", kind="retention.run")
        s.close()
    # The process dies after its third batch committed.
    real = retention._destroy
    done = []

    def dies(*a, **kw):
        if len(done) == 3:
            raise KeyboardInterrupt
        done.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(retention, "_destroy", dies)
    with twin.app_context():
        s = database(twin).sessionmaker()
        with pytest.raises(KeyboardInterrupt):
            destroy(s, policy, None, now=NOW, dry_run=False, reason="retention period ended",
                    kind="retention.run", batch=BATCH)
        s.close()
        # Its acts are logged, its audit entry is not (`audit verify`: a fact without leaf).
        assert retention_entries(twin) == []
        monkeypatch.setattr(retention, "_destroy", real)
        s = database(twin).sessionmaker()
        _p, rest = destroy(s, policy, None, now=NOW, dry_run=False,
                           reason="retention period ended", kind="retention.run", batch=BATCH)
        s.close()
    entries = retention_entries(twin)
    assert [e.get("interrupted") for e in entries] == [True, None]
    assert entries[0]["counts"]["consent_records"] == 3 * BATCH
    # Both runs together destroyed what the one run did.
    assert {k: entries[0]["counts"][k] + rest.counts[k] for k in rest.counts} == one.counts
    mine, theirs = state(twin), state(app)
    for key in ("calls", "consents", "recordings", "webhooks", "requests"):
        assert mine[key] == theirs[key], key
    assert sorted(e[:4] for e in mine["log"]) == sorted(e[:4] for e in theirs["log"])
