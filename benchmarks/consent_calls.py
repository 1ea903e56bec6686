"""Consent calls per second through gunicorn and PostgreSQL, against a one-commit ceiling.

    .venv/bin/python benchmarks/consent_calls.py [--mix | --fresh] [--callers 64]
        [--duration 20] [--workers 4] [--rounds 1]
    .venv/bin/python benchmarks/consent_calls.py --smoke     # tiny; non-zero on any fault

Creates a fresh PostgreSQL database, serves the IVR (`wsgi:app`) and then a bare Flask app
that does one INSERT + COMMIT per request (benchmarks/bare_app.py) under the same gunicorn
settings (gunicorn.conf.py) on loopback, and drives both with the same number of concurrent
callers from separate load-generator processes (asyncio + aiohttp), every IVR request
signed exactly as Twilio signs it. `--mix` (the default) places a call center's mix
(benchmarks/call_mix.py: returning callers seeded with real calls first, withdrawals, fresh
callers, hang-ups, agent transfers through a local Twilio stand-in, Twilio retries);
`--fresh` places only new callers: incoming -> key 1 -> status `completed`. Prints
requests/s, complete calls/s, p50/p99 per path, complete calls per scenario, errors, the
CPU each party used, and the ratio of the IVR's throughput to the bare one-commit ceiling
and of their p99s; then checks the stored consents per decision against the decisions made,
the calls stored completed, and the audit log (`audit integrate --once`, `audit verify`),
and drops the database. Exits 1 on any error or mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import call_mix  # noqa: E402 - after the path set-up
from anchors import Anchors  # noqa: E402

PATHS = ("/voice/incoming", "/voice/gather", "/voice/status")
BARE_PATH = "/commit"
TWILIO_TIMEOUT = 15.0  # Twilio gives up on a webhook after 15 s
CLK = os.sysconf("SC_CLK_TCK")


# --- the load generator (runs in its own processes) --------------------------------------

def _phone() -> str:
    # The bare app's form only: it stores no consent.
    return "+90532" + "".join(secrets.choice("0123456789") for _ in range(7))


async def bare_request(d: call_mix.Driver) -> tuple[str, None]:
    """One POST to the one-commit app, with the same form a status callback carries."""
    params = {"CallSid": "CA" + secrets.token_hex(16), "AccountSid": "AC" + "0" * 32,
              "From": _phone(), "To": "+902122223344", "CallStatus": "completed",
              "ApiVersion": "2010-04-01", "Direction": "inbound", "SequenceNumber": "0"}
    await call_mix.post(d, d.base + BARE_PATH, params, BARE_PATH, 204)
    return "bare", None


async def consent_call(d: call_mix.Driver) -> tuple[str, str]:
    """--fresh: a new caller, incoming -> key 1 -> status completed."""
    return await call_mix.fresh_caller(d, "1")


UNITS = {"bare": bare_request, "fresh": consent_call, "mix": call_mix.mixed_call}


async def _seed(d: call_mix.Driver, calls: int, concurrency: int) -> float:
    """Store a decision for `calls` new numbers with real calls (before the window): the
    returning callers of the mix. Returns the seconds it took."""
    t0 = time.time()
    left = calls

    async def caller():
        nonlocal left
        while left > 0:
            left -= 1
            try:
                scenario, decision = await call_mix.seed_call(d)
            except call_mix.CallFailed as e:
                d.stats.error(f"seeding: {e}")
            else:
                d.stats.call_done(time.time(), scenario, decision)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return time.time() - t0


async def _drive(cfg: dict) -> dict:
    import random

    import aiohttp
    from twilio.request_validator import RequestValidator

    from ivr.web.voice.twiml import apology_twiml

    # Nothing counts until the start time comes (after the seeding and "ready").
    stats = call_mix.Stats(float("inf"), float("inf"))
    unit = UNITS[cfg["target"]]
    quota = cfg.get("calls")  # this generator's share of complete calls, or None
    started = 0
    cpu = {}

    async def caller():
        nonlocal started
        while time.time() < stats.end and (quota is None or started < quota):
            started += 1
            try:
                scenario, decision = await unit(d)
            except call_mix.CallFailed as e:
                stats.error(str(e))
                await asyncio.sleep(0.01)
            else:
                stats.call_done(time.time(), scenario, decision)

    async def cpu_marks():
        await asyncio.sleep(max(0.0, stats.start - time.time()))
        cpu["start"] = sum(os.times()[:2])
        await asyncio.sleep(max(0.0, stats.end - time.time()))
        cpu["end"] = sum(os.times()[:2])

    connector = aiohttp.TCPConnector(limit=0, force_close=not cfg["keepalive"])
    timeout = aiohttp.ClientTimeout(total=TWILIO_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        d = call_mix.Driver(http=http, validator=RequestValidator(cfg["auth_token"]),
                            base=cfg["base"], stats=stats, apology=apology_twiml(),
                            rng=random.Random(cfg.get("space", 0)),
                            numbers=call_mix.Numbers(cfg.get("space", 0)),
                            pool=call_mix.Pool(cfg.get("pool", {})),
                            agents=cfg.get("agents", []), twilio=cfg.get("twilio", ""))
        seeding = await _seed(d, cfg["seed"], cfg["callers"]) if cfg.get("seed") else 0.0
        print("ready", flush=True)
        cfg["start"] = float(sys.stdin.readline())
        stats.start = cfg["start"] + cfg["warmup"]
        stats.end = stats.start + cfg["duration"]
        await asyncio.sleep(max(0.0, cfg["start"] - time.time()))
        marks = asyncio.create_task(cpu_marks())
        await asyncio.gather(*(caller() for _ in range(cfg["callers"])))
        finished = time.time()
        if quota is not None:
            # Fixed number of calls: the window is the whole run.
            stats.end = finished
            marks.cancel()
            cpu = {"start": cpu.get("start", 0.0), "end": sum(os.times()[:2])}
        else:
            await marks
    return {"latency": stats.latency, "requests": stats.requests, "calls": stats.calls,
            "errors": stats.errors, "total_calls": stats.total_calls,
            "total_requests": stats.total_requests, "cpu": cpu["end"] - cpu["start"],
            "window": [stats.start, stats.end], "scenarios": dict(stats.scenarios),
            "decisions": dict(stats.decisions), "pool": d.pool.standing(),
            "pool_misses": d.pool_misses, "seeded": cfg.get("seed", 0), "seeding": seeding}


def drive_main() -> None:
    """Entry point of a load-generator process: a config JSON line on stdin; "ready" on
    stdout once everything is imported (and the seeding done); then the start time on
    stdin; the results as JSON on stdout."""
    cfg = json.loads(sys.stdin.readline())
    json.dump(asyncio.run(_drive(cfg)), sys.stdout)


# --- CPU accounting from /proc ---------------------------------------------------------

def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _postgres_pids() -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip().startswith("postgres"):
                        out.append(int(d))
            except OSError:
                pass
    return out


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    total = sum(vals[:8])
    return (total - idle) / CLK, total / CLK


def cpu_snapshot(server_pid: int) -> dict:
    """CPU seconds used so far by the server (master + workers), PostgreSQL and the machine."""
    server = [server_pid] + _children(server_pid)
    busy, _ = _machine_cpu()
    return {"server": {p: _proc_cpu(p) for p in server},
            "postgres": {p: _proc_cpu(p) for p in _postgres_pids()},
            "machine": busy}


def cpu_used(a: dict, b: dict) -> dict:
    """CPU seconds per party between two snapshots (processes that came and went count)."""
    def delta(key):
        return sum(b[key].get(p, 0.0) - a[key].get(p, 0.0) for p in b[key])
    return {"server": delta("server"), "postgres": delta("postgres"),
            "machine": b["machine"] - a["machine"]}


def wait_until_quiet(args) -> float:
    """Wait (up to --quiet-wait s) until the machine is nearly idle; returns the busy cores
    (--quiet-wait 0: neither waits nor looks)."""
    if args.quiet_wait <= 0:
        return float("nan")
    deadline = time.time() + args.quiet_wait
    while True:
        a = _machine_cpu()[0]
        time.sleep(2.0)
        busy = (_machine_cpu()[0] - a) / 2.0
        if busy <= args.quiet_cores or time.time() >= deadline:
            if busy > args.quiet_cores:
                print(f"warning: the machine is busy ({busy:.2f} cores) before this phase; "
                      "figures will be low", flush=True)
            return busy
        time.sleep(3.0)


# --- servers -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(app_spec: str, env: dict, port: int, args, log_path: Path,
                   extra: list[str] = ()) -> subprocess.Popen:
    """gunicorn with gunicorn.conf.py, bound to loopback; returns once /healthz answers."""
    env = {**os.environ, **env, "IVR_BIND": f"127.0.0.1:{port}",
           "WEB_CONCURRENCY": str(args.workers), "IVR_GUNICORN_LOG_LEVEL": "warning"}
    if args.threads:
        env["IVR_THREADS"] = str(args.threads)
    gunicorn = Path(sys.executable).parent / "gunicorn"
    log = open(log_path, "ab")  # closed with the process
    proc = subprocess.Popen([str(gunicorn), "-c", str(ROOT / "gunicorn.conf.py"), *extra,
                             app_spec], cwd=ROOT, env=env, stdout=log, stderr=log)
    proc.log = log
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            log.close()
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise SystemExit(f"gunicorn {app_spec} exited ({proc.returncode}):\n  "
                             + "\n  ".join(tail))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200 and len(_children(proc.pid)) >= args.workers:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"gunicorn {app_spec} did not answer /healthz in 60 s; see {log_path}")


def stop(proc: subprocess.Popen) -> None:
    """Stop the gunicorn we started (by its pid), gracefully then firmly."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.log.close()


