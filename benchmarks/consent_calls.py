"""Consent calls per second through gunicorn and PostgreSQL, against a one-commit ceiling.

    .venv/bin/python benchmarks/consent_calls.py [--callers 64] [--duration 20] [--workers 4]

Creates a fresh PostgreSQL database, serves the IVR (`wsgi:app`) and then a bare Flask app
that does one INSERT + COMMIT per request (benchmarks/bare_app.py) under the same gunicorn
settings (gunicorn.conf.py) on loopback, and drives both with the same number of concurrent
callers from separate load-generator processes (asyncio + aiohttp). An IVR call is complete
when it went incoming -> key 1 -> status `completed`, every request signed exactly as Twilio
signs it. Prints complete calls/s, webhook requests/s, p50/p99 per path, errors, the CPU each
party used, and the ratio of the IVR's webhook throughput to the bare one-commit ceiling;
then checks the stored consents and the audit chain, and drops the database.
"""

from __future__ import annotations

import argparse
import asyncio
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
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PATHS = ("/voice/incoming", "/voice/gather", "/voice/status")
BARE_PATH = "/commit"
TWILIO_TIMEOUT = 15.0  # Twilio gives up on a webhook after 15 s
CLK = os.sysconf("SC_CLK_TCK")


# --- the load generator (runs in its own processes) --------------------------------------

class Stats:
    """What one load generator saw inside the measurement window."""

    def __init__(self, start: float, end: float):
        self.start, self.end = start, end
        self.latency: dict[str, list[float]] = {}
        self.requests = 0
        self.calls = 0
        self.errors: dict[str, int] = {}
        self.total_calls = 0  # complete calls, in or out of the window
        self.total_requests = 0

    def sample(self, path: str, began: float, done: float) -> None:
        self.total_requests += 1
        if self.start <= done <= self.end:
            self.requests += 1
            self.latency.setdefault(path, []).append(done - began)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def call_done(self, done: float) -> None:
        self.total_calls += 1
        if self.start <= done <= self.end:
            self.calls += 1


class CallFailed(Exception):
    """One call went wrong; its kind is counted as an error."""


def _phone() -> str:
    # A new caller each time: a known number would skip the question for a caller who consented.
    return "+90532" + "".join(secrets.choice("0123456789") for _ in range(7))


async def _post(http, validator, url: str, data: dict, path: str, stats: Stats,
                expect: int) -> str:
    headers = {"X-Twilio-Signature": validator.compute_signature(url, data),
               "I-Twilio-Idempotency-Token": secrets.token_hex(16),
               "User-Agent": "TwilioProxy/1.1"}
    began = time.time()
    try:
        async with http.post(url, data=data, headers=headers, allow_redirects=False) as r:
            body = await r.text()
            status = r.status
    except TimeoutError:
        raise CallFailed(f"{path} timeout") from None
    except Exception as e:  # noqa: BLE001 - any transport failure is one counted error
        raise CallFailed(f"{path} {type(e).__name__}") from None
    done = time.time()
    if status != expect:
        raise CallFailed(f"{path} HTTP {status}")
    stats.sample(path, began, done)
    return body


def _gather_action(body: str) -> str:
    root = ET.fromstring(body)
    gather = root.find("Gather")
    if root.tag != "Response" or gather is None or "/voice/gather?" not in gather.get(
            "action", ""):
        raise CallFailed("/voice/incoming answered no <Gather>")
    return gather.get("action")


async def consent_call(http, validator, base: str, stats: Stats, apology: str) -> None:
    """incoming -> key 1 -> status completed, as Twilio would post them."""
    params = {"CallSid": "CA" + secrets.token_hex(16), "AccountSid": "AC" + "0" * 32,
              "From": _phone(), "To": "+902122223344", "CallStatus": "ringing",
              "ApiVersion": "2010-04-01", "Direction": "inbound"}
    body = await _post(http, validator, base + "/voice/incoming", params,
                       "/voice/incoming", stats, 200)
    try:
        action = _gather_action(body)
    except ET.ParseError:
        raise CallFailed("/voice/incoming answered invalid XML") from None
    params["CallStatus"] = "in-progress"
    body = await _post(http, validator, action, {**params, "Digits": "1"}, "/voice/gather",
                       stats, 200)
    if body == apology or "<Hangup />" not in body or "<Gather" in body:
        raise CallFailed("/voice/gather answered no consent confirmation")
    params.update(CallStatus="completed", SequenceNumber="0", CallDuration="42",
                  Timestamp=format_datetime(datetime.now(UTC), usegmt=True),
                  CallbackSource="call-progress-events")
    await _post(http, validator, base + "/voice/status", params, "/voice/status", stats, 200)
    stats.call_done(time.time())


