"""Fixtures: an app with a fresh PostgreSQL schema per test, a live HTTP server, and a
Twilio caller that signs requests and follows TwiML.

The server is the one IVR_TEST_PG_URL names (CI: the machine's, .ci/run), else an embedded
one (ivr/storage/embedded_pg.py, as `make run` uses) started once for the session in a
temporary folder, on 127.0.0.1 (the outage tests put a TCP proxy in front of it), and
removed at the end. Each test gets its own schema in it. If a named server is unreachable
the tests that need it fail.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from ivr import create_app
from ivr.adapters.simulate import Caller, flask_transport, http_transport
from ivr.services.audit_sequencer import run_pass
from ivr.services.audit_verify import verify_log
from ivr.storage import embedded_pg
from ivr.web.current import database

ROOT = Path(__file__).resolve().parents[2]
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_pg_state: dict = {}

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def require_tools(*tools: str, what: str) -> None:
    """Stop a test that needs programs from outside the venv when one is missing: a loud
    skip on a developer's machine, a failure in CI (where `make test` installs them)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        msg = (f"!!! {', '.join(missing)} not installed: {what} did NOT run "
               "(`make tools` installs it as root)")
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def chromium(what: str) -> str:
    """The path of Debian's chromium, or the loud skip / CI failure of `require_tools`."""
    require_tools("chromium", what=what)
    return shutil.which("chromium")


def pg_admin_url() -> str:
    """The test server's URL: IVR_TEST_PG_URL, else the session's embedded server (started
    on first use, stopped and removed when the session ends)."""
    if "url" not in _pg_state:
        named = os.environ.get("IVR_TEST_PG_URL")
        if named:
            _pg_state["url"], _pg_state["what"] = named, "IVR_TEST_PG_URL"
        else:
            folder = Path(tempfile.mkdtemp(prefix="ivr-test-pg-"))
            folder.chmod(0o711)  # as root, the server's own user must reach its data
            data = folder / "pg"
            _pg_state["embedded"], _pg_state["what"] = data, "embedded, " + str(data)
            _pg_state["url"] = embedded_pg.start(data, tcp=True)
    return _pg_state["url"]


def stop_embedded_server() -> None:
    """End the session's embedded server, if one was started (pytest_sessionfinish)."""
    data = _pg_state.pop("embedded", None)
    if data is not None:
        embedded_pg.stop(data)
        shutil.rmtree(data.parent, ignore_errors=True)


def pg_available() -> bool:
    """True when the test PostgreSQL answers (checked once)."""
    if "ok" not in _pg_state:
        try:
            eng = create_engine(pg_admin_url(), connect_args={"connect_timeout": 3})
            with eng.connect() as conn:
                conn.execute(text("SELECT 1"))
            eng.dispose()
            _pg_state["ok"] = True
        except Exception as exc:  # any failure means "not reachable"
            _pg_state["ok"] = False
            _pg_state["why"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _pg_state["ok"]


@pytest.fixture
def database_url():
    """A fresh, empty schema's URL for one test."""
    if not pg_available():
        pytest.fail(f"PostgreSQL not reachable ({_pg_state.get('what')}): "
                    f"{_pg_state.get('why')}")
    yield from pg_schema_url()


@pytest.fixture(scope="module")
def module_database_url():
    """A fresh schema's URL shared by one module's tests (for module-scoped apps)."""
    if not pg_available():
        pytest.fail(f"PostgreSQL not reachable ({_pg_state.get('what')}): "
                    f"{_pg_state.get('why')}")
    yield from pg_schema_url()


def pg_schema_url():
    """A generator fixture's body: a URL whose search_path is a fresh schema, dropped
    after the test."""
    admin_url = pg_admin_url()
    schema = "t_" + secrets.token_hex(6)
    admin = create_engine(admin_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in admin_url else "?"
    yield f"{admin_url}{sep}options=-csearch_path%3D{schema}"
    drop_schema(admin, schema)
    admin.dispose()


def drop_schema(admin, schema: str) -> None:
    """Drop a test schema, ending any connection that still holds a lock in it (a test
    that left a transaction open must not hang the teardown)."""
    holders = text(
        "SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND l.pid <> pg_backend_pid()")
    for _ in range(5):
        with admin.begin() as conn:
            for (pid,) in conn.execute(holders, {"schema": schema}):
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        try:
            with admin.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            return
        except Exception:  # a lock appeared again: end it and retry
            continue
    raise RuntimeError(f"could not drop test schema {schema}")


def verified_chain_length(app) -> int:
    """Integrate the audit queue, then verify the whole log as `audit verify` does; raises
    on any problem. The number of leaves."""
    with app.app_context():
        run_pass(app, wait=30.0)
        with database(app).sessionmaker() as s:
            return verify_log(s).entries


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    """An empty audio folder (prompts fall back to <Say>) unless a test renders into it."""
    d = tmp_path / "audio"
    d.mkdir()
    return d


@pytest.fixture
def app_config(database_url, tmp_path, audio_dir) -> dict:
    """The settings a test app starts with; tests may change them before `app` is built."""
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "INSTANCE_DIR": str(tmp_path / "instance"),
        "AUDIO_DIR": str(audio_dir),
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "PUBLIC_URL": "http://ivr.test",
        "FLOW": str(ROOT / "flows" / "consent.yaml"),
        "FLOWS_DIR": str(ROOT / "flows"),
        # A webhook waits this long for PostgreSQL before it answers from the spool. A
        # loaded CI machine can stall a statement past the production 1.2 s; the outage
        # tests, which are about that deadline, set it back (test_outage.py).
        "DB_CONNECT_TIMEOUT": "10",
    }


@pytest.fixture
def app(app_config):
    """The app with a fresh schema."""
    application = create_app(app_config)
    database(application).create_all()
    yield application
    database(application).engine.dispose()


@pytest.fixture
def client(app):
    """A test client whose browser asks for English (the pages' tests check English words;
    tests/integration/test_i18n.py checks the Turkish default)."""
    c = app.test_client()
    c.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return c


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def closing_responses(app):
    """The app, with every response's body closed even when the client drops the connection
    mid-response. werkzeug's development server closes it only after writing all of it, so
    a browser that navigates away while a static file is sent left the file open (a
    ResourceWarning, which the suite turns into an error); gunicorn closes it either way."""

    def wsgi(environ, start_response):
        body = app(environ, start_response)
        try:
            yield from body
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return wsgi


class LiveServer:
    """The app built from `app_config`, served over real HTTP on 127.0.0.1 in a thread.

    Its IVR_PUBLIC_URL is the server's own address: the socket is bound before the app is
    built, so the URL that signatures are checked against is known.
    """

    def __init__(self, app_config: dict):
        self.server = make_server("127.0.0.1", 0, None, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        app_config["PUBLIC_URL"] = self.url
        self.app = create_app(app_config)
        self.server.app = closing_responses(self.app)
        database(self.app).create_all()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.thread.join(5)
        database(self.app).engine.dispose()


@pytest.fixture
def live_app(app_config):
    """An app served over real HTTP."""
    server = LiveServer(app_config).start()
    yield server
    server.stop()


@pytest.fixture
def caller(live_app):
    """A factory of simulated Twilio callers against the live server."""

    def make(**kwargs) -> Caller:
        return Caller(live_app.url, AUTH_TOKEN, http_transport(), **kwargs)

    return make


@pytest.fixture
def local_caller(app, client):
    """A factory of simulated callers against the app in-process (no socket)."""

    def make(**kwargs) -> Caller:
        return Caller(app.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(client), **kwargs)

    return make
