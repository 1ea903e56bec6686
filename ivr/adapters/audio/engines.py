"""Speech engines: what the builder asks of one, and choosing one by name."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import AudioError, EngineError
from .parts import DEFAULT_GTTS_URL, Part

if TYPE_CHECKING:
    pass

ENGINE_CHOICES = ("auto", "gtts", "offline")


class Engine(Protocol):
    """A text-to-speech engine."""

    name: str

    def voice(self, language: str) -> dict:
        """The settings that decide how `language` sounds (part of each file's name)."""
        ...

    def synthesize(self, text: str, language: str) -> list[Part]:
        """Speech for `text`, in one or more parts; raises EngineError."""
        ...


@dataclass(frozen=True)
class Choice:
    """The engine a build uses, and for `auto` why it was chosen."""

    engine: Engine
    note: str


def gtts_url(config: dict | None = None) -> str:
    """The gTTS endpoint: config GTTS_URL, else env IVR_GTTS_URL, else Google's."""
    return ((config or {}).get("GTTS_URL") or os.environ.get("IVR_GTTS_URL")
            or DEFAULT_GTTS_URL)


def choose_engine(name: str = "auto", url: str | None = None,
                  probe_timeout: float = 2.0) -> Choice:
    """The engine for `name`: gtts, offline, or auto (gTTS if it answers quickly, else offline).

    An explicit `gtts` never falls back: its failures surface at the first prompt.
    """
    # late import: an engine's library (gTTS, espeak-ng, pydub) loads only when it is chosen
    from .espeak_engine import EspeakEngine  # late import: see above
    from .gtts_engine import GttsEngine  # late import: see above

    url = url or gtts_url()
    if name == "gtts":
        return Choice(GttsEngine(url=url), f"engine: gtts ({url})")
    if name == "offline":
        engine = EspeakEngine()
        return Choice(engine, f"engine: offline ({engine.describe()})")
    if name != "auto":
        raise AudioError(f"unknown engine '{name}' (choose from {', '.join(ENGINE_CHOICES)})")
    gtts = GttsEngine(url=url)
    problem = _probe(gtts, probe_timeout)
    if problem:
        engine = EspeakEngine()
        return Choice(engine, f"engine: offline ({engine.describe()}), because gTTS is not "
                              f"usable: {problem}")
    return Choice(gtts, f"engine: gtts ({url} answered within {probe_timeout:g} s)")


def _probe(gtts, timeout: float) -> str | None:
    """None if gTTS renders a word within `timeout`, else why not.

    The probe runs in a thread with a hard deadline: requests' timeouts do not cover a
    DNS lookup, which can hang for much longer on a machine without a network.
    """
    outcome: list[str | None] = []

    def run():
        try:
            gtts.probe(timeout=timeout)
            outcome.append(None)
        except EngineError as e:
            outcome.append(str(e))
        except Exception as e:  # any failure means "not usable"
            outcome.append(f"{type(e).__name__}: {e}")

    worker = threading.Thread(target=run, name="gtts-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer from {gtts.url} within {timeout:g} s"
