"""Load: N concurrent callers (default 200) through gunicorn (4 workers) and PostgreSQL.

    .venv/bin/python benchmarks/load_calls.py [--callers 200] [--calls-per-caller 3]

Each caller places whole consent calls with random behaviour — consent, decline, repeat then
consent, an invalid key then consent, three invalid keys, three silences, English, a hang-up
during the notice or at the question — signed exactly as Twilio signs, and ends each call
with the `completed` status callback (sometimes twice: Twilio may deliver it twice). Prints
calls completed, errors (must be 0), p50/p99 latency per webhook path, consents stored
against the decisions made, and runs `python -m ivr audit verify` on the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime
from email.utils import format_datetime
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

PATHS = ("/voice/incoming", "/voice/gather", "/voice/status")
# keys pressed at each <Gather> ('t' = silence, 'h' = hang up) and the decision they make
SCENARIOS = [
    (["1"], "granted"), (["2"], "declined"), (["9", "1"], "granted"),
    (["5", "1"], "granted"), (["5", "7", "8"], "no_input"), (["t", "t", "t"], "no_input"),
    (["0", "1"], "granted"), (["h"], None), (["5", "h"], None), (["t", "2"], "declined"),
]


class CallFailed(Exception):
    """One call went wrong."""


async def post(http, validator, url: str, data: dict, path: str, lat: dict, expect: int) -> str:
    headers = {"X-Twilio-Signature": validator.compute_signature(url, data),
               "I-Twilio-Idempotency-Token": secrets.token_hex(16)}
    began = time.perf_counter()
    try:
        async with http.post(url, data=data, headers=headers, allow_redirects=False) as r:
            body, status = await r.text(), r.status
    except Exception as e:  # any transport failure is one counted error
        raise CallFailed(f"{path} {type(e).__name__}") from None
    lat.setdefault(path, []).append(time.perf_counter() - began)
    if status != expect:
        raise CallFailed(f"{path} HTTP {status}")
    return body


def gather_action(body: str) -> str | None:
    root = ET.fromstring(body)  # TwiML from the server under test
    if root.tag != "Response":
        raise CallFailed("not TwiML")
    g = root.find("Gather")
    return g.get("action") if g is not None else None


async def one_call(http, validator, base: str, rng: random.Random, lat: dict) -> str | None:
    keys, decision = rng.choice(SCENARIOS)
    params = {"CallSid": "CA" + secrets.token_hex(16), "AccountSid": "AC" + "0" * 32,
              "From": "+90532" + "".join(rng.choice("0123456789") for _ in range(7)),
              "To": "+902122223344", "CallStatus": "ringing", "ApiVersion": "2010-04-01",
              "Direction": "inbound"}
    body = await post(http, validator, base + "/voice/incoming", params, PATHS[0], lat, 200)
    action = gather_action(body)
    params["CallStatus"] = "in-progress"
    for key in keys:
        if key == "h" or action is None:
            break
        body = await post(http, validator, action, {**params, "Digits": "" if key == "t"
                                                    else key}, PATHS[1], lat, 200)
        action = gather_action(body)
    if decision and action is not None:
        raise CallFailed(f"no decision after {keys}")
    done = {**params, "CallStatus": "completed", "SequenceNumber": "1", "CallDuration": "30",
            "Timestamp": format_datetime(datetime.now(UTC), usegmt=True),
            "CallbackSource": "call-progress-events"}
    for _ in range(2 if rng.random() < 0.2 else 1):  # Twilio may deliver a callback twice
        await post(http, validator, base + "/voice/status", done, PATHS[2], lat, 200)
    return decision


async def drive(base: str, auth_token: str, callers: int, per_caller: int, seed: int) -> dict:
    import aiohttp
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(auth_token)
    lat: dict = {}
    decisions: Counter = Counter()
    errors: Counter = Counter()
    completed = 0

    async def caller(i: int):
        nonlocal completed
        rng = random.Random(seed * 100003 + i)
        for _ in range(per_caller):
            try:
                decision = await one_call(http, validator, base, rng, lat)
            except (CallFailed, ET.ParseError) as e:
                errors[str(e)] += 1
                continue
            completed += 1
            decisions[decision or "none"] += 1

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=15.0)  # Twilio's ceiling
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(caller(i) for i in range(callers)))
    return {"seconds": time.perf_counter() - started, "latency": lat, "completed": completed,
            "decisions": decisions, "errors": errors}


def stored_decisions(url: str) -> Counter:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT decision, count(*) FROM consents GROUP BY decision"))
        out = Counter({d: n for d, n in rows})
    engine.dispose()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--callers", type=int, default=200, help="concurrent callers (default 200)")
    p.add_argument("--calls-per-caller", type=int, default=3)
    p.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pg-admin-url", default=os.environ.get(
        "IVR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--smoke", action="store_true",
                   help="a tiny run for the tests (tests/integration/test_benchmark_smokes.py): "
                        "non-zero on a fault; its figures mean nothing")
    args = p.parse_args(argv)
    if args.smoke:
        args.callers, args.calls_per_caller, args.workers = 4, 1, 1
    from cryptography.fernet import Fernet

    name = f"ivr_load_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(args.pg_admin_url, name)
    workdir = Path(tempfile.mkdtemp(prefix="ivr-load-"))
    auth_token = secrets.token_hex(16)
    port = free_port()
    env = {"IVR_DATABASE_URL": url, "TWILIO_AUTH_TOKEN": auth_token,
           "IVR_INSTANCE_DIR": str(workdir / "instance"), "IVR_PUBLIC_URL":
           f"http://127.0.0.1:{port}", "IVR_SECRET_KEY": secrets.token_hex(32),
           "IVR_PII_KEY": Fernet.generate_key().decode(), "IVR_HMAC_KEY": secrets.token_hex(32),
           "IVR_LOG_LEVEL": "WARNING"}
    server = None
    try:
        done = subprocess.run([sys.executable, "-m", "ivr", "db", "upgrade"], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"db upgrade failed:\n{done.stdout}{done.stderr}")
        server = start_gunicorn("wsgi:app", env, port, args, workdir / "ivr.log")
        print(f"{args.callers} concurrent callers x {args.calls_per_caller} calls, gunicorn "
              f"{args.workers} workers, PostgreSQL database {name}", flush=True)
        r = asyncio.run(drive(f"http://127.0.0.1:{port}", auth_token, args.callers,
                              args.calls_per_caller, args.seed))
    finally:
        if server is not None:
            stop(server)
    try:
        total = args.callers * args.calls_per_caller
        n_req = sum(len(v) for v in r["latency"].values())
        print(f"calls completed: {r['completed']} of {total} in {r['seconds']:.1f} s "
              f"({r['completed'] / r['seconds']:.1f} calls/s, {n_req / r['seconds']:.1f} "
              f"webhooks/s)")
        errs = sum(r["errors"].values())
        print(f"errors: {errs}" + (f"  {dict(r['errors'])}" if errs else ""))
        for path in PATHS:
            xs = r["latency"].get(path, [])
            print(f"  {path:<16} n={len(xs):<6} p50 {pct(xs, .5):7.1f} ms   "
                  f"p99 {pct(xs, .99):7.1f} ms   max {pct(xs, 1):7.1f} ms")
        made = Counter({k: v for k, v in r["decisions"].items() if k != "none"})
        stored = stored_decisions(url)
        print(f"decisions made:  {dict(sorted(made.items()))} (+{r['decisions']['none']} "
              "hang-ups, no consent)")
        print(f"consents stored: {dict(sorted(stored.items()))}  "
              + ("OK" if stored == made else "MISMATCH"))
        verify = subprocess.run([sys.executable, "-m", "ivr", "audit", "verify"], cwd=ROOT,
                                env={**os.environ, **env}, capture_output=True, text=True)
        print(f"audit verify (exit {verify.returncode}): {verify.stdout.strip()}"
              f"{verify.stderr.strip()}")
        ok = errs == 0 and stored == made and verify.returncode == 0
        return 0 if ok else 1
    finally:
        drop_database(args.pg_admin_url, name)


if __name__ == "__main__":
    sys.exit(main())
