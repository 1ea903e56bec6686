"""How long the consent-lifecycle jobs take on a database of N consent events.

    .venv/bin/python benchmarks/kvkk_lifecycle.py [--consents 50000]

Fills a fresh database (a new schema on the test PostgreSQL, dropped afterwards) with N
consent events for N/2 people (each granted, half of them later withdrew one channel),
then times, in this process:
  - `iys export` (every record decided, batches of 1000 written),
  - `iys export` again (nothing pending: the cost of the steady state),
  - `iys pending` (the preview),
  - one `subject report`,
  - `retention run --dry-run` (the plan) and the run itself with everything due.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scratch_db import scratch_database  # noqa: E402


def timed(label: str, fn):
    t0 = time.perf_counter()
    result = fn()
    print(f"{label:<44} {time.perf_counter() - t0:8.2f} s")
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--consents", type=int, default=50000)
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny run for the tests (tests/integration/test_benchmark_smokes.py): "
                         "non-zero on a fault; its figures mean nothing")
    args = ap.parse_args()
    if args.smoke:
        args.consents = 200

    from sqlalchemy import insert

    from ivr import create_app
    from ivr.domain.kvkk.policy import load_policy
    from ivr.services import anchoring, audit_sequencer
    from ivr.services.kvkk import iys_export, retention, subject_report
    from ivr.storage.models import Consent
    from ivr.web.current import database, personal_data

    tmp = Path(tempfile.mkdtemp(prefix="kvkk-bench-"))
    scratch = ExitStack()
    url = scratch.enter_context(scratch_database())
    app = create_app({"DATABASE_URL": url, "INSTANCE_DIR": str(tmp / "instance"),
                      "TWILIO_AUTH_TOKEN": "bench", "AUDIO_DIR": str(tmp / "audio"),
                      "IYS_OUT_DIR": str(tmp / "iys")})
    try:
        with app.app_context():
            database(app).create_all()
            pii = personal_data()
            db = database(app)
            people = args.consents // 2
            start = datetime.now(UTC) - timedelta(days=4 * 365)
            rows = []
            t0 = time.perf_counter()
            for i in range(people):
                phone = f"+9053{i:08d}"
                h, enc = pii.fingerprint(phone), pii.encrypt(phone)
                at = start + timedelta(minutes=i)
                rows.append(dict(phone_hmac=h, phone_enc=enc, purpose="marketing",
                                 channels=["ARAMA", "MESAJ", "EPOSTA"], decision="granted",
                                 digits="1", captured_at=at, source="ivr", audio={}))
                rows.append(dict(phone_hmac=h, phone_enc=enc, purpose="marketing",
                                 channels=["MESAJ"], decision="withdrawn", digits="",
                                 captured_at=at + timedelta(days=30), source="api", audio={}))
            with db.sessionmaker() as s, s.begin():
                for k in range(0, len(rows), 5000):
                    s.execute(insert(Consent), rows[k:k + 5000])
            print(f"{'fill ' + str(len(rows)) + ' consent events':<44} "
                  f"{time.perf_counter() - t0:8.2f} s")
            now = datetime.now(UTC)

            def export():
                with db.sessionmaker() as s, s.begin():
                    r = iys_export.export(s, pii, now=now, out_dir=tmp / "iys")
                r.finalize()
                return r

            r = timed("iys export (all pending)", export)
            print(f"  {r.count('export')} records in {len(r.batches)} batches, "
                  f"{r.count('skipped')} skipped, {r.count('superseded')} superseded")
            timed("iys export (nothing pending)", export)
            with db.sessionmaker() as s, s.begin():
                timed("iys pending (preview)", lambda: iys_export.preview(s, pii))
            policy = load_policy(ROOT / "config" / "retention.yaml")
            with db.sessionmaker() as s, s.begin():
                timed("subject report (one person)", lambda: subject_report.build(
                    s, pii, "+905300000007", policy, "tr", now))
            with db.sessionmaker() as s, s.begin():
                p = timed("retention plan (dry run)", lambda: retention.plan(s, policy, now))
            print(f"  due: {p.counts()}")
            with db.sessionmaker() as s, s.begin():
                out = timed("retention run (destroy and log)", lambda: retention.apply(
                    s, retention.plan(s, policy, now), now, reason="bench", kind="retention.run"))
            print(f"  destroyed: {out.counts}")
    finally:
        # The app's background threads go before its scratch schema does (no UndefinedTable).
        audit_sequencer.stop_thread(app)
        anchoring.stop_thread(app)
        database(app).engine.dispose()
        scratch.close()


if __name__ == "__main__":
    main()