class Callers:
    """What the IVR's callers carry from phase to phase: the returning callers' numbers (each
    generator gets its own share), the decisions made and calls completed (to check against
    the store), and the number spaces used so far (every number in a run is new)."""

    def __init__(self, mode: str, agents: list[str] = (), twilio: str = ""):
        self.mode, self.agents, self.twilio = mode, list(agents), twilio
        self.pool: dict[str, bool] = {}
        self.decisions: Counter = Counter()
        self.calls = 0
        self.errors: Counter = Counter()
        self.spaces = itertools.count()

    def configs(self, n: int) -> list[dict]:
        """Per-generator settings: a number space, a share of the returning callers."""
        shares: list[dict] = [{} for _ in range(n)]
        for i, (number, grant) in enumerate(self.pool.items()):
            shares[i % n][number] = grant
        return [{"space": next(self.spaces), "pool": share, "agents": self.agents,
                 "twilio": self.twilio} for share in shares]

    def absorb(self, results: list[dict]) -> None:
        """Take back the returning callers and count what the generators did."""
        self.pool = {}
        for r in results:
            self.pool.update(r["pool"])
            self.decisions.update(r["decisions"])
            self.calls += r["total_calls"]
            self.errors.update(r["errors"])


def _spawn(cfgs: list[dict], delay: float = 1.0) -> tuple[list[subprocess.Popen], float]:
    """One load-generator process per config; once all of them are ready, they start
    together `delay` s later. Returns the processes and the start time."""
    procs = []
    for cfg in cfgs:
        p = subprocess.Popen([sys.executable, __file__, "--_drive"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, cwd=ROOT)
        p.stdin.write(json.dumps(cfg).encode() + b"\n")
        p.stdin.flush()
        procs.append(p)
    for p in procs:
        if p.stdout.readline().strip() != b"ready":
            raise SystemExit(f"a load generator failed to start ({p.wait()})")
    start = time.time() + delay
    for p in procs:
        p.stdin.write(f"{start!r}\n".encode())
        p.stdin.close()
    return procs, start


def _collect(procs: list[subprocess.Popen]) -> list[dict]:
    results = []
    for p in procs:
        out = p.stdout.read()
        if p.wait() != 0:
            raise SystemExit(f"a load generator failed ({p.returncode})")
        results.append(json.loads(out))
    return results


def _shares(total: int, n: int) -> list[int]:
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def run_phase(target: str, base: str, server: subprocess.Popen, args, auth_token: str,  # noqa: C901 - one phase's steps in the order they run
              callers: Callers | None = None, seed: int = 0) -> dict:
    """Drive one server with every caller for the window; results merged over generators.
    For the IVR, `callers` says which calls (--fresh or --mix) and takes back what they
    did; first, the generators store a decision for `seed` new returning callers."""
    idle_before = wait_until_quiet(args)
    n = args.generators
    extras = callers.configs(n) if callers is not None else [{} for _ in range(n)]
    for extra, quota in zip(extras, _shares(seed, n), strict=True):
        extra["seed"] = quota
    cfgs = []
    for i, (share, extra) in enumerate(zip(_shares(args.callers, n), extras, strict=True)):
        quota = None
        if args.calls:
            # The bare app gets as many requests as fresh calls make webhooks.
            total = args.calls * (len(PATHS) if target == "bare" else 1)
            quota = total // n + (1 if i < total % n else 0)
        cfgs.append({"target": callers.mode if callers is not None else target,
                     "base": base, "callers": share,
                     "warmup": 0.0 if args.calls else args.warmup,
                     "duration": args.duration, "auth_token": auth_token, "calls": quota,
                     "keepalive": not args.no_keepalive, **extra})
    procs, start = _spawn(cfgs)
    win_start = start + (0.0 if args.calls else args.warmup)
    time.sleep(max(0.0, win_start - time.time()))
    spy = start_profiler(server.pid, args) if args.profile and target == "ivr" else None
    before = cpu_snapshot(server.pid)
    wal_before = wal_position(args.pg_admin_url)
    t0 = time.time()
    if args.calls:
        for p in procs:
            p.wait()
    else:
        time.sleep(max(0.0, win_start + args.duration - time.time()))
    after = cpu_snapshot(server.pid)
    wal_after = wal_position(args.pg_admin_url)
    elapsed = time.time() - t0
    if spy is not None:
        spy.wait()
    results = _collect(procs)
    if callers is not None:
        callers.absorb(results)
    if seed:
        errors = sum(n for r in results for k, n in r["errors"].items()
                     if k.startswith("seeding"))
        grants = sum(callers.pool.values())
        print(f"seeded {seed} returning callers with real calls before the window, in "
              f"{max(r['seeding'] for r in results):.1f} s (errors: {errors}); returning "
              f"callers now {len(callers.pool)}, {grants} holding a grant", flush=True)
    merged = {"latency": {}, "requests": 0, "calls": 0, "errors": {}, "total_calls": 0,
              "total_requests": 0, "generator_cpu": 0.0, "scenarios": Counter(),
              "pool_misses": 0}
    for r in results:
        for path, xs in r["latency"].items():
            merged["latency"].setdefault(path, []).extend(xs)
        for k, v in r["errors"].items():
            merged["errors"][k] = merged["errors"].get(k, 0) + v
        for k in ("requests", "calls", "total_calls", "total_requests", "pool_misses"):
            merged[k] += r[k]
        merged["scenarios"].update(r["scenarios"])
        merged["generator_cpu"] += r["cpu"]
    if args.calls:
        elapsed = max(r["window"][1] for r in results) - min(r["window"][0] for r in results)
    merged["seconds"] = elapsed
    merged["busy_before"] = idle_before
    merged["cpu"] = cpu_used(before, after)
    merged["wal_bytes"] = wal_after - wal_before
    return merged


# --- profiling ---------------------------------------------------------------------------

def start_profiler(server_pid: int, args) -> subprocess.Popen:
    """py-spy over the master and every worker for the measurement window (raw stacks)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        raise SystemExit("--profile needs py-spy (pip install -r requirements-dev.txt)")
    out = Path(args.profile) / ("ivr-wall.txt" if args.profile_idle else "ivr-cpu.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(spy), "record", "--pid", str(server_pid), "--subprocesses", "--format", "raw",
           "--function", "--rate", "200", "--nonblocking",
           "--duration", str(max(1, int(args.duration))), "--output", str(out)]
    # CPU view: only samples holding the GIL (the Python work); wall view: every thread.
    cmd.append("--idle" if args.profile_idle else "--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frame_name(frame: str) -> str:
    # "fn (path/to/module.py:12)" -> "module.py:fn"
    fn, _, where = frame.partition(" (")
    return f"{where.rstrip(')').rsplit(':', 1)[0].rsplit('/', 1)[-1]}:{fn}"


def profile_summary(path: Path, top: int = 25) -> list[str]:
    """Self and inclusive sample shares per function, from py-spy's raw (collapsed) stacks."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";")
                  if " (" in f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return [f"no samples in {path}"]
    out = [f"profile {path.name}: {total} samples",
           "  top self (where the time is spent):"]
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in
            sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    out.append("  top inclusive, the app's own functions:")
    ours = [(f, n) for f, n in incl.items()
            if f.split(":")[0] in _OUR_MODULES]
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in
            sorted(ours, key=lambda kv: -kv[1])[:top]]
    return out


