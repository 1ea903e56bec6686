"""What logging, metrics and the signature check cost per webhook, in CPU, in-process.

    .venv/bin/python benchmarks/request_overhead.py [--calls 5000] [--repeat 7]

Times, call by call (no server, no database), the per-request work that is not the
webhook's own: `ivr.web.metrics.observe_webhook` (one latency sample in the histogram and
one log line), split into the histogram alone and the log line alone; the log line through
the production logging set-up (`logging.basicConfig` at INFO as `create_app` does, then
`ivr.web.logs.configure_logging`: JSON lines, every record redacted) writing to a real file,
then as IVR_LOG_FORMAT=text and with the level at WARNING (the line disabled); the counters
of committed facts; and Twilio's `RequestValidator(token).validate` of a 15-field webhook
form against a single `compute_signature` (validate computes two HMACs, with and without
the port).

prometheus_client chooses its multiprocess mode when it is imported, from
PROMETHEUS_MULTIPROC_DIR, so each mode is measured in a subprocess of its own: production's
(a fresh temporary folder, as under gunicorn) and, for comparison, the single-process
registry. Every call gets a new call SID, so each log line is new, as in production.

Each figure is the median over --repeat repetitions of --calls calls (1,000 calls first, not
counted, to warm up), in µs per call, by the wall clock (perf_counter) and by the process's
CPU time (process_time), with the cost of the empty loop taken off. The shares are of the
bare one-commit request (~1.1 ms of worker CPU) and of a webhook (~7.5 ms), from
consent_calls.py. Nothing is asserted: it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BARE_US = 1100.0  # worker CPU per bare one-commit request (consent_calls.py)
WEBHOOK_US = 7500.0  # worker CPU per IVR webhook (consent_calls.py)
PATHS = ("/voice/incoming", "/voice/gather", "/voice/status")
TOKEN = "bench-auth-token-" + "5" * 16
URL = "https://ivr.example.com/voice/gather"


def twilio_form(call_sid: str) -> dict[str, str]:
    """The fields Twilio posts to a <Gather> action (15 of them)."""
    return {
        "AccountSid": "AC" + "7" * 32, "ApiVersion": "2010-04-01", "CallSid": call_sid,
        "CallStatus": "in-progress", "Called": "+902120000000", "Caller": "+905320000000",
        "Digits": "1", "Direction": "inbound", "FinishedOnKey": "", "From": "+905320000000",
        "FromCity": "ISTANBUL", "FromCountry": "TR", "To": "+902120000000",
        "ToCity": "ISTANBUL", "ToCountry": "TR",
    }


def timed(fn, inputs: list[list[tuple[str, float]]]) -> tuple[float, float]:
    """Median µs per call of fn(sid, seconds): (wall, CPU), one repetition per input list."""
    wall, cpu = [], []
    for batch in inputs:
        w0, c0 = time.perf_counter(), time.process_time()
        for sid, seconds in batch:
            fn(sid, seconds)
        c1, w1 = time.process_time(), time.perf_counter()
        wall.append((w1 - w0) / len(batch) * 1e6)
        cpu.append((c1 - c0) / len(batch) * 1e6)
    return statistics.median(wall), statistics.median(cpu)


def child(mode: str, calls: int, repeat: int) -> dict:  # noqa: C901 - one measured process, start to finish
    """Measure in this process (its PROMETHEUS_MULTIPROC_DIR set or not by the parent)."""
    import logging

    from flask import Flask
    from prometheus_client import values
    from twilio.request_validator import RequestValidator
    from werkzeug.datastructures import ImmutableMultiDict

    from ivr.web import logs, metrics

    logdir = tempfile.TemporaryDirectory()
    logfile = Path(logdir.name) / "ivr.log"
    # As create_app does (basicConfig's handler, then configure_logging), to a file.
    logging.basicConfig(level="INFO", stream=open(logfile, "a", encoding="utf-8"))
    root = logging.getLogger()

    def log_format(kind: str) -> None:
        app = Flask("bench")
        app.config["LOG_FORMAT"] = kind
        logs.configure_logging(app)

    log_format("json")

    def fresh() -> list[list[tuple[str, float]]]:
        return [[("CA" + secrets.token_hex(16), 0.0005 + (i % 4000) * 0.0001)
                 for i in range(calls)] for _ in range(repeat)]

    results: dict[str, tuple[float, float]] = {}
    empty = timed(lambda sid, s: None, fresh())

    def measure(key: str, fn, inputs=None) -> None:
        inputs = inputs or fresh()
        timed(fn, [inputs[0][:1000]])  # warm up, not counted
        wall, cpu = timed(fn, inputs)
        results[key] = (max(0.0, wall - empty[0]), max(0.0, cpu - empty[1]))

    paths = iter(PATHS * (calls * repeat * 20))

    def observe(sid, seconds):
        metrics.observe_webhook(next(paths), sid, "ok", seconds)

    measure("observe_webhook", observe)

    histogram = metrics.WEBHOOK_LATENCY
    measure("histogram", lambda sid, s: histogram.labels(path=next(paths), outcome="ok")
            .observe(s))

    metrics.log.disabled = True
    measure("observe_webhook, log disabled", observe)
    metrics.log.disabled = False

    if mode == "multiprocess":
        class _NoHistogram:
            def labels(self, **_labels):
                return self

            def observe(self, _seconds):
                pass

        metrics.WEBHOOK_LATENCY = _NoHistogram()
        try:
            measure("log json", observe)
            sample = logfile.read_text(encoding="utf-8").splitlines()[-1]
            log_format("text")
            measure("log text", observe)
            log_format("json")
            root.setLevel(logging.WARNING)
            measure("log disabled", observe)
            root.setLevel(logging.INFO)
        finally:
            metrics.WEBHOOK_LATENCY = histogram

        measure("count_call_started", lambda sid, s: metrics.count_call_started("incoming"))
        measure("count_gather", lambda sid, s: metrics.count_gather("digits", True))
        measure("count_consent", lambda sid, s: metrics.count_consent("granted"))
        measure("count_call_completed", lambda sid, s: metrics.count_call_completed("completed"))

        forms, signatures = {}, {}
        signer = RequestValidator(TOKEN)
        signed = fresh()
        for batch in signed:
            for sid, _ in batch:
                forms[sid] = ImmutableMultiDict(twilio_form(sid))  # Flask's request.form
                signatures[sid] = signer.compute_signature(URL, forms[sid])

        def validate(sid, _s):
            if not RequestValidator(TOKEN).validate(URL, forms[sid], signatures[sid]):
                raise SystemExit("benchmark: a signature did not validate")

        measure("validate", validate, signed)
        measure("compute_signature", lambda sid, _s: signer.compute_signature(URL, forms[sid]),
                signed)
    else:
        sample = ""
    logdir.cleanup()
    return {"mode": mode, "value_class": values.ValueClass.__name__, "results": results,
            "sample": sample, "empty_loop": empty}


def run_child(mode: str, args) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k.lower() != "prometheus_multiproc_dir"}
    with tempfile.TemporaryDirectory(prefix="prom-") as promdir:
        if mode == "multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = promdir
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--calls", str(args.calls),
             "--repeat", str(args.repeat)], env=env, check=True, stdout=subprocess.PIPE,
            text=True, cwd=ROOT)
        data = json.loads(out.stdout)
        data["files"] = sorted(p.name.split("_")[0] for p in Path(promdir).iterdir())
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000, help="calls per repetition (5000)")
    ap.add_argument("--repeat", type=int, default=7, help="repetitions; medians (7)")
    ap.add_argument("--child", choices=("multiprocess", "single"), help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny run for the tests (tests/integration/test_benchmark_smokes.py): "
                         "non-zero on a fault; its figures mean nothing")
    args = ap.parse_args()
    if args.smoke:
        args.calls, args.repeat = 200, 1
    if args.child:
        print(json.dumps(child(args.child, args.calls, args.repeat)))
        return

    mp = run_child("multiprocess", args)
    single = run_child("single", args)
    if mp["value_class"] != "MmapedValue" or single["value_class"] != "MutexValue":
        raise SystemExit(f"benchmark: wrong prometheus_client mode: {mp['value_class']}, "
                         f"{single['value_class']}")
    r, s = mp["results"], single["results"]
    counters = ("count_call_started", "count_gather", "count_consent", "count_call_completed")
    rows = [
        ("observe_webhook: histogram + log line (multiprocess)", r["observe_webhook"]),
        ("  the same, single-process registry", s["observe_webhook"]),
        ("  histogram alone: labels().observe() (multiprocess)", r["histogram"]),
        ("  histogram alone, single-process registry", s["histogram"]),
        ("  observe_webhook, log line disabled (multiprocess)",
         r["observe_webhook, log disabled"]),
        ("  log line alone: JSON + redaction, INFO, to a file", r["log json"]),
        ("  log line, IVR_LOG_FORMAT=text", r["log text"]),
        ("  log line, level WARNING (not written)", r["log disabled"]),
        *((f"{name} (multiprocess)", r[name]) for name in counters),
        ("RequestValidator(token).validate, 15 fields", r["validate"]),
        ("  one compute_signature", r["compute_signature"]),
    ]
    # A consent call is three webhooks and counts four facts.
    per_webhook = tuple(r["observe_webhook"][i] + r["validate"][i]
                        + sum(r[c][i] for c in counters) / 3 for i in (0, 1))
    rows.append(("per webhook: observe_webhook + validate + 4/3 counter", per_webhook))

    print(f"{'item':56s} {'µs wall':>8s} {'µs CPU':>8s} {'of 1.1 ms':>9s} {'of 7.5 ms':>9s}")
    for name, (wall, cpu) in rows:
        print(f"{name:56s} {wall:8.1f} {cpu:8.1f} {wall / BARE_US:9.1%} {wall / WEBHOOK_US:9.1%}")
    print(f"({args.repeat} x {args.calls} calls per item, medians; empty loop "
          f"{mp['empty_loop'][0]:.2f} µs taken off; multiprocess files: "
          f"{', '.join(sorted(set(mp['files'])))})")
    print(f"log line: {mp['sample']}")


if __name__ == "__main__":
    main()
