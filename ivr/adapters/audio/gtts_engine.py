"""The production voice: Google Translate's speech through gTTS, with the safety gTTS lacks.

gTTS splits the text into ~100-character chunks and packages one request per chunk; we
use it for exactly that (`gTTS.get_bodies`) and send the requests ourselves, because gTTS
itself waits forever by default, never retries, turns off TLS verification, and ignores
no_proxy. Here every request has a timeout, 429/5xx are retried a bounded number of times
with exponential backoff, and an unreachable Google is one clear EngineUnavailable.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
from collections.abc import Callable

import requests
from gtts import gTTS

from .errors import EngineError, EngineUnavailable
from .parts import DEFAULT_GTTS_URL, Part
from .processing import decode_mp3

LANGUAGES = {"tr": "tr", "en": "en"}  # gTTS refuses "tr-TR"
_AUDIO = re.compile(r'jQ1olc","\[\\"(.*)\\"]')  # the same pattern gTTS reads replies with
_RETRY_STATUS = {429, 500, 502, 503, 504}


def _errno_reason(exc: BaseException) -> str:
    """The useful bit of a requests connection error ('[Errno 111] Connection refused')."""
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\][^')\]]*", text)
    if m:
        return m.group(0).strip()
    return type(exc).__name__


class GttsEngine:
    """Speech from Google Translate's TTS endpoint (overridable for tests and proxies)."""

    name = "gtts"

    def __init__(self, url: str = DEFAULT_GTTS_URL, timeout: tuple[float, float] = (5.0, 20.0),
                 retries: int = 3, backoff: float = 1.0, max_backoff: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep

    def voice(self, language: str) -> dict:
        """gTTS language and Google host: what decides the voice."""
        if language not in LANGUAGES:
            raise EngineUnavailable(f"gTTS has no voice configured for language '{language}'")
        return {"lang": LANGUAGES[language], "tld": "com", "slow": False}

    def probe(self, timeout: float = 2.0) -> None:
        """Render one short word with no retry; raise EngineError unless Google answers in time."""
        with requests.Session() as session:
            self._request(session, self._bodies("test", "en")[0][0], (timeout, timeout),
                          retries=0)

    def synthesize(self, text: str, language: str) -> list[Part]:
        """One part per gTTS chunk, in order; raise EngineError naming what went wrong."""
        lang = self.voice(language)["lang"]
        parts = []
        with requests.Session() as session:
            for body, chunk in self._bodies(text, lang):
                mp3 = self._request(session, body, self.timeout, self.retries)
                parts.append(Part(decode_mp3(mp3), chunk))
        return parts

    def _bodies(self, text: str, lang: str) -> list[tuple[str, str]]:
        """gTTS's request bodies for `text`, each with the chunk of text it carries."""
        try:
            bodies = gTTS(text, lang=lang, lang_check=False).get_bodies()
        except AssertionError as e:  # gTTS asserts on empty text
            raise EngineError(f"gTTS has nothing to say: {e}") from e
        out, pos = [], 0
        for body in bodies:
            rpc = json.loads(urllib.parse.unquote(body[len("f.req="):].rstrip("&")))
            chunk = json.loads(rpc[0][0][1])[0]
            # gTTS splits at punctuation and drops it; put it back from the original text
            # so the pause between parts can follow it.
            found = text.find(chunk, pos)
            if found >= 0:
                pos = found + len(chunk)
                if pos < len(text) and text[pos] in ".,;:!?":
                    chunk += text[pos]
            out.append((body, chunk))
        return out

    def _request(self, session: requests.Session, body: str, timeout, retries: int) -> bytes:
        """POST one chunk; retry 429/5xx with backoff; return the MP3 bytes."""
        for attempt in range(retries + 1):
            try:
                r = session.post(self.url, data=body, headers=gTTS.GOOGLE_TTS_HEADERS,
                                 timeout=timeout)
            except requests.exceptions.ConnectTimeout as e:
                raise EngineUnavailable(f"cannot reach Google TTS at {self.url}: no connection "
                                        f"within {timeout[0]:g} s") from e
            except requests.exceptions.ReadTimeout as e:
                raise EngineError(f"Google TTS at {self.url} did not answer within "
                                  f"{timeout[1]:g} s") from e
            except requests.exceptions.ConnectionError as e:
                raise EngineUnavailable(f"cannot reach Google TTS at {self.url}: "
                                        f"{_errno_reason(e)}") from e
            except requests.exceptions.RequestException as e:
                raise EngineError(f"request to Google TTS at {self.url} failed: {e}") from e
            if r.status_code in _RETRY_STATUS and attempt < retries:
                self.sleep(self._delay(attempt, r.headers.get("Retry-After")))
                continue
            if r.status_code in _RETRY_STATUS:
                what = "rate limit" if r.status_code == 429 else "server error"
                raise EngineError(f"Google TTS answered HTTP {r.status_code} ({what}) "
                                  f"{attempt + 1} time(s); gave up. Try again later")
            if r.status_code != 200:
                raise EngineError(f"Google TTS answered HTTP {r.status_code} {r.reason}")
            return self._audio(r.text)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * (2**attempt)
        if retry_after and retry_after.strip().isdigit():
            delay = max(delay, float(retry_after))
        return min(delay, self.max_backoff)

    def _audio(self, reply: str) -> bytes:
        chunks = []
        for line in reply.splitlines():
            if "jQ1olc" in line:
                m = _AUDIO.search(line)
                if not m:
                    break
                try:
                    chunks.append(base64.b64decode(m.group(1), validate=True))
                except ValueError as e:
                    raise EngineError("Google TTS sent audio that is not valid base64") from e
        if not chunks or not any(chunks):
            raise EngineError("Google TTS answered without audio (unsupported language, or the "
                              "API changed)")
        return b"".join(chunks)
