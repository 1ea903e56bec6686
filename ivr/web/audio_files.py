"""GET /audio/<sha256>.wav: rendered prompts for Twilio's <Play>, cached forever by name."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from flask import Blueprint, Flask, abort, current_app, send_file

from ivr.adapters.audio import AudioLibrary, library
from ivr.adapters.audio.manifest import FILE_NAME, file_sha256

bp = Blueprint("audio", __name__)

# A name is the hash of what the file says, so its bytes never change: cache for a year.
CACHE_CONTROL = "public, max-age=31536000, immutable"

_hash_lock = threading.Lock()
# (name, inode, mtime, size) -> sha256, for files that the manifest no longer lists.
_hashes: dict[tuple, str] = {}


def _file_hash(path: Path, st: os.stat_result) -> str:
    key = (path.name, st.st_ino, st.st_mtime_ns, st.st_size)
    with _hash_lock:
        sha = _hashes.get(key)
    if sha is None:
        sha = file_sha256(path)
        with _hash_lock:
            if len(_hashes) > 4096:
                _hashes.clear()
            _hashes[key] = sha
    return sha


@bp.get("/audio/<name>")
def prompt_file(name: str):
    """One rendered prompt; 404 for any name that is not a plain <sha256>.wav file here."""
    if not FILE_NAME.fullmatch(name):
        abort(404)
    folder = Path(current_app.config["AUDIO_DIR"]).resolve()
    path = folder / name
    try:
        st = path.lstat()
    except OSError:
        abort(404)
    # A symlink could point anywhere: only regular files that live in audio/ are served.
    if not path.is_file() or path.is_symlink() or path.parent != folder:
        abort(404)
    entry = library().by_file(name)
    # The strong ETag is the SHA-256 of the bytes: what the consent record says was heard.
    etag = entry.sha256 if entry is not None else _file_hash(path, st)
    response = send_file(path, mimetype="audio/wav", conditional=True, etag=etag,
                         max_age=31536000)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


def init_app(app: Flask) -> None:
    """Attach the audio library and register GET /audio/<sha256>.wav."""
    app.extensions["ivr_audio"] = AudioLibrary(
        app.config["AUDIO_DIR"], check_interval=app.config.get("AUDIO_CHECK_INTERVAL", 1.0))
    app.register_blueprint(bp)
