"""Prompt audio: rendering, the manifest, and serving files to Twilio.

INTERFACE (used by the voice layer; keep it):
- ivr/web/audio_files.init_app(app): registers the /audio blueprint and puts an
  AudioLibrary in app.extensions["ivr_audio"].
- library() -> AudioLibrary of the current app.
- AudioLibrary.lookup(prompt_id, language, text) -> AudioEntry | None: the rendered file
  for exactly this text, or None (the caller then hears <Say>).
- AudioEntry.file (file name under audio/, e.g. "<sha256>.wav"), .sha256 (hash of the
  file's bytes), .duration_ms.

The pipeline (build.build, `python -m ivr audio build`) lives in submodules that import
pydub and the engines only when used, so the web app starts without them.
"""

from __future__ import annotations

from flask import current_app

from .catalog import AudioEntry, AudioLibrary
from .errors import AudioBuildError, AudioError, EngineError, EngineUnavailable

__all__ = [
    "AudioBuildError", "AudioEntry", "AudioError", "AudioLibrary", "EngineError",
    "EngineUnavailable", "library",
]


def library() -> AudioLibrary:
    """The current app's audio library."""
    return current_app.extensions["ivr_audio"]
