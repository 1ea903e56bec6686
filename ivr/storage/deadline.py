"""A deadline on a webhook's PostgreSQL work, so a caller never waits on a hung database.

A refused connection fails at once, but a database that stops answering (a network
partition, a hung server) leaves a query waiting for ever: the caller would hear Twilio's
"application error". Inside `deadline(seconds)`, every PostgreSQL connection this thread
checks out is watched: if the work is not done when the deadline passes, a watchdog
thread shuts the connection's socket down, the waiting call fails with an
OperationalError, and the webhook answers from the spool path (see ivr/web/voice/routes.py).
A new connection is given only the time left. Outside a deadline nothing is watched, so
the CLI's long jobs (audit verify, retention) are never cut short.

If the cut lands after the server has committed, the spooled copy finds the committed
one when it is replayed and records nothing twice (replays are idempotent).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

_local = threading.local()
_POLL = 0.02  # seconds between the watchdog's looks at the clock
_IDLE_POLLS = 50  # empty looks (a second) before the watchdog sleeps until armed
IDLE_IN_TRANSACTION = "60s"  # no transaction of ours, webhook or CLI, idles this long
CLIENT_CHECK = "250ms"  # how often a long statement checks that its client is still there


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Give this thread's database work `seconds` from now (PostgreSQL engines only)."""
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = None


@contextmanager
def unpinged() -> Iterator[None]:
    """Check connections out without the ping: for one statement that finds a dead
    connection itself and is tried again (ivr/storage/webhook_functions.py)."""
    _local.unpinged = True
    try:
        yield
    finally:
        _local.unpinged = False


def _current() -> float | None:
    return getattr(_local, "deadline", None)


class _Watchdog:
    """One thread per process that cuts connections whose deadline has passed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, object]] = {}
        self._wake = threading.Event()
        self._sleeping = False
        self._pid = 0

    def arm(self, key: int, until: float, dbapi_conn) -> None:
        with self._lock:
            if self._pid != os.getpid():  # first use in this process (or after a fork)
                self._pid = os.getpid()
                self._armed.clear()
                threading.Thread(target=self._run, name="db-deadline", daemon=True).start()
            self._armed[key] = (until, dbapi_conn)
            if self._sleeping:  # waiting for work: wake it (else it is polling anyway)
                self._sleeping = False
                self._wake.set()

    def disarm(self, key: int) -> None:
        with self._lock:
            self._armed.pop(key, None)

    def _run(self) -> None:
        idle = 0
        while True:
            with self._lock:
                # Under load the watch empties between requests: keep polling for a second
                # before sleeping, so that arming rarely has to wake the thread.
                idle = 0 if self._armed else idle + 1
                if idle > _IDLE_POLLS:
                    self._sleeping = True
                    self._wake.clear()
            if self._sleeping:
                self._wake.wait()
                idle = 0
                continue
            time.sleep(_POLL)
            now = time.monotonic()
            with self._lock:
                for key, (until, conn) in list(self._armed.items()):
                    if until <= now:
                        del self._armed[key]
                        _cut(conn)


def _cut(dbapi_conn) -> None:
    """Shut the connection's socket down: whoever waits on it gets an error at once."""
    try:
        fd = dbapi_conn.fileno()
        sock = socket.socket(fileno=os.dup(fd))
    except Exception:  # already closed: nothing waits on it
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


watchdog = _Watchdog()


def _connect_within(dialect, cargs, cparams, seconds: float):
    """Connect in a helper thread and give up after `seconds` (libpq's floor is 2 s)."""
    if seconds <= 0:
        raise dialect.loaded_dbapi.OperationalError(
            "no time left to connect to the database (the webhook's deadline was reached)")
    done = threading.Event()
    box: dict = {}
    lock = threading.Lock()

    def run() -> None:
        try:
            conn = dialect.loaded_dbapi.connect(*cargs, **cparams)
        except Exception as exc:  # handed to the waiting thread
            box["error"] = exc
        else:
            with lock:
                if box.get("abandoned"):
                    conn.close()
                    return
                box["conn"] = conn
        finally:
            done.set()

    threading.Thread(target=run, name="db-connect", daemon=True).start()
    done.wait(seconds)
    with lock:
        if "conn" in box:
            return box["conn"]
        if "error" in box:
            raise box["error"]
        box["abandoned"] = True
    raise dialect.loaded_dbapi.OperationalError(
        "connection to the database timed out (the webhook's deadline was reached)")


def install(engine: Engine) -> None:  # noqa: C901 - the engine's event hooks belong together
    """Watch this PostgreSQL engine's connections while a deadline is set.

    The engine must be made without pool_pre_ping: the ping happens here instead, after
    the watch is armed, so a hung connection cannot stall it.
    """

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):
        until = _current()
        if until is None:
            return None  # the normal connect
        return _connect_within(dialect, cargs, cparams, until - time.monotonic())

    @event.listens_for(engine, "connect")
    def _fresh(dbapi_conn, record):
        record.info["fresh"] = True
        # A cut connection's server side may not learn of it for a long time (a partition
        # swallows the FIN) and would keep its locks, the audit log's among them:
        # PostgreSQL ends such a session once it has sat idle in a transaction this long.
        with dbapi_conn.cursor() as cursor:
            cursor.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'")
            # A webhook's one statement commits by itself (ivr/storage/webhook_functions.py): if
            # its worker dies while the statement waits for a lock, PostgreSQL 14+ notices
            # the closed socket within this interval and cancels it, as an open transaction
            # would be rolled back.
            if dbapi_conn.info.server_version >= 140000:
                cursor.execute(f"SET client_connection_check_interval = '{CLIENT_CHECK}'")
        dbapi_conn.commit()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy):
        until = _current()
        if until is not None:
            watchdog.arm(id(record), until, dbapi_conn)
        if record.info.pop("fresh", False) or getattr(_local, "unpinged", False):
            return
        try:  # the pool's pre-ping, now under the watch
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
        except Exception as exc:
            watchdog.disarm(id(record))
            raise DisconnectionError(f"pre-ping failed: {exc}") from exc

    def _disarm(_dbapi_conn, record, *_exception):
        watchdog.disarm(id(record))

    for name in ("checkin", "close", "invalidate", "soft_invalidate", "detach"):
        event.listen(engine, name, _disarm)
