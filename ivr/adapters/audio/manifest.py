"""audio/manifest.json: one entry per prompt and language, and content-addressed file names."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import rfc8785

from .errors import AudioError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
FILE_NAME = re.compile(r"[0-9a-f]{64}\.wav")
TEMP_PREFIX = ".partial-"


class ManifestError(AudioError):
    """manifest.json cannot be read or does not have the expected shape."""


@dataclass(frozen=True)
class ManifestEntry:
    """One rendered prompt: what it says, how it was made, and the file that holds it."""

    flow: str
    prompt_id: str
    language: str
    text: str
    normalized_text: str
    engine: str
    voice: dict
    file: str
    sha256: str
    duration_ms: int
    rms_dbfs: float
    peak_dbfs: float
    built_at: str
    # The parts the file joins, in order, each spoken in its own language by its own
    # voice: {lang, text, normalized_text, voice, file, sha256, duration_ms}. A prompt in
    # one language has one part, the file itself.
    parts: list[dict] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        """(flow, prompt id, language): one entry per key."""
        return (self.flow, self.prompt_id, self.language)


def content_name(spoken_text: str, language: str, engine: str, voice: dict,
                 fmt: dict) -> str:
    """File name for a render: SHA-256 of the canonical JSON of everything that shapes it."""
    doc: dict[str, str | dict] = {"text": spoken_text, "language": language, "engine": engine,
                                  "voice": voice, "format": fmt}
    return hashlib.sha256(rfc8785.dumps(doc)).hexdigest() + ".wav"


def parts_content_name(parts: list[tuple[str, str, dict]], engine: str, fmt: dict) -> str:
    """File name for a prompt joined from parts [(spoken text, language, voice)]."""
    doc: dict[str, str | dict | list[dict]] = {
        "parts": [{"text": t, "language": lang, "voice": v} for t, lang, v in parts],
        "engine": engine, "format": fmt}
    return hashlib.sha256(rfc8785.dumps(doc)).hexdigest() + ".wav"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` all at once: a temporary file, fsync, then rename.

    A reader sees the old file or the new one, never a part; a failure leaves nothing.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """The entries of a manifest file; [] when there is none; ManifestError when it is bad."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: cannot read: {e}") from e
    if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION:
        raise ManifestError(f"{path}: not a version {MANIFEST_VERSION} audio manifest")
    names = {f.name for f in fields(ManifestEntry)}
    entries = []
    for i, item in enumerate(doc.get("prompts", [])):
        # A manifest written before prompts had parts lacks "parts": still readable.
        if not isinstance(item, dict) or set(item) not in (names, names - {"parts"}):
            raise ManifestError(f"{path}: prompt #{i} does not have the expected fields")
        if not FILE_NAME.fullmatch(str(item["file"])):
            raise ManifestError(f"{path}: prompt #{i} names a file that is not <sha256>.wav")
        parts = item.get("parts", [])
        if not isinstance(parts, list) or not all(
                isinstance(p, dict) and FILE_NAME.fullmatch(str(p.get("file"))) for p in parts):
            raise ManifestError(f"{path}: prompt #{i} has parts that do not name <sha256>.wav "
                                "files")
        entries.append(ManifestEntry(**item))
    return entries


def write_manifest(path: str | Path, entries: list[ManifestEntry], updated_at: str) -> None:
    """Write the manifest atomically, entries sorted for stable diffs."""
    doc = {
        "version": MANIFEST_VERSION,
        "updated_at": updated_at,
        "prompts": [asdict(e) for e in sorted(entries, key=lambda e: e.key)],
    }
    data = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    atomic_write(path, data.encode("utf-8"))
