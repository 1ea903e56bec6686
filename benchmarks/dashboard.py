"""The auditor dashboard and flow registry at 100,000 calls, timed over real HTTP.

    .venv/bin/python benchmarks/dashboard.py [--calls 100000] [--days 90] [--requests 7]

Fills a scratch PostgreSQL schema (benchmarks/scratch_db.py) with bulk inserts: the calls,
their flow runs, first turns and consent records as the IVR stores them (the turns' actions
come from the real flow engine; two flow versions; Turkish and English; a share of agent
transfers by 20 agents; a share of callers hanging up during the notice). Then serves the
app (werkzeug, in this process), logs in as an auditor and times GET requests of the
dashboard over the whole period (every call in it), the last 30 days, per week, and the
flow registry. Prints the median and the max of the timed requests of each page; the first
request of each page is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import create_engine, insert, text  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from benchmarks.scratch_db import scratch_database  # noqa: E402
from ivr import create_app  # noqa: E402
from ivr.domain.flow import engine as e  # noqa: E402
from ivr.domain.flow.loader import build_flow  # noqa: E402
from ivr.services.accounts import add_user  # noqa: E402
from ivr.services.calls import notice_version, run_id_for  # noqa: E402
from ivr.storage.db import database  # noqa: E402
from ivr.storage.models import Call, Consent, FlowRun, FlowVersion, Turn  # noqa: E402

BATCH = 5000
AGENTS = 20
TWIML = "<Response>" + "<Play>https://ivr.example/audio/x.wav</Play>" * 12 + "</Response>"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def flow_versions(app):
    """The shipped flow and a second version of it (one prompt reworded)."""
    first = app.extensions["ivr_flows"].default
    doc = {**first.document, "prompts": {**first.document["prompts"],
                                         "goodbye": {"tr": "Hoşça kalın.", "en": "Goodbye."}}}
    return [first, build_flow(doc, "flows/consent.yaml (earlier)")]


def first_turn(flow, language: str):
    """The state and the stored actions of a call's first turn, from the engine."""
    state, actions = e.start(flow, {}, language)
    return state, [e.action_to_dict(a) for a in actions]


def fill(engine, flows, n: int, days: int, seed: int = 7) -> dict:
    """Insert n calls spread over the last `days` days; returns what was inserted."""
    rnd = random.Random(seed)
    now = datetime.now(UTC)
    start = now - timedelta(days=days)
    turns = {(f.version, lang): first_turn(f, lang) for f in flows for lang in ("tr", "en")}
    heard = {p: secrets.token_hex(32) for p in flows[0].prompts}
    notices = {(f.version, lang): notice_version(
        lang, [(p, f.text(p, lang), heard[p]) for p in f.notice_prompts()])
        for f in flows for lang in ("tr", "en")}
    stats = {"calls": 0, "consents": 0, "hangups": 0}
    with engine.begin() as conn:
        conn.execute(insert(FlowVersion), [
            {"version": f.version, "flow_id": f.id, "source": f.source, "document": f.document,
             "first_seen": start} for f in flows])
    rows: dict[str, list] = {"calls": [], "runs": [], "turns": [], "consents": []}

    def flush():
        with engine.begin() as conn:
            for table, model in (("calls", Call), ("runs", FlowRun), ("turns", Turn),
                                 ("consents", Consent)):
                if rows[table]:
                    conn.execute(insert(model), rows[table])
                    rows[table].clear()

    for i in range(n):
        at = start + timedelta(seconds=days * 86400 * i / n + rnd.random())
        flow = flows[0] if at > start + timedelta(days=days / 3) else flows[1]
        lang = "en" if rnd.random() < 0.2 else "tr"
        sid = "CA" + secrets.token_hex(16)
        transfer = rnd.random() < 0.15
        origin = "transfer:" + secrets.token_hex(8) if transfer else "incoming"
        run_id = run_id_for(sid, origin)
        agent = str(rnd.randrange(AGENTS)) if transfer else None
        state, actions = turns[(flow.version, lang)]
        hangup = rnd.random() < 0.12
        end = at + timedelta(seconds=rnd.uniform(1, 60) if hangup else rnd.uniform(45, 90))
        rows["calls"].append({
            "call_sid": sid, "account_sid": "AC" + "0" * 32, "phone_hmac": secrets.token_hex(32),
            "phone_enc": None, "to_number": "+902122223344", "direction": "inbound",
            "status": "completed", "status_seq": 3, "status_at": end, "started_at": at,
            "answered_at": at, "ended_at": end, "duration": int((end - at).total_seconds()),
            "seen_incoming": True, "created_at": at})
        rows["runs"].append({
            "id": run_id, "call_sid": sid, "origin": origin, "flow_id": flow.id,
            "flow_version": flow.version, "transfer_id": origin[9:] if transfer else None,
            "agent_id": agent, "state": state.to_dict(), "step": 1, "ended": True,
            "hangup_at": end if hangup else None, "heard": heard,
            "notice": {lang: [{"prompt": p, "audio": heard[p]} for p in flow.notice_prompts()]},
            "created_at": at, "updated_at": end})
        rows["turns"].append({"run_id": run_id, "step": 0, "input": None, "actions": actions,
                              "twiml": TWIML, "created_at": at})
        if hangup:
            stats["hangups"] += 1
        else:
            decision = rnd.choices(("granted", "declined", "no_input", "withdrawn"),
                                   (55, 30, 12, 3))[0]
            rows["consents"].append({
                "run_id": run_id, "call_sid": sid, "phone_hmac": secrets.token_hex(32),
                "phone_enc": None, "purpose": "marketing", "channels": ["ARAMA"],
                "decision": decision, "digits": "1", "language": lang,
                "notice_version": notices[(flow.version, lang)], "flow_version": flow.version,
                "captured_at": end, "agent_id": agent,
                "transfer_id": origin[9:] if transfer else None, "source": "ivr",
                "reason": None, "audio": {}, "idempotency_key": None})
            stats["consents"] += 1
        stats["calls"] += 1
        if len(rows["calls"]) >= BATCH:
            flush()
    flush()
    return stats