_OUR_MODULES = {p.name for p in (ROOT / "ivr").rglob("*.py")}


# --- the database ------------------------------------------------------------------------

def create_database(admin_url: str, name: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def wal_position(admin_url: str) -> int:
    """The cluster's write-ahead log position in bytes (every database's writes count)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url)
    with engine.connect() as conn:
        lsn = conn.scalar(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
    engine.dispose()
    return int(lsn)


def check_store(url: str, callers: Callers, env: dict) -> tuple[list[str], bool]:
    """The consents stored per decision against the decisions the complete calls made, the
    calls stored completed against the complete calls; then the audit queue integrated and
    the whole Merkle log verified, as an operator would (`audit integrate --once`, `audit
    verify`). Returns the lines to print and whether everything matched."""
    from sqlalchemy import create_engine, text

    made = {k: v for k, v in callers.decisions.items() if k != "none"}
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = dict(conn.execute(text(
            "SELECT decision, count(*) FROM consents GROUP BY decision")).all())
        completed = conn.scalar(text("SELECT count(*) FROM calls WHERE status = 'completed'"))
    engine.dispose()
    ok = stored == made and completed == callers.calls
    lines = [f"complete calls driven {callers.calls}; calls stored completed {completed}"
             + ("  OK" if completed == callers.calls else "  MISMATCH"),
             f"decisions made:  {dict(sorted(made.items()))}"
             + (f" (+{callers.decisions['none']} calls without a decision)"
                if callers.decisions["none"] else ""),
             f"consents stored: {dict(sorted(stored.items()))}"
             + ("  OK" if stored == made else "  MISMATCH")]
    for cmd in (["audit", "integrate", "--once"], ["audit", "verify"]):
        done = subprocess.run([sys.executable, "-m", "ivr", *cmd], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, text=True)
        ok = ok and done.returncode == 0
        lines.append(f"audit {cmd[1]}: " + (done.stdout.strip() or done.stderr.strip())
                     + ("" if done.returncode == 0 else f"  (exit {done.returncode})"))
    return lines, ok


class QueueAge:
    """Samples the age of the oldest queued audit leaf every 100 ms while a phase runs: an
    upper bound of every leaf's time from commit to integration (the MMD actually held)."""

    def __init__(self, url: str):
        import threading

        from sqlalchemy import create_engine

        self.engine = create_engine(url, pool_size=1)
        self.samples: list[float] = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            while not self.stop_flag.wait(0.1):
                age = conn.execute(text(
                    "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(queued_at)), 0) "
                    "FROM audit_queue")).scalar()
                conn.commit()
                self.samples.append(float(age or 0.0))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join()
        self.engine.dispose()

    def line(self) -> str:
        xs = sorted(self.samples) or [0.0]
        q = xs[min(len(xs) - 1, int(round(0.99 * len(xs))) - 1)]
        return (f"oldest queued audit leaf, sampled every 100 ms ({len(self.samples)} samples): "
                f"p50 {xs[len(xs) // 2]:.3f} s, p99 {q:.3f} s, max {xs[-1]:.3f} s "
                f"(target: p99 <= 1 s, IVR_AUDIT_MMD)")


# --- the report --------------------------------------------------------------------------

def pct(xs: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of xs, in milliseconds."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return 1000 * xs[min(len(xs) - 1, max(0, int(round(q * len(xs))) - 1))]


def labels(r: dict) -> list[str]:
    """The request labels of a phase, in print order."""
    known = [p for p in (BARE_PATH, *call_mix.LABELS) if p in r["latency"]]
    return known + sorted(set(r["latency"]) - set(known))


def all_p99(r: dict) -> float:
    """The p99 of every request of a phase, whatever its path (the agents' API calls of
    the mix included), in milliseconds."""
    return pct([x for xs in r["latency"].values() for x in xs], .99)


def webhook_p99(r: dict) -> float:
    """The p99 of Twilio's requests of a phase (every /voice/ path, retries included), in
    milliseconds: what issue 19's target compares with the bare app's p99."""
    return pct([x for label, xs in r["latency"].items() if label.startswith("/voice/")
                for x in xs], .99)


def report(name: str, r: dict, cores: int, ivr: bool = True) -> list[str]:
    s = r["seconds"]
    cpu = r["cpu"]
    out = [f"{name}: {r['requests'] / s:8.1f} requests/s"
           + (f", {r['calls'] / s:.1f} complete calls/s" if ivr else "")
           + f"  ({r['requests']} requests in {s:.1f} s)"]
    for p in labels(r):
        xs = r["latency"].get(p, [])
        out.append(f"  {p:<24} n={len(xs):<7} p50 {pct(xs, .5):7.1f} ms   "
                   f"p99 {pct(xs, .99):7.1f} ms   max {pct(xs, 1):7.1f} ms")
    if ivr and r["calls"]:
        out.append(f"  complete calls in the window, per scenario ({r['calls']}):")
        out += [f"    {k:<28} {n:6d}  {100 * n / r['calls']:5.1f}%"
                for k, n in sorted(r["scenarios"].items(),
                                   key=lambda kv: call_mix.SCENARIOS.index(kv[0]))]
        if r["pool_misses"]:
            out.append(f"    ({r['pool_misses']} returning calls found every returning "
                       "caller on a call and were placed as fresh callers: raise --pool)")
    errs = sum(r["errors"].values())
    out.append(f"  errors: {errs}" + (f"  {r['errors']}" if errs else ""))
    others = cpu["machine"] - cpu["server"] - cpu["postgres"] - r["generator_cpu"]
    if r["requests"]:
        out.append(f"  WAL written: {r['wal_bytes'] / r['requests'] / 1024:.1f} KiB per request"
                   + (f", {r['wal_bytes'] / r['calls'] / 1024:.1f} KiB per complete call"
                      if ivr and r["calls"] else ""))
    out.append(f"  CPU (cores busy of {cores}): gunicorn {cpu['server'] / s:.2f}, "
               f"postgres {cpu['postgres'] / s:.2f}, load generator "
               f"{r['generator_cpu'] / s:.2f}, everything else {max(0.0, others) / s:.2f}"
               f"; machine {cpu['machine'] / s:.2f}")
    return out


def _conf_threads() -> int:
    """The threads gunicorn.conf.py gives each worker in this environment."""
    conf: dict = {}
    exec((ROOT / "gunicorn.conf.py").read_text(), conf)  # our own config file
    return conf["threads"]


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


# --smoke: a tiny run that checks the whole path in well under a minute (for the tests).
SMOKE = {"callers": 8, "duration": 2.0, "warmup": 0.5, "workers": 2, "rounds": 1,
         "generators": 1, "calls": 0, "pool": 16, "agents": 2, "quiet_wait": 0.0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--mix", dest="mix", action="store_true", default=True,
                       help="the IVR gets a call center's mix: 50%% returning callers (one in "
                            "five withdraws), 30%% fresh, 10%% hang-ups in the notice, 5%% "
                            "agent transfers, 5%% Twilio retries (the default)")
    which.add_argument("--fresh", dest="mix", action="store_false",
                       help="the IVR gets fresh callers only: incoming -> 1 -> completed")
    p.add_argument("--callers", type=int, default=64, help="concurrent callers (default 64)")
    p.add_argument("--calls", type=int, default=0,
                   help="complete calls per phase (the bare app gets 3 requests per call) "
                        "instead of a timed window (default: timed)")
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds measured per phase (default 20)")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="seconds driven before measuring (default 3)")
    p.add_argument("--pool", type=int, default=0,
                   help="--mix: returning callers whose decision is stored with real calls "
                        "before the first round (default 4 x --callers); the pool grows as "
                        "fresh callers decide")
    p.add_argument("--agents", type=int, default=0,
                   help="--mix: agent accounts making the transfers (default --callers / 8, "
                        "at least 2; each has the API's rate limit)")
    p.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per gunicorn worker (default: gunicorn.conf.py's)")
    p.add_argument("--generators", type=int, default=1,
                   help="load-generator processes sharing the callers (default 1)")
    p.add_argument("--rounds", type=int, default=1,
                   help="alternate bare/IVR phases this many times (default 1)")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="before each phase, wait up to this many seconds for other load to "
                        "stop (default 120)")
    p.add_argument("--quiet-cores", type=float, default=0.2,
                   help="the machine counts as quiet below this many busy cores (default 0.2)")
    p.add_argument("--no-keepalive", action="store_true",
                   help="a new TCP connection for every request")
    p.add_argument("--log-level", default="INFO",
                   help="IVR_LOG_LEVEL of the app (default INFO, one line per webhook)")
    p.add_argument("--pg-admin-url", default=os.environ.get(
        "IVR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
                   help="a PostgreSQL URL allowed to CREATE/DROP DATABASE")
    p.add_argument("--profile", metavar="DIR",
                   help="sample the IVR workers with py-spy during the window (perturbs the "
                        "figures); raw stacks and a summary go to DIR")
    p.add_argument("--profile-idle", action="store_true",
                   help="with --profile: include waiting threads (wall time, not CPU)")
    p.add_argument("--anchors", action="store_true",
                   help="time-stamp and cosign the checkpoints while calls run: a local "
                        "openssl ts authority and a witness (benchmarks/anchors.py)")
    p.add_argument("--anchors-down", action="store_true",
                   help="with --anchors: both are down through every IVR window, then up; "
                        "reports how soon every checkpoint has its anchors")
    p.add_argument("--keep", action="store_true",
                   help="keep the database and the server logs afterwards")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    p.add_argument("--smoke", action="store_true",
                   help="a tiny run (8 callers, 2 workers, 2 s, one round, no quiet wait) that "
                        "exits non-zero on any error or mismatch; its figures mean nothing")
    args = p.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    args.pool = args.pool or 4 * args.callers
    args.agents = args.agents or max(2, args.callers // 8)
    if args.callers < 1 or args.generators < 1 or args.generators > args.callers:
        p.error("--callers must be at least 1 and at least --generators")
    return args


def main(argv=None) -> int:  # noqa: C901 - the command line's options, read in one place
    args = parse_args(argv)

    import bare_app
    from cryptography.fernet import Fernet

    cores = os.cpu_count() or 1
    name = f"ivr_bench_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(args.pg_admin_url, name)
    workdir = Path(tempfile.mkdtemp(prefix="ivr-bench-"))
    auth_token = secrets.token_hex(16)
    rounds = []
    store_ok = False
    twilio = call_mix.LiveTwilio(call_mix.ACCOUNT_SID, auth_token) if args.mix else None
    anchors = None
    try:
        # The same keys in every round: the database keeps a check value of the data key.
        app_env = {"IVR_DATABASE_URL": url, "TWILIO_AUTH_TOKEN": auth_token,
                   "IVR_INSTANCE_DIR": str(workdir / "instance"),
                   "IVR_SECRET_KEY": secrets.token_hex(32),
                   "IVR_PII_KEY": Fernet.generate_key().decode(),
                   "IVR_HMAC_KEY": secrets.token_hex(32), "IVR_LOG_LEVEL": args.log_level}
        if twilio is not None:
            # The IVR's real Twilio REST client redirects transferred calls here.
            twilio.__enter__()
            app_env["IVR_TWILIO_API_URL"] = twilio.url
        # The schema as an operator makes it: the migrations, every table and trigger.
        done = subprocess.run([sys.executable, "-m", "ivr", "db", "upgrade"], cwd=ROOT,
                              env={**os.environ, **app_env}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"python -m ivr db upgrade failed:\n{done.stdout}{done.stderr}")
        if args.anchors or args.anchors_down:
            anchors = Anchors({**os.environ, **app_env})
            app_env.update(anchors.env)
        bare_app.create_table(url)
        callers = Callers("mix" if args.mix else "fresh", twilio=twilio.url if twilio else "")
        # Made while the bare app is served and measured (a quiet wait lets them finish).
        agents = call_mix.add_agents({**os.environ, **app_env}, args.agents) if args.mix else []
        threads = args.threads or _conf_threads()
        print(f"database {name}; gunicorn {args.workers} workers x {threads} threads; "
              f"{args.callers} callers in {args.generators} load generator(s); "
              + ("the mix of returning (50%), fresh (30%), hang-ups (10%), transfers (5%), "
                 f"retries (5%), {args.pool} returning callers seeded, {args.agents} agents; "
                 if args.mix else "fresh callers only; ")
              + (f"{args.calls} calls per phase" if args.calls
                 else f"{args.duration:g} s measured after {args.warmup:g} s warm-up")
              + f"; {cores} cores; logs in {workdir}", flush=True)
        for i in range(args.rounds):
            port = free_port()
            server = start_gunicorn("bare_app:app", {"BENCH_DATABASE_URL": url}, port, args,
                                    workdir / "bare.log", ["--pythonpath", "benchmarks"])
            try:
                bare = run_phase("bare", f"http://127.0.0.1:{port}", server, args, auth_token)
            finally:
                stop(server)
            # Leaves the last round's workers queued as they stopped (a sequencer integrates
            # them only while it runs) would count as this round's merge delay.
            if i:
                subprocess.run([sys.executable, "-m", "ivr", "audit", "integrate", "--once"],
                               cwd=ROOT, env={**os.environ, **app_env}, capture_output=True,
                               check=False)
            if agents:
                callers.agents, agents = call_mix.tokens(agents), []
            port = free_port()
            env = {**app_env, "IVR_PUBLIC_URL": f"http://127.0.0.1:{port}",
                   # As in production: /metrics adds up every worker's counters.
                   "PROMETHEUS_MULTIPROC_DIR": str(_fresh_dir(workdir / f"prom{i}"))}
            if anchors is not None and args.anchors_down:
                anchors.down()
            server = start_gunicorn("wsgi:app", env, port, args, workdir / "ivr.log")
            try:
                with QueueAge(url) as queue_age:
                    ivr = run_phase("ivr", f"http://127.0.0.1:{port}", server, args, auth_token,
                                    callers, args.pool if args.mix and i == 0 else 0)
            finally:
                stop(server)
            ratio = (ivr["requests"] / ivr["seconds"]) / (bare["requests"] / bare["seconds"])
            bare_p99 = pct(bare["latency"].get(BARE_PATH, []), .99)
            p99_ratio = webhook_p99(ivr) / bare_p99
            print(f"\n--- round {i + 1} of {args.rounds}" + (" (--mix)" if args.mix
                                                              else " (--fresh)"))
            for line in (report("bare one-commit", bare, cores, ivr=False)
                         + report("IVR requests   ", ivr, cores)):
                print(line)
            print(f"ratio IVR req/s / one-commit req/s: {ratio:.3f}   (target >= "
                  f"{0.65 if args.mix else 0.75})   complete calls/s: "
                  f"{ivr['calls'] / ivr['seconds']:.1f}", flush=True)
            print(f"IVR webhook p99 {webhook_p99(ivr):.1f} ms = {p99_ratio:.2f} x the bare p99 "
                  f"(target <= 3); all requests {all_p99(ivr):.1f} ms = "
                  f"{all_p99(ivr) / bare_p99:.2f} x", flush=True)
            print(queue_age.line(), flush=True)
            rounds.append({"bare": bare, "ivr": ivr, "ratio": ratio, "p99_ratio": p99_ratio})
            if args.profile:
                name_ = "ivr-wall.txt" if args.profile_idle else "ivr-cpu.txt"
                summary = profile_summary(Path(args.profile) / name_)
                (Path(args.profile) / (name_[:-4] + "-summary.txt")).write_text(
                    "\n".join(summary) + "\n")
                print("\n".join(summary))
        print()
        if anchors is not None:
            print(anchors.settle({**os.environ, **app_env}), flush=True)
        lines, store_ok = check_store(url, callers, app_env)
        if args.mix:
            placed = Counter()
            for r in rounds:
                placed.update(r["ivr"]["scenarios"])
            missing = [k for k in call_mix.SCENARIOS if k != "returning: keeps (silence)"
                       and not placed[k]]
            if missing:
                store_ok = False
                lines.append(f"scenarios never completed in a window: {', '.join(missing)}"
                             "  MISMATCH")
        for line in lines:
            print(line)
        if args.rounds > 1:
            ratios = sorted(r["ratio"] for r in rounds)
            cps = sorted(r["ivr"]["calls"] / r["ivr"]["seconds"] for r in rounds)
            p99s = sorted(r["p99_ratio"] for r in rounds)
            bares = sorted(r["bare"]["requests"] / r["bare"]["seconds"] for r in rounds)
            print(f"median over {args.rounds} rounds: ratio {ratios[len(ratios) // 2]:.3f}, "
                  f"complete calls/s {cps[len(cps) // 2]:.1f}, IVR webhook p99 / bare p99 "
                  f"{p99s[len(p99s) // 2]:.2f}, bare one-commit {bares[len(bares) // 2]:.0f} "
                  f"req/s")
        if args.json:
            summary = [{"bare": _summary(r["bare"]), "ivr": _summary(r["ivr"]),
                        "ratio": r["ratio"], "p99_ratio": r["p99_ratio"]} for r in rounds]
            Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": summary},
                                                  indent=2))
    finally:
        if anchors is not None:
            anchors.close()
        if twilio is not None:
            twilio.__exit__(None, None, None)
        if not args.keep:
            drop_database(args.pg_admin_url, name)
            for f in sorted(workdir.rglob("*"), reverse=True):
                f.rmdir() if f.is_dir() else f.unlink()
            workdir.rmdir()
        else:
            print(f"kept database {name} and {workdir}")
    # The IVR's errors are in `callers`, with the seeding's.
    errors = sum(sum(r["bare"]["errors"].values()) for r in rounds)
    errors += sum(callers.errors.values())
    if errors or not store_ok:
        print(f"FAILED: {errors} errors" + ("" if store_ok else ", the store does not match"),
              file=sys.stderr)
        return 1
    return 0


def _summary(r: dict) -> dict:
    s = r["seconds"]
    return {"seconds": s, "requests_per_s": r["requests"] / s, "calls_per_s": r["calls"] / s,
            "errors": r["errors"], "scenarios": dict(r["scenarios"]),
            "cpu_cores": {k: v / s for k, v in r["cpu"].items()},
            "generator_cpu_cores": r["generator_cpu"] / s,
            "latency_ms": {p: {"n": len(r["latency"].get(p, [])),
                               "p50": pct(r["latency"].get(p, []), .5),
                               "p99": pct(r["latency"].get(p, []), .99)} for p in labels(r)}}


if __name__ == "__main__":
    if sys.argv[1:] == ["--_drive"]:
        drive_main()
    else:
        sys.exit(main())
