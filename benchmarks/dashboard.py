"""The auditor dashboard, the flow registry and the drop-off over a long history, timed over
real HTTP.

    .venv/bin/python benchmarks/dashboard.py [--calls 1000000] [--days 1095] [--requests 20]
    .venv/bin/python benchmarks/dashboard.py --calls 10000000 --schema bench_10m --keep
    .venv/bin/python benchmarks/dashboard.py --schema bench_10m --keep   # re-use that fill
    .venv/bin/python benchmarks/dashboard.py --smoke          # seconds; exit 1 on a fault

Fills a scratch PostgreSQL schema (benchmarks/scratch_db.py) through COPY (psycopg's
`cursor.copy`): the calls over `--days` Istanbul days ending today, with their flow runs,
consent records and, for the callers who hung up during the notice, the turn that was
playing (its actions from the real flow engine; the drop-off places the hang-up on it).
The mix: two flow versions (the older one for the first third of the days), 20 % English,
15 % agent transfers by 20 agents, 12 % hang-ups without a decision, 1 % callers from a
hidden number, 1 % withdrawals through the API (no call), the rest granted, declined,
no input or withdrawn in the call; returning callers come from a pool of numbers. Then
rebuilds the daily aggregates (`python -m ivr db rebuild-aggregates` does the same), runs
`VACUUM ANALYZE`, serves the app (werkzeug, in this process), logs in as an auditor and
times GET requests of each page: the dashboard over the last 90 days per day and per week,
the default dashboard (last 30 days), the flow registry and the drop-off's list of calls
(its first page and its 1,000th, through the keyset cursor). Prints each page's median and
p95; the first request of each page is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import requests  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from benchmarks.scratch_db import schema_exists, scratch_database  # noqa: E402
from ivr import create_app  # noqa: E402
from ivr.domain.flow import engine as e  # noqa: E402
from ivr.domain.flow.loader import build_flow  # noqa: E402
from ivr.domain.flow.model import HIDDEN_CALLER  # noqa: E402
from ivr.domain.notice import notice_version  # noqa: E402
from ivr.domain.runs import run_id_for  # noqa: E402
from ivr.services import audit_sequencer, daily_aggregates  # noqa: E402
from ivr.services.accounts import add_user  # noqa: E402
from ivr.services.notice_dropoff import audio_seconds  # noqa: E402
from ivr.storage.db import database  # noqa: E402
from ivr.storage.models import Consent  # noqa: E402

CHUNK = 20_000
FILLED = ("calls", "flow_runs", "flow_turns", "consents", "flow_versions")
AGGREGATES = ("daily_consents", "daily_runs", "daily_hangups", "aggregate_marks")
AGENTS = 20
ISTANBUL = timedelta(hours=3)  # UTC+3 all year since 2016
TWIML = "<Response>" + "<Play>https://ivr.example/audio/x.wav</Play>" * 12 + "</Response>"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NULL = "\\N"


def flow_versions(app):
    """The shipped flow and a second version of it (one prompt reworded)."""
    first = app.extensions["ivr_flows"].default
    doc = {**first.document, "prompts": {**first.document["prompts"],
                                         "goodbye": {"tr": "Hoşça kalın.", "en": "Goodbye."}}}
    return [first, build_flow(doc, "flows/consent.yaml (earlier)")]


def copy_text(value) -> str:
    """A JSON value as one field of COPY's text format."""
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            .replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n"))


class Clock:
    """UTC text of whole epoch seconds, fast: the day's prefix and the time of day."""

    def __init__(self, first_day: date, days: int):
        self.base = int(datetime.combine(first_day, datetime.min.time(), UTC).timestamp())
        self.days = [f"{first_day + timedelta(days=d):%Y-%m-%d} " for d in range(days + 2)]
        self.tod = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00" for s in range(86400)]

    def __call__(self, epoch: int) -> str:
        d, s = divmod(epoch - self.base, 86400)
        return self.days[d] + self.tod[s]


