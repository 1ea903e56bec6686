"""How fast the Merkle audit log integrates, verifies and proves, and that verify's memory
stays flat.

    .venv/bin/python benchmarks/audit_verify.py [--entries 1000000] [--queue 100000]

Fills a fresh database (a new schema on the test PostgreSQL, dropped afterwards) with N
leaves shaped like the app's (four per call), their stored tree nodes and one signed
checkpoint, inserted in bulk; then, each in a fresh process:
queues Q more leaves and times one sequencer pass (leaves/s integrated); times `audit verify`
over the whole log (leaves/s, peak RSS); and times `audit prove` of one call (median of 20).
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


def fill(url: str, instance: str, n: int) -> None:
    """Create the schema; insert n leaves, their tree nodes and one signed checkpoint."""
    from ivr.audit import merkle
    from ivr.domain.times import utcnow
    from ivr.services import audit_keys, audit_sequencer
    from ivr.web.current import database

    app = make_app(url, instance)
    db = database(app)
    db.create_all()
    t0 = time.perf_counter()
    compact = merkle.CompactRange()
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        # The insert guard checks each row against the head; the verifier below checks
        # every row anyway.
        cur.execute("SET session_replication_role = replica")
        log_rows, node_rows = [], []
        for i, (kind, ref, body) in enumerate(leaves(0, n)):
            h = merkle.leaf_hash(body.encode())
            log_rows.append((i + 1, body, kind, ref))
            node_rows.append((0, i, h))
            compact.append(h, lambda lv, idx, hh, out=node_rows: out.append((lv, idx, hh)))
            if len(log_rows) == BATCH or i == n - 1:
                _insert(cur, log_rows, node_rows)
                log_rows, node_rows = [], []
        raw.commit()
    finally:
        raw.close()
    with app.app_context(), db.engine.begin() as conn:
        audit_sequencer.sign_checkpoint(conn, app, audit_keys.signing_key(app), n, compact.root(),
                                        utcnow())
    print(f"filled {n} leaves in {time.perf_counter() - t0:.1f} s", flush=True)
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
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--queue", type=int, default=100_000)
    ap.add_argument("--_step", help=argparse.SUPPRESS)
    ap.add_argument("--_url", help=argparse.SUPPRESS)
    ap.add_argument("--_instance", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._step:
        n, q, url, inst = args.entries, args.queue, args._url, args._instance
        out = {"fill": lambda: fill(url, inst, n), "integrate": lambda: integrate(url, inst, n, q),
               "verify": lambda: verify(url, inst), "prove": lambda: prove(url, inst, n + q)}
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
              str(args.queue), "--_url", url, "--_instance", tmp]

        def step(name):
            out = subprocess.run([*me, "--_step", name], env=env, check=True,
                                 capture_output=True, text=True)
            return json.loads(out.stdout.splitlines()[-1]) if name != "fill" else out.stdout

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
