"""Prompt audio: rendering, the manifest, and serving files to Twilio.

INTERFACE (used by the voice layer; keep it):
- init_app(app): registers the /audio blueprint and puts an AudioLibrary in
  app.extensions["ivr_audio"].
- library() -> AudioLibrary of the current app.
- AudioLibrary.lookup(prompt_id, language, text) -> AudioEntry | None: the rendered file
  for exactly this text, or None (the caller then hears <Say>).
- AudioEntry.file (file name under audio/, e.g. "<sha256>.wav"), .sha256 (hash of the
  file's bytes), .duration_ms.

The pipeline (build.build, `python -m ivr audio build`) lives in submodules that import
pydub and the engines only when used, so the web app starts without them.
"""

from __future__ import annotations

from flask import Flask, current_app

from .catalog import AudioEntry, AudioLibrary
from .errors import AudioBuildError, AudioError, EngineError, EngineUnavailable

__all__ = [
    "AudioBuildError", "AudioEntry", "AudioError", "AudioLibrary", "EngineError",
    "EngineUnavailable", "init_app", "library",
]


def library() -> AudioLibrary:
    """The current app's audio library."""
    return current_app.extensions["ivr_audio"]


def init_app(app: Flask) -> None:
    """Attach the audio library and register GET /audio/<sha256>.wav."""
    from .web import bp

    app.extensions["ivr_audio"] = AudioLibrary(
        app.config["AUDIO_DIR"], check_interval=app.config.get("AUDIO_CHECK_INTERVAL", 1.0))
    app.register_blueprint(bp)
