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
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
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
from ivr.domain.notice_version import notice_version  # noqa: E402
from ivr.domain.runs import run_id_for  # noqa: E402
from ivr.services import audit_sequencer, daily_aggregates  # noqa: E402
from ivr.services.accounts import add_user  # noqa: E402
from ivr.services.notice_dropoff import audio_seconds  # noqa: E402
from ivr.storage.db import database  # noqa: E402
from ivr.storage.models import Consent  # noqa: E402

CHUNK = 20_000
FILLED = ("calls", "flow_runs", "flow_turns", "consents", "flow_versions")
AGGREGATES = ("daily_consents", "daily_notices", "daily_runs", "daily_hangups",
              "aggregate_marks")
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


# Unlogged tables of the schema's own (not TEMP): two sessions expand them side by side.
SEED = """CREATE UNLOGGED TABLE fill_seed (half int, sid text, at bigint, dur int, lang int,
                                          flow int, kind int, decision text, agent int,
                                          tid text, phone int)"""
CONSTS = """CREATE UNLOGGED TABLE fill_consts (flow int, lang int, language text, version text,
                                           flow_id text, state json, hidden json, actions json,
                                           notice json, notice_version text)"""
# The rows of every table, expanded from the seeds and the constants by the server (run ids
# as ivr.domain.runs.run_id_for makes them; phone HMACs stand-ins from a pool of numbers).
EXPAND = [
    """INSERT INTO calls (call_sid, account_sid, phone_hmac, to_number, direction, status,
                         status_seq, status_at, started_at, answered_at, ended_at, duration,
                         seen_incoming, created_at)
       SELECT sid, 'AC' || repeat('0', 32),
              CASE WHEN kind <> 2 THEN encode(sha256(phone::text::bytea), 'hex') END,
              '+902122223344', 'inbound', 'completed', 3, to_timestamp(at + dur),
              to_timestamp(at), to_timestamp(at), to_timestamp(at + dur), dur, true,
              to_timestamp(at)
         FROM fill_seed WHERE kind <> 3 AND half = %(half)s""",
    """INSERT INTO flow_runs (id, call_sid, origin, flow_id, flow_version, transfer_id,
                             agent_id, state, step, ended, hangup_at, heard, notice,
                             created_at, updated_at)
       SELECT substr(encode(sha256(convert_to(sid || E'\n' || coalesce('transfer:' || tid,
                                                                      'incoming'),
                                               'UTF8')), 'hex'), 1, 32),
              sid, coalesce('transfer:' || tid, 'incoming'), c.flow_id, c.version, tid,
              CASE WHEN agent >= 0 THEN agent::text END,
              CASE WHEN kind = 2 THEN c.hidden ELSE c.state END, 0, true,
              CASE WHEN kind = 1 THEN to_timestamp(at + dur) END, %(heard)s::json, c.notice,
              to_timestamp(at), to_timestamp(at + dur)
         FROM fill_seed JOIN fill_consts c USING (flow, lang)
        WHERE kind <> 3 AND half = %(half)s""",
    """INSERT INTO flow_turns (run_id, step, actions, twiml, created_at)
       SELECT substr(encode(sha256(convert_to(sid || E'\n' || coalesce('transfer:' || tid,
                                                                      'incoming'),
                                               'UTF8')), 'hex'), 1, 32),
              0, c.actions, %(twiml)s, to_timestamp(at)
         FROM fill_seed JOIN fill_consts c USING (flow, lang)
        WHERE kind = 1 AND half = %(half)s""",
    """INSERT INTO consents (run_id, call_sid, phone_hmac, purpose, channels, decision, digits,
                            language, notice_version, flow_version, captured_at, agent_id,
                            transfer_id, source, reason, audio, idempotency_key)
       SELECT CASE WHEN kind = 0 THEN substr(encode(sha256(convert_to(
                   sid || E'\n' || coalesce('transfer:' || tid, 'incoming'), 'UTF8')),
                   'hex'), 1, 32) END,
              CASE WHEN kind = 0 THEN sid END, encode(sha256(phone::text::bytea), 'hex'),
              'marketing', '["ARAMA"]', decision, CASE WHEN kind = 0 THEN '1' ELSE '' END,
              c.language, CASE WHEN kind = 0 THEN c.notice_version END,
              CASE WHEN kind = 0 THEN c.version END, to_timestamp(at + dur),
              CASE WHEN agent >= 0 THEN agent::text END, tid,
              CASE WHEN kind = 0 THEN 'ivr' ELSE 'api' END,
              CASE WHEN kind = 3 THEN 'asked by phone' END, '{}',
              CASE WHEN kind = 3 THEN 'api-' || sid END
         FROM fill_seed JOIN fill_consts c USING (flow, lang)
        WHERE kind IN (0, 3) AND half = %(half)s""",
]


