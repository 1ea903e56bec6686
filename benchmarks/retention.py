"""Webhook p99 with and without a `retention run` over many expired calls running alongside.

    .venv/bin/python benchmarks/retention.py [--calls 300000] [--callers 6] [--window 20]
        [--workers 2]
    .venv/bin/python benchmarks/retention.py --smoke     # tiny; non-zero on any fault

Creates a fresh PostgreSQL database (`python -m ivr db upgrade`), fills it through COPY with
N calls four years old (past every retention period), each with a declined consent and two
webhook log rows, serves `wsgi:app` under gunicorn (gunicorn.conf.py) on loopback, and
drives it with C concurrent simulated callers placing whole consent calls (incoming, key 1,
status `completed`), every request signed as Twilio signs it. A window of W seconds
without retention, then `python -m ivr retention run` in its own process while the callers
go on, then W seconds without it again; the p99 of the webhooks that started while it ran
is compared with the p99 of both windows without it (target: within 1.5x). Prints both,
the run's time and what it destroyed, and checks that every expired call was anonymised
and every caller's consent stored. Exits 1 on a webhook error, a wrong count, or (without
--smoke) a missed target.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from consent_calls import (  # noqa: E402 - after the path set-up
    create_database,
    drop_database,
    free_port,
    start_gunicorn,
    stop,
)

TARGET = 1.5
SMOKE = {"calls": 2000, "callers": 3, "window": 2.0, "workers": 2}
OLD = datetime.now(UTC) - timedelta(days=4 * 365)


def pct(xs: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs)) - 1))] if xs else float("nan")


def fill(url: str, n: int, env: dict) -> float:
    """COPY n expired calls, a declined consent and two webhook log rows each; seconds."""
    import psycopg
    from sqlalchemy.engine import make_url

    from ivr import create_app
    from ivr.storage.db import database
    from ivr.web.current import personal_data

    os.environ.update(env)
    app = create_app()
    with app.app_context():
        pii = personal_data()
        # One real token: the key check (ivr/storage/keycheck.py) may decrypt a stored one.
        phone = "+905320000000"
        enc, hm = pii.encrypt(phone), pii.fingerprint(phone)
        with database(app).sessionmaker() as s:
            s.connection()  # the key check stores its values before the rows exist
    database(app).engine.dispose()
    u = make_url(url)
    t0 = time.perf_counter()
    with psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                         dbname=u.database) as conn, conn.cursor() as cur:
        with cur.copy("COPY calls (call_sid, phone_hmac, phone_enc, direction, status, "
                      "started_at, ended_at, duration, created_at, seen_incoming) "
                      "FROM STDIN") as copy:
            for i in range(n):
                at = OLD + timedelta(seconds=30 * i)
                copy.write_row((f"CA{i:032x}", hm if i == 0 else f"{i:064x}", enc, "inbound",
                                "completed", at, at + timedelta(seconds=60), 60, at, True))
        with cur.copy("COPY consents (call_sid, phone_hmac, phone_enc, purpose, channels, "
                      "decision, digits, language, captured_at, source, audio) "
                      "FROM STDIN") as copy:
            for i in range(n):
                at = OLD + timedelta(seconds=30 * i + 40)
                copy.write_row((f"CA{i:032x}", hm if i == 0 else f"{i:064x}", enc,
                                "marketing", '["ARAMA"]', "declined", "2", "tr", at, "ivr", "{}"))
        with cur.copy("COPY webhook_requests (path, call_sid, received_at, outcome, "
                      "status_code) FROM STDIN") as copy:
            for i in range(n):
                at = OLD + timedelta(seconds=30 * i)
                for path in ("/voice/incoming", "/voice/status"):
                    copy.write_row((path, f"CA{i:032x}", at, "ok", 200))
        cur.execute("ANALYZE")
    return time.perf_counter() - t0


class Load:
    """C threads placing consent calls until stopped; every webhook's (start, seconds)."""

    def __init__(self, base: str, token: str, callers: int):
        self.base, self.token = base, token
        self.samples: list[tuple[float, float, str]] = []
        self.errors: list[str] = []
        self.calls = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                        for k in range(callers)]

    def _transport(self):
        import requests

        from ivr.adapters.simulate import Reply

        http = requests.Session()

        def post(url: str, data: dict, headers: dict) -> Reply:
            t0 = time.time()
            r = http.post(url, data=data, headers=headers, timeout=15, allow_redirects=False)
            took = time.time() - t0
            with self._lock:
                self.samples.append((t0, took, url.rsplit("/", 1)[-1]))
                if r.status_code != 200:
                    self.errors.append(f"{r.status_code} from {url}")
            return Reply(r.status_code, r.headers.get("Content-Type", ""), r.text)

        return post

    def _run(self, k: int) -> None:
        from ivr.adapters.simulate import Caller

        post = self._transport()
        n = 0
        while not self._stop.is_set():
            number = f"+90533{k:02d}{n:05d}"
            try:
                Caller(self.base, self.token, post, from_number=number).run(["1"])
            except Exception as e:
                with self._lock:
                    self.errors.append(f"{type(e).__name__}: {e}")
            n += 1
            with self._lock:
                self.calls += 1

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(30)

    def between(self, a: float, b: float) -> list[float]:
        """Latencies (ms) of the webhooks that started in [a, b)."""
        with self._lock:
            return [1000 * took for t0, took, _ in self.samples if a <= t0 < b]


