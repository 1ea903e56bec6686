"""How fast the Merkle audit log integrates, verifies and proves, and that verify's memory
stays flat.

    .venv/bin/python benchmarks/audit_verify.py [--entries 1000000] [--queue 100000]

Fills a fresh database (a new schema on the test PostgreSQL, dropped afterwards) with N
leaves shaped like the app's (four per call), their stored tree nodes and one signed
checkpoint, inserted in bulk; then, each in a fresh process:
queues Q more leaves and times one sequencer pass (leaves/s integrated); times `audit verify`
over the whole log (leaves/s, peak RSS); and times `audit prove` of one call (median of 20).

    .venv/bin/python benchmarks/audit_verify.py --from-checkpoint [--entries 250000]
        [--calls 10000] [--leaves-per-call 10] [--checkpoints 1440]

The nightly check: N leaves under signed checkpoint #1 (the log so far, verified the night
before), then a day of C calls (C x L leaves) signed by K checkpoints through the day, as
the sequencer signs one a minute while the tree grows. Times `audit verify
--from-checkpoint 1` (the command, in a fresh process; target < 1 s for a day of 10,000
calls) and the full `audit verify` over the same log, for comparison.

`--smoke` runs either mode at a tiny size (a test runs it, so the script cannot rot).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scratch_db import scratch_database  # noqa: E402

BATCH = 20_000
AT = "2026-01-01T10:00:00.000000Z"

# Leaf data shaped like the app's entries; each call gets these four leaves.
TEMPLATES = [
    ("input.received", {"call_sid": "", "run": "", "step": 1,
                        "input": {"type": "digits", "digits": "1"}}),
    ("prompts.played", {"call_sid": "", "run": "", "step": 1, "actions": ["hangup"],
                        "played": [{"prompt": "confirm_granted", "language": "tr",
                                    "audio": "ab" * 32},
                                   {"prompt": "goodbye", "language": "tr", "audio": "cd" * 32}]}),
    ("notice.played", {"call_sid": "", "run": "", "step": 0, "language": "tr",
                       "prompts": ["notice_intro"], "audio": ["ef" * 32],
                       "notice_version": "12" * 32}),
    ("call.status", {"call_sid": "", "status": "completed", "sequence_number": 3,
                     "timestamp": "2026-01-01T10:00:00.000000Z", "duration": 42,
                     "applied": True}),
]


def sid(call: int) -> str:
    """The CallSid of benchmark call number `call`."""
    return f"CA{call:032x}"


def leaves(start: int, n: int):
    """(kind, ref, body) of leaves start..start+n-1."""
    from ivr.audit.leaves import leaf_body

    for i in range(start, start + n):
        kind, data = TEMPLATES[i % 4]
        ref = sid(i // 4)
        yield kind, ref, leaf_body(kind, ref, {**data, "call_sid": ref, "run": ref[2:]},
                                   AT).decode()


def make_app(url: str, instance: str):
    from ivr import create_app

    return create_app({"DATABASE_URL": url, "INSTANCE_DIR": instance, "AUDIT_SEQUENCER": "off",
                       "PUBLIC_URL": "https://ivr.bench", "AUDIT_SIGNING_KEY":
                       os.environ["BENCH_SIGNING_KEY"]})


def fill(url: str, instance: str, n: int, day: int = 0, checkpoints: int = 0) -> None:
    """Create the schema; insert n leaves, their tree nodes and one signed checkpoint; then
    `day` more leaves with `checkpoints` checkpoints signed evenly among them."""
    from ivr.audit import merkle
    from ivr.domain.times import utcnow
    from ivr.services import audit_keys, audit_sequencer
    from ivr.web.current import database

    app = make_app(url, instance)
    db = database(app)
    db.create_all()
    t0 = time.perf_counter()
    compact = merkle.CompactRange()
    total = n + day
    marks = {n} | {n + day * (k + 1) // checkpoints for k in range(checkpoints)} \
        if day and checkpoints else {n}
    key = audit_keys.signing_key(app.config)
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        # The insert guard checks each row against the head; the verifier below checks
        # every row anyway.
        cur.execute("SET session_replication_role = replica")
        log_rows, node_rows = [], []
        for i, (kind, ref, body) in enumerate(leaves(0, total)):
            h = merkle.leaf_hash(body.encode())
            log_rows.append((i + 1, body, kind, ref))
            node_rows.append((0, i, h))
            compact.append(h, lambda lv, idx, hh, out=node_rows: out.append((lv, idx, hh)))
            if len(log_rows) == BATCH or i + 1 in marks or i == total - 1:
                _insert(cur, log_rows, node_rows)
                log_rows, node_rows = [], []
            if i + 1 in marks:
                raw.commit()
                with app.app_context(), db.engine.begin() as conn:
                    audit_sequencer.sign_checkpoint(conn, app, key, i + 1, compact.root(),
                                                    utcnow())
        raw.commit()
    finally:
        raw.close()
    print(f"filled {total} leaves ({len(marks)} checkpoints) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    db.engine.dispose()


def _insert(cur, log_rows, node_rows) -> None:
    with cur.copy("COPY audit_log (seq, body, kind, ref) FROM STDIN") as copy:
        for r in log_rows:
            copy.write_row(r)
    with cur.copy("COPY audit_tree (level, idx, hash) FROM STDIN") as copy:
        for r in node_rows:
            copy.write_row(r)


def integrate(url: str, instance: str, n: int, q: int) -> dict:
    """Queue q leaves after the n stored ones, then time one sequencer pass over them."""
    from sqlalchemy import insert

    from ivr.domain.times import utcnow
    from ivr.services import audit_sequencer
    from ivr.storage.models import AuditQueue
    from ivr.web.current import database

    app = make_app(url, instance)
    db = database(app)
    now = utcnow()
    with db.engine.begin() as conn:
        batch = []
        for kind, ref, body in leaves(n, q):
            batch.append({"kind": kind, "ref": ref, "body": body, "queued_at": now})
            if len(batch) == BATCH:
                conn.execute(insert(AuditQueue), batch)
                batch = []
        if batch:
            conn.execute(insert(AuditQueue), batch)
    with app.app_context():
        t0 = time.perf_counter()
        result = audit_sequencer.run_pass(app, force_checkpoint=True)
        seconds = time.perf_counter() - t0
    db.engine.dispose()
    return {"integrated": result.integrated, "seconds": round(seconds, 2),
            "leaves_per_s": round(result.integrated / seconds)}


def verify(url: str, instance: str) -> dict:
    """Time `audit verify` over the whole log; report speed and this process's memory."""
    from ivr.services.audit_verify import verify_log
    from ivr.web.current import database

    app = make_app(url, instance)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with app.app_context(), database(app).sessionmaker() as s:
        t0 = time.perf_counter()
        summary = verify_log(s)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    database(app).engine.dispose()
    return {"entries": summary.entries, "seconds": round(seconds, 2),
            "entries_per_s": round(summary.entries / seconds),
            "peak_rss_mb_before": round(rss_before / 1024, 1),
            "peak_rss_mb": round(peak / 1024, 1), "line": summary.line()}


