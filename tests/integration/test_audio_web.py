"""Serving prompt files (GET /audio/<sha256>.wav) and the library the voice layer asks."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from ivr import create_app
from ivr.adapters.audio import AudioLibrary, catalog, library
from ivr.adapters.audio.build import build
from ivr.adapters.audio.manifest import MANIFEST, read_manifest
from ivr.web.current import database
from tests.support.audio import TINY_FLOW, write_flow


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The tiny flow rendered once (offline) for the module."""
    root = tmp_path_factory.mktemp("rendered")
    flow = write_flow(root / "flows")
    build([flow], root / "audio", engine="offline", progress=False)
    return root / "audio"


@pytest.fixture
def audio_dir(rendered, tmp_path):
    """A private copy of the rendered folder."""
    target = tmp_path / "audio"
    shutil.copytree(rendered, target)
    return target


@pytest.fixture
def app(audio_dir, tmp_path, database_url):
    """A production-like app (not TESTING) serving the audio; its audit sequencer off, so no
    sequencer thread outlives the test's schema."""
    application = create_app({"AUDIO_DIR": str(audio_dir), "INSTANCE_DIR": str(tmp_path / "inst"),
                              "DATABASE_URL": database_url, "AUDIO_CHECK_INTERVAL": 0,
                              "AUDIT_SEQUENCER": "off"})
    yield application
    database(application).engine.dispose()


class Client:
    """The test client, closing each response (send_file keeps the file open until then)."""

    def __init__(self, app):
        self.inner = app.test_client()

    def get(self, path, **kw):
        r = self.inner.get(path, **kw)
        r.get_data()
        r.close()
        return r


@pytest.fixture
def client(app):
    return Client(app)


@pytest.fixture
def entry(audio_dir):
    return read_manifest(audio_dir / MANIFEST)[0]


def test_serves_the_file_with_immutable_caching_and_a_strong_etag(client, audio_dir, entry):
    r = client.get(f"/audio/{entry.file}")
    assert r.status_code == 200
    assert r.mimetype == "audio/wav"
    assert r.data == (audio_dir / entry.file).read_bytes()
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    # Strong (no W/) and equal to the SHA-256 of the bytes: what the consent record holds.
    assert r.headers["ETag"] == f'"{hashlib.sha256(r.data).hexdigest()}"'
    assert r.headers["ETag"] == f'"{entry.sha256}"'


def test_if_none_match_gives_304(client, entry):
    etag = client.get(f"/audio/{entry.file}").headers["ETag"]
    r = client.get(f"/audio/{entry.file}", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.data == b""
    assert r.headers["ETag"] == etag
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    other = client.get(f"/audio/{entry.file}", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200


def test_a_file_not_in_the_manifest_is_served_with_its_own_hash(client, audio_dir, entry):
    """An older render (a call may still be playing it) is served too, hashed on demand."""
    data = (audio_dir / entry.file).read_bytes()
    orphan = "0" * 63 + "1.wav"
    (audio_dir / orphan).write_bytes(data)
    r = client.get(f"/audio/{orphan}")
    assert r.status_code == 200
    assert r.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'


@pytest.mark.parametrize("path", [
    "/audio/manifest.json",
    "/audio/.build.lock",
    "/audio/../ivr/__init__.py",
    "/audio/..%2F..%2Fetc%2Fpasswd",
    "/audio/%2e%2e%2fconfig.py",
    "/audio/..",
    "/audio/" + "a" * 64 + ".wav",           # well-formed, but no such file
    "/audio/" + "A" * 64 + ".wav",           # not lower-case hex
    "/audio/" + "a" * 63 + ".wav",
    "/audio/" + "a" * 64 + ".mp3",
    "/audio/" + "a" * 64 + ".wav.bak",
    "/audio/sub/" + "a" * 64 + ".wav",
    "/audio/",
])
def test_anything_but_a_plain_hex_named_file_here_is_404(client, path):
    assert client.get(path).status_code == 404


def test_a_symlink_out_of_the_folder_is_404(client, audio_dir, tmp_path):
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF secret")
    name = "b" * 64 + ".wav"
    os.symlink(secret, audio_dir / name)
    assert client.get(f"/audio/{name}").status_code == 404


def test_lookup_needs_exactly_the_text_and_the_file(app, audio_dir, entry):
    with app.app_context():
        lib = library()
        found = lib.lookup(entry.prompt_id, entry.language, entry.text)
        assert (found.file, found.sha256, found.duration_ms) == (entry.file, entry.sha256,
                                                                 entry.duration_ms)
        assert lib.lookup(entry.prompt_id, entry.language, entry.text + " ") is None
        assert lib.lookup(entry.prompt_id, "de", entry.text) is None
        assert lib.lookup("nope", entry.language, entry.text) is None
        (audio_dir / entry.file).unlink()
        assert lib.lookup(entry.prompt_id, entry.language, entry.text) is None


def test_lookup_notices_a_rebuilt_manifest(audio_dir, tmp_path):
    lib = AudioLibrary(audio_dir, check_interval=0)
    new_text = "Thank you very much for listening today."
    assert lib.lookup("bye", "en", new_text) is None
    flow = write_flow(tmp_path / "flows",
                      TINY_FLOW.replace("Thank you for listening to us today.", new_text))
    build([flow], audio_dir, engine="offline", progress=False)
    found = lib.lookup("bye", "en", new_text)
    assert found is not None and (audio_dir / found.file).is_file()
    assert lib.lookup("bye", "en", "Thank you for listening to us today.") is None


def test_a_missing_or_broken_manifest_means_no_audio(tmp_path):
    lib = AudioLibrary(tmp_path, check_interval=0)
    assert lib.lookup("bye", "en", "x") is None
    (tmp_path / MANIFEST).write_text("{not json")
    assert lib.lookup("bye", "en", "x") is None and len(lib) == 0


def test_lookups_are_cheap_one_stat_pair_per_interval(audio_dir, entry, monkeypatch):
    lib = AudioLibrary(audio_dir, check_interval=3600)
    assert lib.lookup(entry.prompt_id, entry.language, entry.text) is not None
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(catalog.os, "stat", lambda p, *a, **k: calls.append(p)
                        or real_stat(p, *a, **k))
    monkeypatch.setattr(catalog, "read_manifest", lambda p: pytest.fail("re-read"))
    for _ in range(1000):
        assert lib.lookup(entry.prompt_id, entry.language, entry.text) is not None
    assert calls == []
