"""How fast `audit verify` streams the chain, and that its memory stays flat.

    .venv/bin/python benchmarks/audit_verify.py [--entries 1000000] [--pg] [--keep PATH]

Fills a fresh database (a SQLite file by default; with --pg a new schema on the test
PostgreSQL, dropped afterwards) with N real chain entries - canonical bodies shaped like the
app's, real SHA-256 links - inserted in bulk (executemany on SQLite, COPY on PostgreSQL), adds
a signed checkpoint, then times `verify_chain` in a fresh process and prints entries/s,
seconds and the verifier's peak RSS. The fill runs in a separate process so the peak RSS is
the verifier's own; run with two sizes to see it does not grow with N.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scratch_db import scratch_database  # noqa: E402

BATCH = 20_000

# Bodies shaped like the app's entries (canonical JSON, keys at, data, kind, ref, seq).
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


def _templates():
    """(kind, ref, body prefix up to `"seq":`) per template; only the seq varies."""
    import rfc8785

    out = []
    for i, (kind, data) in enumerate(TEMPLATES):
        sid = f"CA{i:032x}"
        data = {**data, "call_sid": sid, "run": f"{i:032x}"}
        body = rfc8785.dumps({"at": "2026-01-01T10:00:00.000000Z", "data": data, "kind": kind,
                              "ref": sid, "seq": 0}).decode()
        assert body.endswith('"seq":0}')
        out.append((kind, sid, body[:-2]))
    return out


def _rows(n: int):
    """The chain, computed for real, in batches of (seq, prev_hash, body, hash, kind, ref)."""
    from ivr.audit.chain import ENTRY_PREFIX, FIRST_PREV

    tpl = _templates()
    prev, batch = FIRST_PREV, []
    sha = hashlib.sha256
    for seq in range(1, n + 1):
        kind, ref, head = tpl[seq % len(tpl)]
        body = f"{head}{seq}}}"
        h = sha(ENTRY_PREFIX + bytes.fromhex(prev) + body.encode()).hexdigest()
        batch.append((seq, prev, body, h, kind, ref))
        prev = h
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def fill(url: str, n: int) -> None:
    """Create the schema and insert n entries plus one signed checkpoint."""
    from sqlalchemy.orm import Session

    from ivr.audit import checkpoint as cps
    from ivr.storage.db import Database

    db = Database(url)
    db.create_all()
    t0 = time.perf_counter()
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        if db.engine.dialect.name == "postgresql":
            # The insert guard checks each row against the head; a bulk load of rows computed
            # above may skip it (the verifier below checks every one of them anyway).
            cur.execute("SET session_replication_role = replica")
            with cur.copy("COPY audit_log (seq, prev_hash, body, hash, kind, ref) "
                          "FROM STDIN") as copy:
                for batch in _rows(n):
                    for row in batch:
                        copy.write_row(row)
        else:
            cur.execute("BEGIN")
            for batch in _rows(n):
                cur.executemany("INSERT INTO audit_log (seq, prev_hash, body, hash, kind, ref) "
                                "VALUES (?, ?, ?, ?, ?, ?)", batch)
        raw.commit() if db.engine.dialect.name == "postgresql" else cur.execute("COMMIT")
    finally:
        raw.close()
    key = cps.load_private_key(os.environ["BENCH_SIGNING_KEY"])
    with Session(db.engine) as s, s.begin():
        cps.make_checkpoint(s, key)
    print(f"filled {n} entries in {time.perf_counter() - t0:.1f} s", flush=True)
    db.engine.dispose()


def verify(url: str) -> dict:
    """Time verify_chain over the whole log; report speed and this process's memory."""
    from sqlalchemy.orm import Session

    from ivr.audit import checkpoint as cps
    from ivr.audit.verify import verify_chain
    from ivr.storage.db import Database

    keys = cps.public_keys(cps.load_private_key(os.environ["BENCH_SIGNING_KEY"]))
    db = Database(url)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Session(db.engine) as s:
        t0 = time.perf_counter()
        summary = verify_chain(s, public_keys=keys)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    db.engine.dispose()
    return {"entries": summary.entries, "checkpoints": summary.checkpoints,
            "seconds": round(seconds, 2), "entries_per_s": round(summary.entries / seconds),
            "peak_rss_mb_before": round(rss_before / 1024, 1),
            "peak_rss_mb": round(peak / 1024, 1), "line": summary.line()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--pg", action="store_true", help="PostgreSQL instead of a SQLite file")
    ap.add_argument("--keep", default=None, help="SQLite file to fill (kept afterwards)")
    ap.add_argument("--_fill", help=argparse.SUPPRESS)
    ap.add_argument("--_verify", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._fill:
        fill(args._fill, args.entries)
        return
    if args._verify:
        print(json.dumps(verify(args._verify)))
        return

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ivr.audit.checkpoint import private_key_pem

    env = {**os.environ, "BENCH_SIGNING_KEY": private_key_pem(Ed25519PrivateKey.generate())}
    tmp = tempfile.TemporaryDirectory()
    path = Path(args.keep) if args.keep else Path(tmp.name) / "audit.db"
    if not args.pg and path.exists():
        path.unlink()
    with scratch_database(args.pg, path) as url, tmp:
        me = [sys.executable, __file__, "--entries", str(args.entries)]
        subprocess.run([*me, "--_fill", url], env=env, check=True)
        out = subprocess.run([*me, "--_verify", url], env=env, check=True,
                             capture_output=True, text=True)
        r = json.loads(out.stdout)
        backend = "postgresql" if args.pg else "sqlite"
        print(r["line"])
        print(f"{backend}: verified {r['entries']} entries and {r['checkpoints']} checkpoints "
              f"in {r['seconds']} s = {r['entries_per_s']:,} entries/s; peak RSS "
              f"{r['peak_rss_mb']} MB (after imports, before verifying: "
              f"{r['peak_rss_mb_before']} MB)")
        print("target: 1,000,000 entries in < 10 s -> "
              + ("MET" if r["seconds"] < 10 * r["entries"] / 1_000_000 else "NOT MET"))


if __name__ == "__main__":
    main()