def fill(url: str, flows, n: int, days: int, seed: int = 7) -> dict:
    """COPY n calls over the last `days` Istanbul days (today the last); returns counts."""
    rnd = random.Random(seed)
    today = (datetime.now(UTC) + ISTANBUL).date()
    first_day = today - timedelta(days=days - 1)
    start = int(datetime.combine(first_day, datetime.min.time(), UTC).timestamp()
                - ISTANBUL.total_seconds())
    # Calls until an hour ago: the last day is today, and nothing lies in the future.
    span = max(3600, int(time.time()) - 3600 - start)
    clock = Clock(first_day - timedelta(days=1), days + 1)
    heard = {p: hashlib.sha256(p.encode()).hexdigest() for p in flows[0].prompts}
    heard_text = copy_text(heard)
    per = {}
    for f in flows:
        for lang in ("tr", "en"):
            state, actions = e.start(f, {}, lang)
            hidden_state = e.start(f, {HIDDEN_CALLER: True}, lang)[0]
            notice = notice_version(lang, [(p, f.text(p, lang), heard[p])
                                           for p in f.notice_prompts()])
            per[(f.version, lang)] = {
                "state": copy_text(state.to_dict()),
                "hidden": copy_text(hidden_state.to_dict()),
                "actions": copy_text([e.action_to_dict(a) for a in actions]),
                "notice_json": copy_text({lang: [{"prompt": p, "audio": heard[p]}
                                                 for p in f.notice_prompts()]}),
                "notice": notice, "flow": f}
    switch = start + span // 3
    pool = max(1, n // 3)
    decisions = ("granted", "declined", "no_input", "withdrawn")
    stats = {"calls": 0, "consents": 0, "hangups": 0, "hidden": 0, "api": 0}
    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    with conn:
        cur = conn.cursor()
        cur.execute("SET session_replication_role = replica")  # no triggers, no FK checks
        cur.execute("SET maintenance_work_mem = '512MB'")
        # As pg_restore does: the secondary indexes and unique constraints are built once,
        # after the rows are in (the primary keys stay: the foreign keys hang on them).
        cur.execute("""
            SELECT format('ALTER TABLE %%I DROP CONSTRAINT %%I', t.relname, c.conname),
                   format('ALTER TABLE %%I ADD CONSTRAINT %%I %%s', t.relname, c.conname,
                          pg_get_constraintdef(c.oid))
              FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
             WHERE c.contype = 'u' AND t.relname = ANY(%s)
               AND t.relnamespace = current_schema()::regnamespace""", [list(FILLED)])
        rebuilt = cur.fetchall()
        cur.execute("""
            SELECT format('DROP INDEX %%I', i.indexname), i.indexdef
              FROM pg_indexes i
             WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s)
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                WHERE c.conname = i.indexname
                                  AND c.connamespace = current_schema()::regnamespace)""",
                    [list(FILLED)])
        rebuilt += cur.fetchall()
        for drop, _create in rebuilt:
            cur.execute(drop)
        cur.executemany(
            "INSERT INTO flow_versions (version, flow_id, source, document, first_seen) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(f.version, f.id, f.source, json.dumps(f.document),
              datetime.fromtimestamp(start, UTC)) for f in flows])
        done = 0
        while done < n:
            m = min(CHUNK, n - done)
            calls, runs, turns, consents = [], [], [], []
            for i in range(done, done + m):
                at = start + span * i // n + rnd.randrange(30)
                flow = flows[0] if at > switch else flows[1]
                r = rnd.random()
                lang = "en" if r < 0.2 else "tr"
                p = per[(flow.version, lang)]
                r = rnd.random()
                if r < 0.01:  # a withdrawal through the API: a consent record, no call
                    stats["api"] += 1
                    consents.append(
                        f"{NULL}\t{NULL}\t{hashlib.sha256(str(rnd.randrange(pool)).encode()).hexdigest()}"
                        f"\t{NULL}\tmarketing\t[\"ARAMA\"]\twithdrawn\t\t{lang}\t{NULL}\t{NULL}"
                        f"\t{clock(at)}\t{NULL}\t{NULL}\tapi\tapi\t{{}}\tapi-{i}\n")
                    continue
                sid = f"CA{rnd.getrandbits(128):032x}"
                transfer = r < 0.16
                tid = f"{rnd.getrandbits(64):016x}" if transfer else None
                origin = f"transfer:{tid}" if transfer else "incoming"
                run_id = run_id_for(sid, origin)
                agent = str(rnd.randrange(AGENTS)) if transfer else NULL
                hidden = not transfer and rnd.random() < 0.01
                hangup = not hidden and rnd.random() < 0.12
                end = at + (rnd.randrange(2, 75) if hangup else rnd.randrange(50, 100))
                phone = (NULL if hidden else
                         hashlib.sha256(str(rnd.randrange(pool)).encode()).hexdigest())
                at_t, end_t = clock(at), clock(end)
                calls.append(f"{sid}\tAC{'0' * 32}\t{phone}\t{NULL}\t+902122223344\tinbound"
                             f"\tcompleted\t3\t{end_t}\t{at_t}\t{at_t}\t{end_t}\t{end - at}"
                             f"\tt\t{at_t}\n")
                runs.append(f"{run_id}\t{sid}\t{origin}\t{flow.id}\t{flow.version}"
                            f"\t{tid or NULL}\t{agent}\t{p['hidden'] if hidden else p['state']}"
                            f"\t0\tt\t{end_t if hangup else NULL}\t{heard_text}"
                            f"\t{p['notice_json']}\t{at_t}\t{end_t}\n")
                if hangup:
                    stats["hangups"] += 1
                    turns.append(f"{run_id}\t0\t{NULL}\t{p['actions']}\t{TWIML}\t{at_t}\n")
                elif hidden:
                    stats["hidden"] += 1
                else:
                    decision = decisions[rnd.choices((0, 1, 2, 3), (55, 30, 12, 3))[0]]
                    consents.append(
                        f"{run_id}\t{sid}\t{phone}\t{NULL}\tmarketing\t[\"ARAMA\"]\t{decision}"
                        f"\t1\t{lang}\t{p['notice']}\t{flow.version}\t{end_t}\t{agent}"
                        f"\t{tid or NULL}\tivr\t{NULL}\t{{}}\t{NULL}\n")
                stats["calls"] += 1
            for table, cols, lines in (
                    ("calls", "call_sid, account_sid, phone_hmac, phone_enc, to_number, "
                     "direction, status, status_seq, status_at, started_at, answered_at, "
                     "ended_at, duration, seen_incoming, created_at", calls),
                    ("flow_runs", "id, call_sid, origin, flow_id, flow_version, transfer_id, "
                     "agent_id, state, step, ended, hangup_at, heard, notice, created_at, "
                     "updated_at", runs),
                    ("flow_turns", "run_id, step, input, actions, twiml, created_at", turns),
                    ("consents", "run_id, call_sid, phone_hmac, phone_enc, purpose, channels, "
                     "decision, digits, language, notice_version, flow_version, captured_at, "
                     "agent_id, transfer_id, source, reason, audio, idempotency_key",
                     consents)):
                if lines:
                    with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                        cp.write("".join(lines))
            stats["consents"] += len(consents)
            done += m
            conn.commit()
        t0 = time.perf_counter()
        for _drop, create in rebuilt:
            cur.execute(create)
        stats["index_seconds"] = time.perf_counter() - t0
    conn.close()
    return stats