def verify_command(url: str, instance: str, *args: str) -> dict:
    """Time the `audit verify` command itself (ARGS added), its app already built."""
    from ivr.cli.main import cli

    app = make_app(url, instance)
    runner = app.test_cli_runner()
    t0 = time.perf_counter()
    result = runner.invoke(cli, ["audit", "verify", "--json", *args])
    seconds = time.perf_counter() - t0
    if result.exit_code != 0:
        raise SystemExit(f"audit verify {' '.join(args)} failed: {result.output}")
    return {"seconds": round(seconds, 3), **json.loads(result.output)}


def prove(url: str, instance: str, n: int) -> dict:
    """The median time of `audit prove` for one call near the end of the log."""
    from ivr.audit.proofs import check_proof_document
    from ivr.storage.audit_tree import prove_call
    from ivr.web.current import database

    app = make_app(url, instance)
    call = sid(n // 4 - 2)
    times = []
    with app.app_context():
        for _ in range(20):
            with database(app).sessionmaker() as s:
                t0 = time.perf_counter()
                doc = prove_call(s, call)
                times.append(time.perf_counter() - t0)
    check_proof_document(doc)
    database(app).engine.dispose()
    return {"call": call, "leaves": len(doc["leaves"]), "tree_size": doc["tree_size"],
            "median_ms": round(1000 * statistics.median(times), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=None,
                    help="leaves already in the log (default 1,000,000; 250,000 with "
                         "--from-checkpoint)")
    ap.add_argument("--queue", type=int, default=100_000)
    ap.add_argument("--from-checkpoint", action="store_true",
                    help="time the nightly `audit verify --from-checkpoint` after a day")
    ap.add_argument("--calls", type=int, default=10_000, help="the day's calls")
    ap.add_argument("--leaves-per-call", type=int, default=10,
                    help="leaves a call adds (load_calls.py stores about 9.7)")
    ap.add_argument("--checkpoints", type=int, default=1440,
                    help="checkpoints signed through the day (one a minute)")
    ap.add_argument("--smoke", action="store_true", help="a tiny run, for the tests")
    ap.add_argument("--_step", help=argparse.SUPPRESS)
    ap.add_argument("--_url", help=argparse.SUPPRESS)
    ap.add_argument("--_instance", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.entries is None:
        args.entries = 250_000 if args.from_checkpoint else 1_000_000
    if args.smoke:
        args.entries, args.queue, args.calls, args.checkpoints = 2_000, 500, 60, 12
    day = args.calls * args.leaves_per_call
    if args._step:
        n, q, url, inst = args.entries, args.queue, args._url, args._instance
        out = {"fill": lambda: fill(url, inst, n), "integrate": lambda: integrate(url, inst, n, q),
               "verify": lambda: verify(url, inst), "prove": lambda: prove(url, inst, n + q),
               "fill_day": lambda: fill(url, inst, n, day, args.checkpoints),
               "verify_from": lambda: verify_command(url, inst, "--from-checkpoint", "1"),
               "verify_full": lambda: verify_command(url, inst)}
        r = out[args._step]()
        if r is not None:
            print(json.dumps(r))
        return

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ivr.audit.checkpoint import private_key_pem

    env = {**os.environ, "BENCH_SIGNING_KEY": private_key_pem(Ed25519PrivateKey.generate())}
    with tempfile.TemporaryDirectory() as tmp, \
            scratch_database() as url:
        me = [sys.executable, __file__, "--entries", str(args.entries), "--queue",
              str(args.queue), "--calls", str(args.calls), "--leaves-per-call",
              str(args.leaves_per_call), "--checkpoints", str(args.checkpoints),
              "--_url", url, "--_instance", tmp]

        def step(name):
            out = subprocess.run([*me, "--_step", name], env=env, check=True,
                                 capture_output=True, text=True)
            return json.loads(out.stdout.splitlines()[-1]) if not name.startswith("fill") \
                else out.stdout

        if args.from_checkpoint:
            print(step("fill_day").strip())
            inc, full = step("verify_from"), step("verify_full")
            print(f"postgresql: audit verify --from-checkpoint 1 (tree size "
                  f"{inc['from_size']:,}): {inc['leaves_checked']:,} new leaves "
                  f"({args.calls:,} calls), {inc['tree_checkpoints']} checkpoints, in "
                  f"{inc['seconds']} s; next run: --from-checkpoint {inc['latest_checkpoint']}")
            print(f"postgresql: full audit verify ({full['entries']:,} leaves, "
                  f"{full['tree_checkpoints']} checkpoints): {full['seconds']} s")
            if inc["root_hash"] != full["root_hash"]:
                raise SystemExit("the two runs recomputed different roots")
            return
        print(step("fill").strip())
        i, v, p = step("integrate"), step("verify"), step("prove")
        backend = "postgresql"
        print(v["line"])
        print(f"{backend}: sequencer integrated {i['integrated']:,} queued leaves in "
              f"{i['seconds']} s = {i['leaves_per_s']:,} leaves/s")
        print(f"{backend}: verified {v['entries']:,} leaves in {v['seconds']} s = "
              f"{v['entries_per_s']:,} leaves/s; peak RSS {v['peak_rss_mb']} MB (after "
              f"imports, before verifying: {v['peak_rss_mb_before']} MB)")
        print(f"{backend}: prove {p['call']} ({p['leaves']} leaves, tree of "
              f"{p['tree_size']:,}): median {p['median_ms']} ms")


if __name__ == "__main__":
    main()
