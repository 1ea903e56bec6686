"""A run's memory in its gather URL: the audio it has played (`heard`) and the notice
prompts it has played (`notice`), with each file named by the first hex digits of its
SHA-256. The next webhook expands them against the loaded audio and writes its turn in
one statement; the database checks that they equal the stored run (ivr/storage/
webhook_functions.py), so a URL that disagrees only costs the usual read."""

from __future__ import annotations

from ivr.adapters.audio.catalog import SHORT_SHA


def pack(heard: dict[str, str | None], notice: dict[str, list[dict]]) -> dict:
    """The compact memory for a state token."""
    return {"h": {p: (a[:SHORT_SHA] if a else None) for p, a in heard.items()},
            "n": {lang: [[it["prompt"], it["audio"][:SHORT_SHA] if it["audio"] else None]
                         for it in items] for lang, items in notice.items()}}


def unpack(memory: dict | None, library) -> tuple[dict, dict] | None:
    """(heard, notice) from a token's memory, or None when it is missing or names a file
    that is not loaded (then the run is read from the database)."""
    if not memory:
        return None
    try:
        heard = {}
        for prompt, short in memory["h"].items():
            heard[prompt] = _full(short, library)
        notice = {}
        for lang, items in memory["n"].items():
            notice[lang] = [{"prompt": prompt, "audio": _full(short, library)}
                            for prompt, short in items]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return heard, notice


class _Unknown(ValueError):
    pass


def _full(short: str | None, library) -> str | None:
    if short is None:
        return None
    full = library.full_sha(str(short))
    if full is None:
        raise _Unknown(short)
    return full