def login(base: str, name: str, secret: str) -> requests.Session:
    """A requests session logged in to the workspace."""
    http = requests.Session()
    token = CSRF.search(http.get(f"{base}/login", timeout=30).text).group(1)
    r = http.post(f"{base}/login", data={"csrf_token": token, "name": name, "secret": secret},
                  allow_redirects=False, timeout=30)
    if r.status_code != 302:
        raise SystemExit(f"login answered {r.status_code}: {r.text[:300]}")
    return http


def timed(http: requests.Session, url: str, n: int) -> list[float]:
    """Seconds per request of n requests, after one warm-up request."""
    out = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        r = http.get(url, timeout=300)
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            raise SystemExit(f"{url} answered {r.status_code}: {r.text[:300]}")
        if i:
            out.append(dt)
    return out


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class Errors(logging.Handler):
    """Counts the error records logged while the benchmark runs."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run(args) -> int:
    errors = Errors()
    logging.getLogger().addHandler(errors)
    tmp = tempfile.TemporaryDirectory()
    scratch = ExitStack()
    reuse = bool(args.schema) and schema_exists(args.schema)
    url = scratch.enter_context(scratch_database(schema=args.schema, keep=args.keep))
    server = make_server("127.0.0.1", 0, None, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app = create_app({"DATABASE_URL": url, "INSTANCE_DIR": f"{tmp.name}/instance",
                      "AUDIO_DIR": str(ROOT / "audio"), "PUBLIC_URL": base,
                      "TWILIO_AUTH_TOKEN": "bench", "RATELIMIT_ENABLED": False,
                      "LOG_LEVEL": "ERROR"})
    for name in ("werkzeug", "ivr"):
        logging.getLogger(name).setLevel(logging.ERROR)
    db = database(app)
    serving = None
    try:
        if reuse:
            with db.engine.connect() as conn:
                stored = conn.scalar(select(text("count(*)")).select_from(Consent))
            print(f"re-using schema {args.schema} ({stored:,} consent records)")
        else:
            db.create_all()
            t0 = time.perf_counter()
            stats = fill(url, flow_versions(app), args.calls, args.days)
            copied = time.perf_counter() - t0
            print(f"stored {stats['calls']:,} calls ({stats['consents']:,} consent records, "
                  f"{stats['api']:,} of them withdrawals through the API; {stats['hangups']:,} "
                  f"hang-ups without a decision; {stats['hidden']:,} hidden numbers) over "
                  f"{args.days} days by COPY in {copied:.1f} s, the secondary indexes built "
                  f"again in {stats['index_seconds']:.1f} s of it: "
                  f"{stats['calls'] / copied:,.0f} calls/s", flush=True)
            plain = create_engine(url, isolation_level="AUTOCOMMIT")
            t0 = time.perf_counter()
            with plain.connect() as conn:  # fresh statistics, as autovacuum would have by now
                conn.execute(text(f"VACUUM ANALYZE {', '.join(FILLED)}"))
            print(f"VACUUM ANALYZE in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            with app.app_context():
                s = db.sessionmaker()
                with s.begin():
                    built = daily_aggregates.rebuild(s, audio_seconds(app.config["AUDIO_DIR"]))
                s.close()
            print(f"rebuilt the daily aggregates ({built:,} rows) in "
                  f"{time.perf_counter() - t0:.1f} s")
            with plain.connect() as conn:
                conn.execute(text(f"VACUUM ANALYZE {', '.join(AGGREGATES)}"))
            plain.dispose()
        with app.app_context():
            s = db.sessionmaker()
            with s.begin():
                name = "bench-auditor-" + datetime.now(UTC).strftime("%H%M%S%f")
                secret = add_user(s, name, "auditor")[1]
            s.close()
        server.app = app
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        http = login(base, name, secret)
        today = (datetime.now(UTC) + ISTANBUL).date()
        ninety = f"since={today - timedelta(days=89):%d.%m.%Y}&until={today:%d.%m.%Y}"
        pages = {
            "dashboard, 90 days per day": f"/auditor/dashboard?{ninety}",
            "dashboard, default (last 30 days)": "/auditor/dashboard",
            "dashboard, 90 days per week": f"/auditor/dashboard?{ninety}&step=week",
            "flow registry": "/auditor/flows",
            "drop-off calls, first page": f"/auditor/dashboard/hangups?{ninety}&language=tr",
        }
        deep, page = deep_page(http, base + pages["drop-off calls, first page"],
                               3 if args.smoke else 1000)
        if page > 1:
            pages[f"drop-off calls, page {page:,}"] = deep
        print(f"  {'page':36} {'median ms':>10} {'p95 ms':>8}  ({args.requests} requests each)")
        for label, path in pages.items():
            v = timed(http, path if path.startswith("http") else base + path, args.requests)
            print(f"  {label:36} {statistics.median(v) * 1000:10.0f} {p95(v) * 1000:8.0f}",
                  flush=True)
    finally:
        if serving is not None:
            server.shutdown()
        audit_sequencer.stop_thread(app)  # before its schema goes
        db.engine.dispose()
        scratch.close()
        tmp.cleanup()
    if errors.records:
        for r in errors.records:
            print(f"logged an error: {r.getMessage()}", file=sys.stderr)
        return 1
    return 0


NEXT = re.compile(r'<a [^>]*rel="next"[^>]*href="([^"]+)"|<a [^>]*href="([^"]+)"[^>]*rel="next"')


def deep_page(http: requests.Session, first: str, n: int) -> tuple[str, int]:
    """The URL and number of page n of a keyset-paginated list (or of its last page, if it
    has fewer), following its "next" links."""
    url, page = first, 1
    while page < n:
        m = NEXT.search(http.get(url, timeout=300).text)
        if m is None:
            break
        url = requests.compat.urljoin(first, (m.group(1) or m.group(2)).replace("&amp;", "&"))
        page += 1
    return url, page


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=1095, help="Istanbul days, today the last")
    ap.add_argument("--requests", type=int, default=20, help="timed requests per page")
    ap.add_argument("--schema", help="fill this schema (re-use it if it exists)")
    ap.add_argument("--keep", action="store_true", help="do not drop the schema at the end")
    ap.add_argument("--smoke", action="store_true",
                    help="2,000 calls over 40 days, 3 requests per page (seconds)")
    args = ap.parse_args()
    if args.smoke:
        args.calls, args.days, args.requests = 2000, 40, 3
    raise SystemExit(run(args))


if __name__ == "__main__":
    main()
