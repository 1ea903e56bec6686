"""Notice versions: which exact words and audio a caller heard, as one hash."""

from __future__ import annotations

import hashlib

from .canonical import canonical_json


def notice_version(language: str, prompts: list[tuple[str, str, str | None]]) -> str:
    """SHA-256 over the exact notice text and audio played, for one language.

    The document is RFC 8785 canonical JSON, as every hashed document of the audit log."""
    doc = {"language": language,
           "prompts": [{"id": p, "text": t, "audio": a} for p, t, a in prompts]}
    return hashlib.sha256(canonical_json(doc)).hexdigest()
