"""Agent transfers end to end, timed: API request → Twilio redirect → flow → back.

    .venv/bin/python benchmarks/transfers.py [--transfers 200] [--agents 8]

Serves the IVR over real HTTP (werkzeug's threaded server, in this process) with the real
twilio client pointed at the local fake Twilio of the tests (tests/fake_twilio.py). Each
agent thread runs whole transfers: POST /api/transfers, Twilio's fetch of the transfer
URL (signed), the caller's key 1, GET /api/transfers/<id>. Then every request is sent
again with its Idempotency-Key. Prints p50/p95/max per step and transfers per second, and
checks that "Twilio" saw exactly one redirect per transfer and every transfer returned.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from benchmarks.scratch_db import scratch_database  # noqa: E402
from ivr import create_app  # noqa: E402
from ivr.adapters.simulate import Caller, http_transport, parse_twiml  # noqa: E402
from ivr.services import anchoring, audit_sequencer  # noqa: E402
from ivr.services.accounts import add_user  # noqa: E402
from ivr.storage.db import database  # noqa: E402
from ivr.web.current import session  # noqa: E402
from tests.support.fake_twilio import FakeTwilio  # noqa: E402

AUTH_TOKEN = "bench-auth-token-" + secrets.token_hex(8)
ACCOUNT = "AC" + "7" * 32
STEPS = ("POST /api/transfers", "Twilio fetches /voice/transfer", "key 1 (decide, return)",
         "GET /api/transfers/<id>", "retry POST (replay)")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(n: int, agents: int) -> None:  # noqa: C901 - the benchmark's steps in the order they run
    tmp = tempfile.TemporaryDirectory()
    scratch = ExitStack()
    url = scratch.enter_context(scratch_database())
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=AUTH_TOKEN).start()
    server = make_server("127.0.0.1", 0, None, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app = create_app({
        "DATABASE_URL": url, "INSTANCE_DIR": f"{tmp.name}/instance",
        "AUDIO_DIR": f"{tmp.name}/audio", "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_API_URL": fake.url, "PUBLIC_URL": base,
        "RATELIMIT_ENABLED": False, "LOG_LEVEL": "ERROR"})
    database(app).create_all()
    for name in ("werkzeug", "twilio.http_client", "ivr"):  # per-request lines, not figures
        logging.getLogger(name).setLevel(logging.ERROR)
    server.app = app
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tokens = []
    with app.app_context():
        s = session()
        with s.begin():
            for i in range(agents):
                tokens.append(add_user(s, f"agent{i}", "agent")[1])

    times: dict[str, list[float]] = {k: [] for k in STEPS}
    done: list[tuple[str, str, dict, str]] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def agent(token: str) -> None:
        http = requests.Session()
        headers = {"Authorization": f"Bearer {token}"}
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            caller = Caller(base, AUTH_TOKEN, http_transport(), account_sid=ACCOUNT)
            fake.calls[caller.call_sid] = "in-progress"
            key = f"bench-{i}"
            body = {"call_sid": caller.call_sid, "return_to": {"type": "queue", "name": "q"}}
            t0 = time.perf_counter()
            r = http.post(f"{base}/api/transfers", json=body, timeout=30,
                          headers={**headers, "Idempotency-Key": key})
            t1 = time.perf_counter()
            if r.status_code != 201:
                errors.append(f"POST {r.status_code} {r.text[:100]}")
                continue
            tid = r.json()["id"]
            url = f"{base}/voice/transfer?transfer={tid}"
            reply = caller.signed_post(url, caller.params())
            t2 = time.perf_counter()
            last = caller.press(parse_twiml(url, reply.body), "1")
            t3 = time.perf_counter()
            status = http.get(f"{base}/api/transfers/{tid}", headers=headers, timeout=30).json()
            t4 = time.perf_counter()
            if last.end != "enqueue:q" or status["status"] != "returned":
                errors.append(f"transfer {tid}: {last.end} {status['status']}")
            with lock:
                for step, dt in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=False):
                    times[step].append(dt)
                done.append((key, tid, body, token))

    started = time.perf_counter()
    threads = [threading.Thread(target=agent, args=(tokens[i],)) for i in range(agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started

    for key, tid, body, token in done:  # every retry must replay, never redirect again
        t0 = time.perf_counter()
        r = requests.post(f"{base}/api/transfers", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})
        times[STEPS[4]].append(time.perf_counter() - t0)
        if r.status_code != 201 or r.json()["id"] != tid:
            errors.append(f"retry {key}: {r.status_code}")
    redirects = len(fake.updates())

    print(f"\n{len(done)} transfers by {agents} agents in {elapsed:.1f} s "
          f"= {len(done) / elapsed:.1f} whole transfers/s (each: 4 HTTP requests to the IVR "
          "+ 1 to Twilio)")
    print(f"  {'step':34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for step in STEPS:
        v = times[step]
        if v:
            print(f"  {step:34} {statistics.median(v) * 1000:8.1f} {pct(v, 95) * 1000:8.1f} "
                  f"{max(v) * 1000:8.1f}")
    print(f"  redirects Twilio saw: {redirects} for {len(done)} transfers and "
          f"{len(done)} retries; errors: {len(errors)}")
    for e in errors[:5]:
        print("   ", e)

    server.shutdown()
    fake.stop()
    # The app's background threads go before its scratch schema does (no UndefinedTable).
    audit_sequencer.stop_thread(app)
    anchoring.stop_thread(app)
    database(app).engine.dispose()
    scratch.close()
    tmp.cleanup()
    if errors or redirects != len(done):
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=200)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run for tests/integration/test_benchmark_smokes.py: "
                             "non-zero on a fault; its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.transfers, args.agents = 4, 2
    run(args.transfers, args.agents)


if __name__ == "__main__":
    main()
