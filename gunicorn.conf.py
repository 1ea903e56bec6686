"""Gunicorn settings: `gunicorn -c gunicorn.conf.py wsgi:app` (the environment overrides)."""

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


bind = os.environ.get("IVR_BIND", "127.0.0.1:8000")
workers = _int("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count())
# Two threads: one request's database round trips overlap another's Python. More lose: a
# webhook holds the audit chain's lock (every process waits for it) until it commits, and
# with 4 threads the holder waits for the GIL behind its siblings' Python between round
# trips (benchmarks/README.md: 4 threads measured ~25% fewer webhooks/s than 1 or 2).
worker_class = "gthread"
threads = _int("IVR_THREADS", 2)
# Twilio gives up on a webhook after 15 s: a worker whose main loop is silent for 10 s is
# killed and replaced well before that, and a restart waits at most 10 s for requests in
# flight. (A gthread worker keeps beating while one request thread is slow: one webhook is
# bounded by the database timeouts in ivr/storage/db.py, not by this.)
timeout = _int("IVR_TIMEOUT", 10)
graceful_timeout = _int("IVR_GRACEFUL_TIMEOUT", 10)
# Twilio (and a reverse proxy) reuse connections between webhooks of a call.
keepalive = _int("IVR_KEEPALIVE", 5)
backlog = 2048
# Nothing opens a database connection at import, but each worker still builds its own app
# (and so its own connection pool) after the fork: no socket is ever shared by two processes.
preload_app = False
# The app writes one structured line per webhook (call SID, path, outcome, latency);
# an access log would repeat it. When it is on, it shows the path without its query string
# (search forms carry phone numbers there) and no Referer (a page URL with its query).
accesslog = os.environ.get("IVR_ACCESS_LOG") or None
# Every field of the access log with its control characters escaped (a path with %0A or
# %00 cannot forge a line or write a NUL byte): ivr/web/access_log.py.
logger_class = "ivr.web.access_log.AccessLogger"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s" %(M)sms'
errorlog = "-"
loglevel = os.environ.get("IVR_GUNICORN_LOG_LEVEL", "info")
# The heartbeat file on tmpfs, so a slow disk never looks like a stuck worker
# (gunicorn makes it with mkstemp, so the shared directory is safe).
_SHM = "/dev/shm"  # noqa: S108
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None
# Requests are small form posts: refuse huge request lines and headers before Flask sees them.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
proc_name = "ivr"