def count(url: str, sql: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text(sql)).scalar()
    engine.dispose()
    return n


def main(argv=None) -> int:  # noqa: C901 - the run in order: fill, baseline, retention, report
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=300_000, help="expired calls to fill")
    ap.add_argument("--callers", type=int, default=6, help="concurrent simulated callers")
    ap.add_argument("--window", type=float, default=20.0, help="baseline window (s)")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    ap.add_argument("--threads", type=int, default=0, help="IVR_THREADS (default: the conf's)")
    ap.add_argument("--pg-admin-url", default=os.environ.get(
        "IVR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny run that exits non-zero on any fault; figures mean nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)

    from cryptography.fernet import Fernet

    name = f"ivr_bench_ret_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(args.pg_admin_url, name)
    workdir = Path(tempfile.mkdtemp(prefix="ivr-bench-ret-"))
    token = secrets.token_hex(16)
    env = {"IVR_DATABASE_URL": url, "TWILIO_AUTH_TOKEN": token,
           "IVR_INSTANCE_DIR": str(workdir / "instance"), "IVR_SECRET_KEY": secrets.token_hex(32),
           "IVR_PII_KEY": Fernet.generate_key().decode(), "IVR_HMAC_KEY": secrets.token_hex(32),
           "IVR_LOG_LEVEL": "WARNING"}
    server = None
    load = None
    failed = []
    try:
        done = subprocess.run([sys.executable, "-m", "ivr", "db", "upgrade"], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"db upgrade failed:\n{done.stdout}{done.stderr}")
        seconds = fill(url, args.calls, env)
        print(f"filled {args.calls:,} expired calls (+ consents, 2 webhook logs each) by COPY "
              f"in {seconds:.1f} s = {args.calls / seconds:,.0f} calls/s", flush=True)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env["IVR_PUBLIC_URL"] = base  # the URL Twilio signs
        server = start_gunicorn("wsgi:app", env, port, args, workdir / "gunicorn.log")
        load = Load(base, token, args.callers).start()
        time.sleep(1.0)  # warm-up
        a = time.time()
        time.sleep(args.window)
        b = time.time()
        proc = subprocess.run([sys.executable, "-m", "ivr", "retention", "run"], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, text=True)
        c = time.time()
        # The baseline again after the run: the machine's other load drifts over a long run.
        time.sleep(args.window)
        d = time.time()
        load.stop()
        if proc.returncode != 0:
            failed.append(f"retention run exited {proc.returncode}: {proc.stderr[-500:]}")
        before_ms, during_ms, after_ms = load.between(a, b), load.between(b, c), \
            load.between(c, d)
        base_ms = before_ms + after_ms
        p99a, p99b = pct(base_ms, 99), pct(during_ms, 99)
        ratio = p99b / p99a if base_ms and during_ms else float("nan")
        print(proc.stdout.strip())
        print(f"retention run over {args.calls:,} expired calls: {c - b:.1f} s")
        for label, xs in (("before", before_ms), ("after", after_ms)):
            print(f"  webhooks {label} the run: n={len(xs)}  p99 {pct(xs, 99):.1f} ms")
        print(f"webhooks without retention (before and after): n={len(base_ms)}  p50 "
              f"{statistics.median(base_ms) if base_ms else float('nan'):.1f} ms  "
              f"p99 {p99a:.1f} ms")
        print(f"webhooks during retention:  n={len(during_ms)}  p50 "
              f"{statistics.median(during_ms) if during_ms else float('nan'):.1f} ms  "
              f"p99 {p99b:.1f} ms  ({ratio:.2f}x; target <= {TARGET}x)")
        print(f"calls placed: {load.calls}; webhook errors: {len(load.errors)}")
        left = count(url, "SELECT count(*) FROM calls WHERE phone_hmac IS NOT NULL AND "
                          f"created_at < '{(OLD + timedelta(days=365)).isoformat()}'")
        stored = count(url, "SELECT count(*) FROM consents WHERE captured_at > "
                            f"'{(OLD + timedelta(days=365)).isoformat()}'")
        print(f"expired calls left with a phone: {left}; consents stored by the callers: "
              f"{stored}")
        if load.errors:
            failed.append(f"{len(load.errors)} webhook errors, e.g. {load.errors[:3]}")
        if left:
            failed.append(f"{left} expired calls still hold a phone number")
        if stored < load.calls - args.callers:  # the calls cut short by the stop
            failed.append(f"{stored} consents stored for {load.calls} calls placed")
        if not args.smoke and not ratio <= TARGET:
            failed.append(f"p99 during retention is {ratio:.2f}x the baseline (target "
                          f"{TARGET}x)")
    finally:
        if load is not None:
            load.stop()
        if server is not None:
            stop(server)
        drop_database(args.pg_admin_url, name)
    for f in failed:
        print(f"FAILED: {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
