"""Database faults made from outside the app, on the real server: a lock held by another
session, a backend ended by an administrator, a transaction that loses a race.

Each takes the test schema's URL (the one the app uses, search_path in its options)."""

from __future__ import annotations

import re
import threading
import time

import psycopg
from sqlalchemy.engine import make_url

# Every write the app makes appends to the audit queue (webhooks, transfers, the spool's
# replay) or empties it (the sequencer's pass): one table every cell's statement needs.
TABLE = "audit_queue"


def conninfo(url: str) -> str:
    """A libpq URI for a SQLAlchemy URL (the options, search_path among them, kept)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def schema_of(url: str) -> str:
    """The schema a test URL's search_path names."""
    return re.search(r"search_path%3D([A-Za-z0-9_]+)", url)[1]


def with_options(url: str, *options: str) -> str:
    """The URL with more `-c name=value` options for every connection it makes."""
    extra = "".join(f"%20-c{o.replace('=', '%3D')}" for o in options)
    return re.sub(r"(options=[^&]*)", lambda m: m[1] + extra, url, count=1)


def via(url: str, port: int) -> str:
    """The same database through a proxy on 127.0.0.1:`port`."""
    u = make_url(url)
    return url.replace(f"@{u.host}:{u.port}/", f"@127.0.0.1:{port}/", 1)


def waiting_pids(conn: psycopg.Connection, schema: str, table: str = TABLE) -> list[int]:
    """Backends waiting for a lock on the table (not granted yet)."""
    return [pid for (pid,) in conn.execute(
        "SELECT l.pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT l.granted AND n.nspname = %s AND c.relname = %s", (schema, table))]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.01):
    """Poll until `predicate()` is true; its value, or AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


class HeldLock:
    """Another session holds the table in EXCLUSIVE mode (reads go on, writes wait)."""

    def __init__(self, url: str, table: str = TABLE):
        self.url, self.schema, self.table = url, schema_of(url), table
        self.conn = psycopg.connect(conninfo(url), autocommit=True)
        self.conn.execute("BEGIN")
        self.conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        self.watch = psycopg.connect(conninfo(url), autocommit=True)

    def waiters(self) -> list[int]:
        """Backends waiting on the held lock."""
        return waiting_pids(self.watch, self.schema, self.table)

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.execute("ROLLBACK")
            self.conn.close()
        self.watch.close()


class AdminShutdown:
    """An operator ends (pg_terminate_backend: SQLSTATE 57P01 for the client) every
    backend that waits on the held lock, as soon as it waits."""

    def __init__(self, lock: HeldLock):
        self.lock = lock
        self.ended: list[int] = []
        self._stop = threading.Event()
        self._conn = psycopg.connect(conninfo(lock.url), autocommit=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            for pid in waiting_pids(self._conn, self.lock.schema, self.lock.table):
                if self._conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]:
                    self.ended.append(pid)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


class LostRaces:
    """A trigger on the table that fails its first `times` statements with `sqlstate`
    (40001 serialization failure, 40P01 deadlock), as a transaction that lost a race.

    The count is a sequence: a row in a table would be rolled back with the failure."""

    def __init__(self, url: str, sqlstate: str, times: int, table: str = TABLE):
        self.url, self.schema = url, schema_of(url)
        s = f'"{self.schema}"'
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            conn.execute(f"CREATE SEQUENCE {s}.fault_strikes")
            conn.execute(f"""
                CREATE FUNCTION {s}.fault_lose_race() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF nextval('{s}.fault_strikes') <= {int(times)} THEN
                        RAISE EXCEPTION 'fault table: this transaction lost a race'
                            USING ERRCODE = '{sqlstate}';
                    END IF;
                    RETURN NULL;
                END $$""")
            conn.execute(f"CREATE TRIGGER fault_lose_race BEFORE INSERT OR DELETE ON "
                         f"{s}.{table} FOR EACH STATEMENT "
                         f"EXECUTE FUNCTION {s}.fault_lose_race()")

    def strikes(self) -> int:
        """How many statements reached the trigger."""
        with psycopg.connect(conninfo(self.url), autocommit=True) as conn:
            row = conn.execute(f'SELECT last_value, is_called FROM "{self.schema}".'
                               "fault_strikes").fetchone()
        return row[0] if row[1] else 0

    def drop(self) -> None:
        s = f'"{self.schema}"'
        with psycopg.connect(conninfo(self.url), autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER fault_lose_race ON {s}.{TABLE}")
            conn.execute(f"DROP FUNCTION {s}.fault_lose_race()")
            conn.execute(f"DROP SEQUENCE {s}.fault_strikes")