async def bare_request(http, validator, base: str, stats: Stats, _apology: str) -> None:
    """One POST to the one-commit app, with the same form a status callback carries."""
    params = {"CallSid": "CA" + secrets.token_hex(16), "AccountSid": "AC" + "0" * 32,
              "From": _phone(), "To": "+902122223344", "CallStatus": "completed",
              "ApiVersion": "2010-04-01", "Direction": "inbound", "SequenceNumber": "0"}
    await _post(http, validator, base + BARE_PATH, params, BARE_PATH, stats, 204)
    stats.call_done(time.time())


async def _drive(cfg: dict) -> dict:
    import aiohttp
    from twilio.request_validator import RequestValidator

    from ivr.web.voice.twiml import apology_twiml

    stats = Stats(cfg["start"] + cfg["warmup"], cfg["start"] + cfg["warmup"] + cfg["duration"])
    validator = RequestValidator(cfg["auth_token"])
    unit = bare_request if cfg["target"] == "bare" else consent_call
    apology = apology_twiml()
    quota = cfg.get("calls")  # this generator's share of complete calls, or None
    started = 0
    cpu = {}

    async def caller():
        nonlocal started
        while time.time() < stats.end and (quota is None or started < quota):
            started += 1
            try:
                await unit(http, validator, cfg["base"], stats, apology)
            except CallFailed as e:
                stats.error(str(e))
                await asyncio.sleep(0.01)

    async def cpu_marks():
        await asyncio.sleep(max(0.0, stats.start - time.time()))
        cpu["start"] = sum(os.times()[:2])
        await asyncio.sleep(max(0.0, stats.end - time.time()))
        cpu["end"] = sum(os.times()[:2])

    connector = aiohttp.TCPConnector(limit=0, force_close=not cfg["keepalive"])
    timeout = aiohttp.ClientTimeout(total=TWILIO_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
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
            "window": [stats.start, stats.end]}


def drive_main() -> None:
    """Entry point of a load-generator process: config JSON on stdin, results on stdout."""
    cfg = json.load(sys.stdin)
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
    """Wait (up to --quiet-wait s) until the machine is nearly idle; returns the busy cores."""
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
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
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


