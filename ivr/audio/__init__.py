"""Prompt audio: rendering, the manifest, and serving files to Twilio.

INTERFACE (used by the voice layer; keep it):
- init_app(app): registers the /audio blueprint and puts an AudioLibrary in
  app.extensions["ivr_audio"].
- library() -> AudioLibrary of the current app.
- AudioLibrary.lookup(prompt_id, language, text) -> AudioEntry | None: the rendered file
  for exactly this text, or None (the caller then hears <Say>).
- AudioEntry.file (file name under audio/, e.g. "<sha256>.wav"), .sha256 (hash of the
  file's bytes), .duration_ms.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app


@dataclass(frozen=True)
class AudioEntry:
    """One rendered prompt file."""

    file: str
    sha256: str
    duration_ms: int


class AudioLibrary:
    """Placeholder until the audio pipeline lands: nothing is rendered."""

    def __init__(self, directory: str):
        self.directory = directory

    def lookup(self, prompt_id: str, language: str, text: str) -> AudioEntry | None:
        """The rendered file for this prompt text, or None."""
        return None


def library() -> AudioLibrary:
    """The current app's audio library."""
    return current_app.extensions["ivr_audio"]


def init_app(app: Flask) -> None:
    """Attach the audio library."""
    app.extensions["ivr_audio"] = AudioLibrary(app.config["AUDIO_DIR"])
