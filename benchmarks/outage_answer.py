"""How long a caller waits for TwiML when PostgreSQL goes away (target: under 2 s).

    .venv/bin/python benchmarks/outage_answer.py [--calls 10] [--workers 2]

Serves `wsgi:app` under gunicorn with its PostgreSQL connection going through a TCP proxy
this script controls, and places whole consent calls (incoming -> key 1 -> completed)
while the database is up, refused (every connection dropped, new ones refused), frozen
(connections stay open and nothing answers: a partition or a hung server) and back again.
Prints the time to each answer per phase, checks that every answer was valid TwiML with
the caller's confirmation, and at the end that every consent is stored once and the audit
chain verifies.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from consent_calls import (  # noqa: E402 - after the path set-up
    create_database,
    drop_database,
    free_port,
    pct,
    start_gunicorn,
    stop,
)
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from ivr.adapters.simulate import Caller, http_transport, manifest_texts  # noqa: E402
from ivr.domain.flow import load_flow  # noqa: E402
from tests.support.tcp_proxy import TcpProxy  # noqa: E402

CONFIRM = load_flow(ROOT / "flows" / "consent.yaml").text("confirm_granted", "tr")
TEXTS = manifest_texts(os.environ.get("IVR_AUDIO_DIR", ROOT / "audio"))


def place_calls(base: str, token: str, n: int) -> tuple[list[float], int]:
    """n consent calls, one after the other; the seconds each webhook took, and failures."""
    waits, bad = [], 0
    for _ in range(n):
        c = Caller(base, token, http_transport(), audio_texts=TEXTS)
        try:
            began = time.perf_counter()
            first = c.dial()
            waits.append(time.perf_counter() - began)
            began = time.perf_counter()
            turn = c.press(first, "1")
            waits.append(time.perf_counter() - began)
            began = time.perf_counter()
            ended = c.hang_up()
            waits.append(time.perf_counter() - began)
            ok = CONFIRM in [h.text for h in turn.heard] and ended.status == 200
        except Exception as e:  # any failure is counted and shown
            print(f"  call failed: {type(e).__name__}: {e}")
            ok = False
        bad += not ok
    return waits, bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=10, help="calls per phase (default 10)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--pg-admin-url", default=os.environ.get(
        "IVR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--smoke", action="store_true",
                   help="a tiny run for the tests (tests/integration/test_benchmark_smokes.py): "
                        "non-zero on a fault; its figures mean nothing")
    args = p.parse_args(argv)
    if args.smoke:
        args.calls, args.workers = 2, 1
    from cryptography.fernet import Fernet

    name = f"ivr_outage_{os.getpid()}_{secrets.token_hex(3)}"
    server = make_url(args.pg_admin_url)
    # host:port, or the socket directory and port of a server on a unix socket (embedded)
    host = server.host or str(server.query.get("host") or "")
    port = server.port or int(str(server.query.get("port") or 5432))
    if not host:
        raise SystemExit("outage_answer.py puts a proxy in front of PostgreSQL: give a server "
                         "(--pg-admin-url) with a host, or a socket directory in ?host=")
    url = create_database(args.pg_admin_url, name)
    proxy = TcpProxy(host, port)
    workdir = Path(tempfile.mkdtemp(prefix="ivr-outage-"))
    token, port = secrets.token_hex(16), free_port()
    base = f"http://127.0.0.1:{port}"
    proxied_url = make_url(url).difference_update_query(["host", "port"]).set(
        host="127.0.0.1", port=proxy.port)
    env = {"IVR_DATABASE_URL": proxied_url.render_as_string(hide_password=False),
           "TWILIO_AUTH_TOKEN": token, "IVR_INSTANCE_DIR": str(workdir / "instance"),
           "IVR_PUBLIC_URL": base, "IVR_SECRET_KEY": secrets.token_hex(32),
           "IVR_PII_KEY": Fernet.generate_key().decode(), "IVR_HMAC_KEY": secrets.token_hex(32),
           "IVR_LOG_LEVEL": "ERROR"}
    run_env = {**os.environ, **env}
    server, failures = None, 0
    try:
        done = subprocess.run([sys.executable, "-m", "ivr", "db", "upgrade"], cwd=ROOT,
                              env=run_env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"db upgrade failed:\n{done.stdout}{done.stderr}")
        server = start_gunicorn("wsgi:app", env, port, args, workdir / "ivr.log")
        limit = os.environ.get("IVR_DB_CONNECT_TIMEOUT", "1.2")
        print(f"gunicorn {args.workers} workers, PostgreSQL through a proxy, "
              f"IVR_DB_CONNECT_TIMEOUT={limit} s, {args.calls} calls per phase "
              "(3 webhooks each)")
        phases = [("database up", None), ("refused", proxy.cut), ("frozen", proxy.freeze),
                  ("back again", proxy.restore)]
        for label, change in phases:
            if label == "frozen":
                proxy.restore()  # connections are made again, then they stop answering
                _, bad = place_calls(base, token, 1)
                failures += bad
            if change:
                change()
            waits, bad = place_calls(base, token, args.calls)
            failures += bad
            print(f"  {label:<12} answers: {len(waits):<4} p50 {pct(waits, .5):7.1f} ms   "
                  f"max {pct(waits, 1):7.1f} ms   wrong or missing: {bad}")
    finally:
        if server is not None:
            stop(server)
        proxy.restore()
    try:
        drained = subprocess.run([sys.executable, "-m", "ivr", "spool", "drain"], cwd=ROOT,
                                 env={**run_env, "IVR_DATABASE_URL": url},
                                 capture_output=True, text=True)
        print(f"spool drain (exit {drained.returncode}): {drained.stdout.strip()}")
        engine = create_engine(url)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM consents")).scalar()
            calls = conn.execute(text("SELECT count(*) FROM calls")).scalar()
        engine.dispose()
        placed = 4 * args.calls + 1
        print(f"calls stored: {calls} of {placed}; consents stored: {stored} of {placed}  "
              + ("OK" if stored == calls == placed else "MISMATCH"))
        verify = subprocess.run([sys.executable, "-m", "ivr", "audit", "verify"], cwd=ROOT,
                                env={**run_env, "IVR_DATABASE_URL": url},
                                capture_output=True, text=True)
        print(f"audit verify (exit {verify.returncode}): {verify.stdout.strip()}"
              f"{verify.stderr.strip()}")
        ok = failures == 0 and stored == calls == placed and verify.returncode == 0
        return 0 if ok else 1
    finally:
        proxy.close()
        drop_database(args.pg_admin_url, name)


if __name__ == "__main__":
    sys.exit(main())
