"""The rendered prompts a running server can play, kept in memory and reloaded on rebuild.

`lookup` is on the webhook hot path: it reads a dict. At most once per `check_interval`
it also stats manifest.json and the folder (a rebuild replaces the manifest, a deleted
file changes the folder's mtime) and reloads only when one of them changed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import AudioError
from .manifest import FILE_NAME, MANIFEST, read_manifest

log = logging.getLogger("ivr.audio.catalog")  # the name logs have always carried
_NEVER = ("never loaded",)
# Hex digits of a file's SHA-256 that name it in a gather URL (ivr/domain/state_token.py).
SHORT_SHA = 16


@dataclass(frozen=True)
class AudioEntry:
    """One rendered prompt file: name under audio/, SHA-256 of its bytes, length, engine."""

    file: str
    sha256: str
    duration_ms: int
    engine: str = ""


def _signature(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class AudioLibrary:
    """Prompt text to rendered file, from audio/manifest.json."""

    def __init__(self, directory: str | os.PathLike, check_interval: float = 1.0):
        self.directory = Path(directory)
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._by_text: dict[tuple[str, str, str], AudioEntry] = {}
        self._by_file: dict[str, AudioEntry] = {}
        self._by_short: dict[str, str] = {}
        self._signature: tuple | None = _NEVER
        self._next_check = 0.0
        # Grows by one at each load: what was rendered from an older set is stale.
        self.generation = 0

    def lookup(self, prompt_id: str, language: str, text: str) -> AudioEntry | None:
        """The rendered file for exactly this prompt text, or None (the caller hears <Say>)."""
        self._refresh()
        return self._by_text.get((prompt_id, language, text))

    def by_file(self, name: str) -> AudioEntry | None:
        """The manifest's entry for a file name such as '<sha256>.wav', or None."""
        self._refresh()
        return self._by_file.get(name)

    def current_generation(self) -> int:
        """`generation`, after the usual check for a rebuilt manifest."""
        self._refresh()
        return self.generation

    def full_sha(self, short: str) -> str | None:
        """The SHA-256 of a loaded file from its first SHORT_SHA hex digits, or None."""
        self._refresh()
        return self._by_short.get(short)

    def __len__(self) -> int:
        self._refresh()
        return len(self._by_text)

    def reload(self) -> None:
        """Read the manifest now, whatever the clock says."""
        with self._lock:
            self._load()

    def _refresh(self) -> None:
        if time.monotonic() < self._next_check:
            return
        # One thread checks; the others keep serving what is loaded meanwhile (before the
        # first load there is nothing to serve, so they wait for it).
        if not self._lock.acquire(blocking=self._signature == _NEVER):
            return
        try:
            self._next_check = time.monotonic() + self.check_interval
            if self._current_signature() != self._signature:
                self._load()
        finally:
            self._lock.release()

    def _current_signature(self) -> tuple:
        return (_signature(self.directory / MANIFEST), _signature(self.directory))

    def _load(self) -> None:
        signature = self._current_signature()
        by_text: dict[tuple[str, str, str], AudioEntry] = {}
        by_file: dict[str, AudioEntry] = {}
        try:
            entries = read_manifest(self.directory / MANIFEST)
        except AudioError as e:
            log.warning("audio manifest not loaded, prompts fall back to <Say>: %s", e)
            entries = []
        present = {p.name for p in self.directory.iterdir()} if self.directory.is_dir() else set()
        for m in entries:
            if not FILE_NAME.fullmatch(m.file) or m.file not in present:
                continue
            entry = AudioEntry(file=m.file, sha256=m.sha256, duration_ms=m.duration_ms,
                               engine=m.engine)
            by_text.setdefault((m.prompt_id, m.language, m.text), entry)
            by_file.setdefault(m.file, entry)
        by_short: dict[str, str | None] = {}
        for entry in by_file.values():
            short = entry.sha256[:SHORT_SHA]
            by_short[short] = entry.sha256 if by_short.get(short, entry.sha256) == entry.sha256 \
                else None  # two files share the prefix: neither is found by it
        # Swap whole dicts: a lookup running meanwhile sees the old set or the new one.
        self._by_text, self._by_file = by_text, by_file
        self._by_short = {k: v for k, v in by_short.items() if v}
        self._signature = signature
        self.generation += 1
        log.info("audio library: %d prompts from %s", len(by_text), self.directory / MANIFEST)
