"""Find the prompt file a caller heard from the hash the audit log recorded for it.

The log records the SHA-256 of the file's bytes; files are named by what shaped them
(text, voice, format), so the folder is indexed by content hash. An index entry is
reused while the file's size and modification time are unchanged.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable
from pathlib import Path

FILE_NAME = re.compile(r"[0-9a-f]{64}\.wav")
HASH = re.compile(r"[0-9a-f]{64}")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


class AudioIndex:
    """Content hash → file in one audio folder."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._seen: dict[str, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def _refresh(self) -> dict[str, str]:
        by_hash: dict[str, str] = {}
        seen: dict[str, tuple[int, int, str]] = {}
        try:
            paths = [p for p in self.directory.iterdir() if FILE_NAME.fullmatch(p.name)]
        except OSError:
            paths = []
        for p in paths:
            try:
                st = p.stat()
            except OSError:
                continue
            old = self._seen.get(p.name)
            if old and old[:2] == (st.st_size, st.st_mtime_ns):
                digest = old[2]
            else:
                try:
                    digest = file_sha256(p)
                except OSError:
                    continue
            seen[p.name] = (st.st_size, st.st_mtime_ns, digest)
            by_hash.setdefault(digest, p.name)
        self._seen = seen
        return by_hash

    def find(self, hashes: Iterable[str | None]) -> dict[str, str]:
        """The file name for each of these hashes that a file in the folder has."""
        wanted = {h for h in hashes if h and HASH.fullmatch(h)}
        if not wanted:
            return {}
        with self._lock:
            by_hash = self._refresh()
        return {h: by_hash[h] for h in wanted if h in by_hash}

    def path(self, name: str) -> Path:
        """The path of a file found by `find`."""
        return self.directory / name