# lz4 when the server was built with it (Debian's is; the embedded server's wheel is not).
LZ4_IF_BUILT = """SELECT set_config('default_toast_compression', 'lz4', false)
                   FROM pg_settings
                  WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"""


def both(url: str, halves: list[list[tuple[str, dict | None]]]) -> None:
    """Run two lists of statements side by side, each on a session of its own (the server
    does the work: one session per core)."""

    def run(statements: list[tuple[str, dict | None]]) -> None:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as c:
            c.execute("SET session_replication_role = replica")  # no triggers, no FK checks
            c.execute("SET maintenance_work_mem = '256MB'")
            c.execute("SET synchronous_commit = off")
            c.execute(LZ4_IF_BUILT)
            for sql, params in statements:
                c.execute(sql, params)
                c.commit()

    with ThreadPoolExecutor(len(halves)) as pool:
        for done in [pool.submit(run, h) for h in halves]:
            done.result()


def fill(url: str, flows, n: int, days: int, seed: int = 7) -> dict:  # noqa: C901 - the draw of one call, inline: it runs ten million times
    """COPY n calls over the last `days` Istanbul days (today the last); returns counts.

    Python draws each call (its CallSid, start, length, language, flow version, outcome,
    agent, number) and COPYs it as one short line into a temporary table; the server
    expands the lines into the calls, runs, turns and consent records with the flows'
    stored documents (state, heard prompts, notice, the first turn's actions).
    """
    rnd = random.Random(seed)
    today = (datetime.now(UTC) + ISTANBUL).date()
    first_day = today - timedelta(days=days - 1)
    start = int(datetime.combine(first_day, datetime.min.time(), UTC).timestamp()
                - ISTANBUL.total_seconds())
    # Calls until an hour ago: the last day is today, and nothing lies in the future.
    span = max(3600, int(time.time()) - 3600 - start)
    heard = {p: hashlib.sha256(p.encode()).hexdigest() for p in flows[0].prompts}
    consts = []
    for fi, f in enumerate(flows):
        for li, lang in enumerate(("tr", "en")):
            state, actions = e.start(f, {}, lang)
            hidden_state = e.start(f, {HIDDEN_CALLER: True}, lang)[0]
            consts.append((fi, li, lang, f.version, f.id, json.dumps(state.to_dict()),
                           json.dumps(hidden_state.to_dict()),
                           json.dumps([e.action_to_dict(a) for a in actions]),
                           json.dumps({lang: [{"prompt": p, "audio": heard[p]}
                                              for p in f.notice_prompts()]}),
                           notice_version(lang, [(p, f.text(p, lang), heard[p])
                                                 for p in f.notice_prompts()])))
    switch = start + span // 3
    pool = max(1, n // 3)
    decisions = ["granted"] * 55 + ["declined"] * 30 + ["no_input"] * 12 + ["withdrawn"] * 3
    stats = {"calls": 0, "consents": 0, "hangups": 0, "hidden": 0, "api": 0}
    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    with conn:
        cur = conn.cursor()
        cur.execute("SET session_replication_role = replica")  # no triggers, no FK checks
        cur.execute("SET maintenance_work_mem = '512MB'")
        cur.execute("SET synchronous_commit = off")
        # A run's row is ~2 KB (its heard prompts), past the TOAST threshold: lz4 compresses
        # it several times faster than the default pglz (the pages read it either way).
        cur.execute(LZ4_IF_BUILT)
        cur.executemany(
            "INSERT INTO flow_versions (version, flow_id, source, document, first_seen) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(f.version, f.id, f.source, json.dumps(f.document),
              datetime.fromtimestamp(start, UTC)) for f in flows])
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
        cur.execute(SEED)
        cur.execute(CONSTS)
        cur.executemany("INSERT INTO fill_consts VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        consts)
        t0 = time.perf_counter()
        bits = rnd.getrandbits
        with cur.copy("COPY fill_seed FROM STDIN") as cp:
            done = 0
            while done < n:
                m = min(CHUNK, n - done)
                lines = []
                for i in range(done, done + m):
                    r = bits(64)
                    at = start + span * i // n + (r & 31)
                    flow = 0 if at > switch else 1
                    lang = 1 if (r >> 5) & 255 < 51 else 0  # 20 % English
                    what = (r >> 13) & 1023  # the outcome, per mille
                    agent, tid = -1, NULL
                    if what < 10:  # a withdrawal through the API: no call
                        stats["api"] += 1
                        lines.append(f"{i & 1}\ta{i:09d}\t{at}\t0\t{lang}\t{flow}\t3\twithdrawn\t-1"
                                     f"\t{NULL}\t{(r >> 23) % pool}\n")
                        continue
                    if what < 170:  # 16 %: an agent's transfer
                        agent, tid = (r >> 23) % AGENTS, f"{bits(64):016x}"
                    kind = 0
                    if what >= 170 and what < 180:  # 1 %: a hidden number
                        kind = 2
                        stats["hidden"] += 1
                    elif (r >> 28) & 255 < 31:  # 12 %: hangs up without a decision
                        kind = 1
                        stats["hangups"] += 1
                    dur = (2 + (r >> 36) % 73) if kind == 1 else (50 + (r >> 36) % 50)
                    decision = decisions[(r >> 44) % 100] if kind == 0 else NULL
                    stats["consents"] += kind == 0
                    lines.append(f"{i & 1}\tCA{bits(128):032x}\t{at}\t{dur}\t{lang}\t{flow}\t{kind}"
                                 f"\t{decision}\t{agent}\t{tid}\t{(r >> 51) % pool}\n")
                    stats["calls"] += 1
                cp.write("".join(lines))
                done += m
        stats["copy_seconds"] = time.perf_counter() - t0
        stats["consents"] += stats["api"]
        conn.commit()  # the seeds and the dropped indexes, for the sessions below
        t0 = time.perf_counter()
        params = {"heard": json.dumps(heard), "twiml": TWIML}
        both(url, [[(sql, {**params, "half": half}) for sql in EXPAND] for half in (0, 1)])
        cur.execute("DROP TABLE fill_seed, fill_consts")
        sid, origin, run = cur.execute("SELECT call_sid, origin, id FROM flow_runs LIMIT 1"
                                       ).fetchone()
        if run != run_id_for(sid, origin):
            raise SystemExit(f"the server made run id {run}, the IVR makes "
                             f"{run_id_for(sid, origin)}")
        stats["expand_seconds"] = time.perf_counter() - t0
        conn.commit()
        t0 = time.perf_counter()
        creates = [(create, None) for _drop, create in rebuilt]
        both(url, [creates[0::2], creates[1::2]])
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
    # A kept schema keeps its instance folder (its data keys), to be re-used with it.
    instance = (Path(tempfile.gettempdir()) / f"ivr-bench-{args.schema}" if args.schema
                else Path(tmp.name) / "instance")
    app = create_app({"DATABASE_URL": url, "INSTANCE_DIR": str(instance),
                      "AUDIO_DIR": str(ROOT / "audio"), "PUBLIC_URL": base,
                      "TWILIO_AUTH_TOKEN": "bench", "RATELIMIT_ENABLED": False,
                      "LOG_LEVEL": "ERROR"})
    for name in ("werkzeug", "ivr"):
        logging.getLogger(name).setLevel(logging.ERROR)
    db = database(app)
    serving = None
    try:
        db.create_all()  # (on a kept schema: the tables and triggers this code adds)
        plain = create_engine(url, isolation_level="AUTOCOMMIT")
        if reuse:
            with db.engine.connect() as conn:
                stored = conn.scalar(select(text("count(*)")).select_from(Consent))
            print(f"re-using schema {args.schema} ({stored:,} consent records)")
        else:
            t0 = time.perf_counter()
            stats = fill(url, flow_versions(app), args.calls, args.days)
            copied = time.perf_counter() - t0
            print(f"stored {stats['calls']:,} calls ({stats['consents']:,} consent records, "
                  f"{stats['api']:,} of them withdrawals through the API; {stats['hangups']:,} "
                  f"hang-ups without a decision; {stats['hidden']:,} hidden numbers) over "
                  f"{args.days} days in {copied:.1f} s (COPY {stats['copy_seconds']:.1f} s, "
                  f"rows made by the server {stats['expand_seconds']:.1f} s, secondary "
                  f"indexes {stats['index_seconds']:.1f} s): {stats['calls'] / copied:,.0f} "
                  f"calls/s", flush=True)
            t0 = time.perf_counter()
            with plain.connect() as conn:  # fresh statistics, as autovacuum would have by now
                conn.execute(text(f"VACUUM ANALYZE {', '.join(FILLED)}"))
            print(f"VACUUM ANALYZE in {time.perf_counter() - t0:.1f} s", flush=True)
        if not reuse or args.rebuild:
            t0 = time.perf_counter()
            with app.app_context():
                s = db.sessionmaker()
                with s.begin():
                    built = daily_aggregates.rebuild(s, audio_seconds(app.config["AUDIO_DIR"]))
                s.close()
            print(f"rebuilt the daily aggregates ({built:,} rows) in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
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
    ap.add_argument("--rebuild", action="store_true",
                    help="on a re-used schema, count the daily aggregates again first")
    ap.add_argument("--smoke", action="store_true",
                    help="2,000 calls over 40 days, 3 requests per page (seconds)")
    args = ap.parse_args()
    if args.smoke:
        args.calls, args.days, args.requests = 2000, 40, 3
    raise SystemExit(run(args))


if __name__ == "__main__":
    main()
