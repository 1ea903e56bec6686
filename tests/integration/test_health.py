"""Liveness and readiness: /readyz is 200 only with a reachable, migrated database, loaded
flows, every prompt's audio and a writable spool; otherwise 503 naming the reason."""

from __future__ import annotations

import hashlib
import io
import wave
from pathlib import Path

import pytest

from ivr import create_app
from ivr.adapters.audio.manifest import MANIFEST, ManifestEntry, write_manifest
from ivr.storage.migrate import upgrade
from ivr.web.current import database
from tests.support.auditor import login, make_user


def render_all_prompts(app) -> int:
    """A manifest and a real (silent, 8 kHz) WAV file for every prompt of every loaded flow."""
    folder = Path(app.config["AUDIO_DIR"])
    entries = []
    for flow in app.extensions["ivr_flows"].by_id.values():
        for pid, texts in flow.prompts.items():
            for lang, words in texts.items():
                buf = io.BytesIO()
                with wave.open(buf, "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(8000)
                    w.writeframes(b"\x00\x00" * 80 + words.encode()[:64].ljust(64, b"\0"))
                data = buf.getvalue()
                digest = hashlib.sha256(data).hexdigest()
                (folder / f"{digest}.wav").write_bytes(data)
                entries.append(ManifestEntry(
                    flow=flow.id, prompt_id=pid, language=lang, text=words,
                    normalized_text=words, engine="test", voice={}, file=f"{digest}.wav",
                    sha256=digest, duration_ms=14, rms_dbfs=-90.0, peak_dbfs=-90.0,
                    built_at="2026-01-01T00:00:00Z"))
    write_manifest(folder / MANIFEST, entries, "2026-01-01T00:00:00Z")
    app.extensions["ivr_audio"].reload()
    return len(entries)


def _ready(client):
    r = client.get("/readyz")
    return r.status_code, r.get_json()


def test_healthz_is_alive(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_ready_when_everything_is_there(app, client):
    assert render_all_prompts(app) > 0
    code, body = _ready(client)
    assert code == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "flows", "audio", "spool", "audit_queue",
                                   "audit_anchors"}
    assert all(v.startswith("ok") for v in body["checks"].values())


def test_missing_audio_is_not_ready(app, client):
    code, body = _ready(client)
    assert code == 503
    assert body["checks"]["audio"].startswith("missing ")
    assert "audio build" in body["checks"]["audio"]
    assert body["checks"]["database"].startswith("ok")


def test_one_deleted_prompt_file_is_not_ready(app, client):
    render_all_prompts(app)
    victim = sorted(Path(app.config["AUDIO_DIR"]).glob("*.wav"))[0]
    victim.unlink()
    app.extensions["ivr_audio"].reload()
    code, body = _ready(client)
    assert code == 503 and body["checks"]["audio"].startswith("missing ")


@pytest.fixture
def unreachable_app(app_config):
    # A closed port on this machine: the connection is refused at once.
    app_config["DATABASE_URL"] = "postgresql+psycopg://postgres@127.0.0.1:9/test"
    application = create_app(app_config)
    yield application
    database(application).engine.dispose()


def test_unreachable_database_is_not_ready_but_alive(unreachable_app):
    render_all_prompts(unreachable_app)
    client = unreachable_app.test_client()
    code, body = _ready(client)
    assert code == 503
    assert body["status"] == "not ready"
    assert body["checks"]["database"].startswith("unreachable: OperationalError")
    assert body["checks"]["audio"].startswith("ok")
    assert client.get("/healthz").status_code == 200


def test_a_schema_behind_the_code_is_not_ready(app_config):
    application = create_app(app_config)
    try:
        upgrade(application, "0001")
        render_all_prompts(application)
        code, body = _ready(application.test_client())
        assert code == 503
        assert "behind" in body["checks"]["database"]
        assert "db upgrade" in body["checks"]["database"]
        upgrade(application)
        code, body = _ready(application.test_client())
        assert code == 200, body
    finally:
        database(application).engine.dispose()


def test_an_empty_database_is_not_ready(app_config):
    application = create_app(app_config)
    try:
        code, body = _ready(application.test_client())
        assert code == 503 and body["checks"]["database"].startswith("no schema")
    finally:
        database(application).engine.dispose()


def test_an_unwritable_spool_is_not_ready(app_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    app_config["SPOOL_DIR"] = str(blocker / "spool")
    application = create_app(app_config)
    try:
        database(application).create_all()
        render_all_prompts(application)
        code, body = _ready(application.test_client())
        assert code == 503 and body["checks"]["spool"].startswith("cannot create")
    finally:
        database(application).engine.dispose()


# --- who sees the checks: operators only ---------------------------------------------

def _outsider(app, address: str = "203.0.113.9"):
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = address
    return c


@pytest.mark.parametrize("address,headers", [
    ("203.0.113.9", {}),
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}),  # a local proxy's outsider
    ("127.0.0.1", {"Forwarded": "for=203.0.113.9"}),
    ("203.0.113.9", {"Authorization": "Bearer wrong-token"}),
])
def test_an_outsider_gets_the_status_alone(app_config, address, headers):
    app_config["METRICS_TOKEN"] = "metrics-token-0123456789"
    application = create_app(app_config)
    database(application).create_all()
    try:
        c = _outsider(application, address)
        r = c.get("/readyz", headers=headers)
        assert r.status_code == 503 and r.get_json() == {"status": "not ready"}
        render_all_prompts(application)
        r = c.get("/readyz", headers=headers)
        assert r.status_code == 200 and r.get_json() == {"status": "ready"}
        assert r.headers["Cache-Control"] == "no-store"
    finally:
        database(application).engine.dispose()


def test_an_outsider_learns_nothing_of_an_unreachable_database(unreachable_app):
    r = _outsider(unreachable_app).get("/readyz")
    assert r.status_code == 503 and r.get_json() == {"status": "not ready"}
    assert b"127.0.0.1" not in r.get_data() and b"OperationalError" not in r.get_data()


def test_operators_see_the_checks(app_config):
    app_config["METRICS_TOKEN"] = "metrics-token-0123456789"
    application = create_app(app_config)
    database(application).create_all()
    try:
        token = {"Authorization": "Bearer metrics-token-0123456789"}
        assert "checks" in _outsider(application).get("/readyz", headers=token).get_json()
        admin = _outsider(application)
        assert login(admin, "root", make_user(application, "root", "admin")).status_code == 302
        assert "checks" in admin.get("/readyz").get_json()
        auditor = _outsider(application)
        assert login(auditor, "ayse", make_user(application, "ayse", "auditor")) \
            .status_code == 302
        assert "checks" not in auditor.get("/readyz").get_json()
        assert "checks" in application.test_client().get("/readyz").get_json()  # loopback
    finally:
        database(application).engine.dispose()