def run_phase(target: str, base: str, server: subprocess.Popen, args, auth_token: str) -> dict:
    """Drive one server with every caller for the window; results merged over generators."""
    idle_before = wait_until_quiet(args)
    start = time.time() + 1.0
    n = args.generators
    shares = [args.callers // n + (1 if i < args.callers % n else 0) for i in range(n)]
    procs = []
    for i, callers in enumerate(shares):
        quota = None
        if args.calls:
            # The bare app gets as many requests as the calls make webhooks.
            total = args.calls * (len(PATHS) if target == "bare" else 1)
            quota = total // n + (1 if i < total % n else 0)
        cfg = {"target": target, "base": base, "callers": callers, "start": start,
               "warmup": 0.0 if args.calls else args.warmup, "duration": args.duration,
               "auth_token": auth_token, "calls": quota, "keepalive": not args.no_keepalive}
        p = subprocess.Popen([sys.executable, __file__, "--_drive"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, cwd=ROOT)
        p.stdin.write(json.dumps(cfg).encode())
        p.stdin.close()
        procs.append(p)
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
    results = []
    for p in procs:
        out = p.stdout.read()
        if p.wait() != 0:
            raise SystemExit(f"a load generator failed ({p.returncode})")
        results.append(json.loads(out))
    merged = {"latency": {}, "requests": 0, "calls": 0, "errors": {}, "total_calls": 0,
              "total_requests": 0, "generator_cpu": 0.0}
    for r in results:
        for path, xs in r["latency"].items():
            merged["latency"].setdefault(path, []).extend(xs)
        for k, v in r["errors"].items():
            merged["errors"][k] = merged["errors"].get(k, 0) + v
        for k in ("requests", "calls", "total_calls", "total_requests"):
            merged[k] += r[k]
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


def check_store(url: str, total_calls: int, env: dict) -> list[str]:
    """Consents and calls stored for the complete calls; the audit queue integrated and the
    whole Merkle log verified, as an operator would (`audit integrate --once`, `audit verify`)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    lines = []
    with engine.connect() as conn:
        granted = conn.scalar(text("SELECT count(*) FROM consents WHERE decision = 'granted'"))
        consents = conn.scalar(text("SELECT count(*) FROM consents"))
        completed = conn.scalar(text("SELECT count(*) FROM calls WHERE status = 'completed'"))
        lines.append(f"complete calls driven {total_calls}; calls stored completed "
                     f"{completed}; consents stored {consents} (granted {granted})"
                     + ("  OK" if granted == consents == completed == total_calls
                        else "  MISMATCH"))
    engine.dispose()
    for cmd in (["audit", "integrate", "--once"], ["audit", "verify"]):
        done = subprocess.run([sys.executable, "-m", "ivr", *cmd], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, text=True)
        lines.append(f"audit {cmd[1]}: " + (done.stdout.strip() or done.stderr.strip())
                     + ("" if done.returncode == 0 else f"  (exit {done.returncode})"))
    return lines


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


def webhook_p99(r: dict) -> float:
    """The p99 of every webhook of a phase, whatever its path, in milliseconds."""
    return pct([x for p in PATHS for x in r["latency"].get(p, [])], .99)


def report(name: str, r: dict, paths, cores: int) -> list[str]:
    s = r["seconds"]
    cpu = r["cpu"]
    out = [f"{name}: {r['requests'] / s:8.1f} requests/s"
           + (f", {r['calls'] / s:.1f} complete calls/s" if paths != (BARE_PATH,) else "")
           + f"  ({r['requests']} requests in {s:.1f} s)"]
    for p in paths:
        xs = r["latency"].get(p, [])
        out.append(f"  {p:<16} n={len(xs):<7} p50 {pct(xs, .5):7.1f} ms   "
                   f"p99 {pct(xs, .99):7.1f} ms   max {pct(xs, 1):7.1f} ms")
    errs = sum(r["errors"].values())
    out.append(f"  errors: {errs}" + (f"  {r['errors']}" if errs else ""))
    others = cpu["machine"] - cpu["server"] - cpu["postgres"] - r["generator_cpu"]
    if r["requests"]:
        out.append(f"  WAL written: {r['wal_bytes'] / r['requests'] / 1024:.1f} KiB per request"
                   + (f", {r['wal_bytes'] / r['calls'] / 1024:.1f} KiB per complete call"
                      if paths != (BARE_PATH,) and r["calls"] else ""))
    out.append(f"  CPU (cores busy of {cores}): gunicorn {cpu['server'] / s:.2f}, "
               f"postgres {cpu['postgres'] / s:.2f}, load generator "
               f"{r['generator_cpu'] / s:.2f}, everything else {max(0.0, others) / s:.2f}"
               f"; machine {cpu['machine'] / s:.2f}")
    return out


def _conf_threads() -> int:
    """The threads gunicorn.conf.py gives each worker in this environment."""
    conf: dict = {}
    exec((ROOT / "gunicorn.conf.py").read_text(), conf)  # noqa: S102 - our own config file
    return conf["threads"]


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--callers", type=int, default=64, help="concurrent callers (default 64)")
    p.add_argument("--calls", type=int, default=0,
                   help="complete calls per phase (the bare app gets 3 requests per call) "
                        "instead of a timed window (default: timed)")
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds measured per phase (default 20)")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="seconds driven before measuring (default 3)")
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
    p.add_argument("--keep", action="store_true",
                   help="keep the database and the server logs afterwards")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    args = p.parse_args(argv)

    import bare_app
    from cryptography.fernet import Fernet

    cores = os.cpu_count() or 1
    name = f"ivr_bench_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(args.pg_admin_url, name)
    workdir = Path(tempfile.mkdtemp(prefix="ivr-bench-"))
    auth_token = secrets.token_hex(16)
    rounds = []
    try:
        # The same keys in every round: the database keeps a check value of the data key.
        app_env = {"IVR_DATABASE_URL": url, "TWILIO_AUTH_TOKEN": auth_token,
                   "IVR_INSTANCE_DIR": str(workdir / "instance"),
                   "IVR_SECRET_KEY": secrets.token_hex(32),
                   "IVR_PII_KEY": Fernet.generate_key().decode(),
                   "IVR_HMAC_KEY": secrets.token_hex(32), "IVR_LOG_LEVEL": args.log_level}
        # The schema as an operator makes it: the migrations, every table and trigger.
        done = subprocess.run([sys.executable, "-m", "ivr", "db", "upgrade"], cwd=ROOT,
                              env={**os.environ, **app_env}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"python -m ivr db upgrade failed:\n{done.stdout}{done.stderr}")
        bare_app.create_table(url)
        threads = args.threads or _conf_threads()
        print(f"database {name}; gunicorn {args.workers} workers x {threads} threads; "
              f"{args.callers} callers in {args.generators} load generator(s); "
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
            subprocess.run([sys.executable, "-m", "ivr", "audit", "integrate", "--once"],
                           cwd=ROOT, env={**os.environ, **app_env}, capture_output=True,
                           check=False)
            port = free_port()
            env = {**app_env, "IVR_PUBLIC_URL": f"http://127.0.0.1:{port}",
                   # As in production: /metrics adds up every worker's counters.
                   "PROMETHEUS_MULTIPROC_DIR": str(_fresh_dir(workdir / f"prom{i}"))}
            server = start_gunicorn("wsgi:app", env, port, args, workdir / "ivr.log")
            try:
                with QueueAge(url) as queue_age:
                    ivr = run_phase("ivr", f"http://127.0.0.1:{port}", server, args, auth_token)
            finally:
                stop(server)
            ratio = (ivr["requests"] / ivr["seconds"]) / (bare["requests"] / bare["seconds"])
            p99_ratio = webhook_p99(ivr) / pct(bare["latency"].get(BARE_PATH, []), .99)
            print(f"\n--- round {i + 1} of {args.rounds}")
            for line in (report("bare one-commit", bare, (BARE_PATH,), cores)
                         + report("IVR webhooks   ", ivr, PATHS, cores)):
                print(line)
            print(f"ratio IVR webhook req/s / one-commit req/s: {ratio:.3f}   "
                  f"(target >= 0.6)   complete calls/s: {ivr['calls'] / ivr['seconds']:.1f}",
                  flush=True)
            print(f"webhook p99 (all paths) {webhook_p99(ivr):.1f} ms = {p99_ratio:.2f} x the "
                  f"bare p99 (target <= 3)", flush=True)
            print(queue_age.line(), flush=True)
            rounds.append({"bare": bare, "ivr": ivr, "ratio": ratio, "p99_ratio": p99_ratio})
            if args.profile:
                name_ = "ivr-wall.txt" if args.profile_idle else "ivr-cpu.txt"
                summary = profile_summary(Path(args.profile) / name_)
                (Path(args.profile) / (name_[:-4] + "-summary.txt")).write_text(
                    "\n".join(summary) + "\n")
                print("\n".join(summary))
        total = sum(r["ivr"]["total_calls"] for r in rounds)
        print()
        for line in check_store(url, total, app_env):
            print(line)
        if args.rounds > 1:
            ratios = sorted(r["ratio"] for r in rounds)
            cps = sorted(r["ivr"]["calls"] / r["ivr"]["seconds"] for r in rounds)
            p99s = sorted(r["p99_ratio"] for r in rounds)
            bares = sorted(r["bare"]["requests"] / r["bare"]["seconds"] for r in rounds)
            print(f"median over {args.rounds} rounds: ratio {ratios[len(ratios) // 2]:.3f}, "
                  f"complete calls/s {cps[len(cps) // 2]:.1f}, webhook p99 / bare p99 "
                  f"{p99s[len(p99s) // 2]:.2f}, bare one-commit {bares[len(bares) // 2]:.0f} "
                  f"req/s")
        if args.json:
            summary = [{"bare": _summary(r["bare"], (BARE_PATH,)),
                        "ivr": _summary(r["ivr"], PATHS), "ratio": r["ratio"],
                        "p99_ratio": r["p99_ratio"]} for r in rounds]
            Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": summary},
                                                  indent=2))
    finally:
        if not args.keep:
            drop_database(args.pg_admin_url, name)
            for f in sorted(workdir.rglob("*"), reverse=True):
                f.rmdir() if f.is_dir() else f.unlink()
            workdir.rmdir()
        else:
            print(f"kept database {name} and {workdir}")
    errors = sum(sum(r[k]["errors"].values()) for r in rounds for k in ("bare", "ivr"))
    return 1 if errors else 0


def _summary(r: dict, paths) -> dict:
    s = r["seconds"]
    return {"seconds": s, "requests_per_s": r["requests"] / s, "calls_per_s": r["calls"] / s,
            "errors": r["errors"], "cpu_cores": {k: v / s for k, v in r["cpu"].items()},
            "generator_cpu_cores": r["generator_cpu"] / s,
            "latency_ms": {p: {"n": len(r["latency"].get(p, [])),
                               "p50": pct(r["latency"].get(p, []), .5),
                               "p99": pct(r["latency"].get(p, []), .99)} for p in paths}}


if __name__ == "__main__":
    if sys.argv[1:] == ["--_drive"]:
        drive_main()
    else:
        sys.exit(main())