def login(base: str, name: str, secret: str) -> requests.Session:
    http = requests.Session()
    token = CSRF.search(http.get(f"{base}/login", timeout=30).text).group(1)
    r = http.post(f"{base}/login", data={"csrf_token": token, "name": name, "secret": secret},
                  allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text[:300]
    return http


def timed(http: requests.Session, url: str, n: int) -> list[float]:
    """Seconds per request of n requests, after one warm-up request."""
    out = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        r = http.get(url, timeout=120)
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            raise SystemExit(f"{url} answered {r.status_code}: {r.text[:300]}")
        if i:
            out.append(dt)
    return out


def run(n: int, days: int, requests_per_page: int) -> None:
    tmp = tempfile.TemporaryDirectory()
    scratch = ExitStack()
    url = scratch.enter_context(scratch_database())
    server = make_server("127.0.0.1", 0, None, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app = create_app({"DATABASE_URL": url, "INSTANCE_DIR": f"{tmp.name}/instance",
                      "AUDIO_DIR": str(ROOT / "audio"), "PUBLIC_URL": base,
                      "TWILIO_AUTH_TOKEN": "bench", "RATELIMIT_ENABLED": False,
                      "LOG_LEVEL": "ERROR"})
    for name in ("werkzeug", "ivr"):
        logging.getLogger(name).setLevel(logging.ERROR)
    db = database(app)
    db.create_all()
    t0 = time.perf_counter()
    stats = fill(db.engine, flow_versions(app), n, days)
    plain = create_engine(url, isolation_level="AUTOCOMMIT")
    with plain.connect() as conn:  # fresh statistics, as autovacuum would have by now
        conn.execute(text("VACUUM ANALYZE"))
    plain.dispose()
    print(f"stored {stats['calls']} calls, {stats['consents']} consents, "
          f"{stats['hangups']} hang-ups without a decision over {days} days "
          f"in {time.perf_counter() - t0:.1f} s")
    with app.app_context():
        s = db.sessionmaker()
        with s.begin():
            secret = add_user(s, "bench-auditor", "auditor")[1]
        s.close()
    server.app = app
    threading.Thread(target=server.serve_forever, daemon=True).start()
    http = login(base, "bench-auditor", secret)
    today = datetime.now(UTC).date()
    pages = {
        f"dashboard, all {days} days per day": f"/auditor/dashboard?since="
        f"{today - timedelta(days=days):%d.%m.%Y}&until={today:%d.%m.%Y}",
        "dashboard, default (last 30 days)": "/auditor/dashboard",
        f"dashboard, all {days} days per week": f"/auditor/dashboard?since="
        f"{today - timedelta(days=days):%d.%m.%Y}&until={today:%d.%m.%Y}&step=week",
        "flow registry": "/auditor/flows",
    }
    print(f"  {'page':38} {'median ms':>10} {'max ms':>8}  ({requests_per_page} requests each)")
    for label, path in pages.items():
        v = timed(http, base + path, requests_per_page)
        print(f"  {label:38} {statistics.median(v) * 1000:10.0f} {max(v) * 1000:8.0f}")
    server.shutdown()
    db.engine.dispose()
    scratch.close()
    tmp.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--requests", type=int, default=7)
    args = ap.parse_args()
    run(args.calls, args.days, args.requests)


if __name__ == "__main__":
    main()
