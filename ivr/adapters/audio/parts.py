"""What every TTS engine shares: the piece of speech it returns, and gTTS's default URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydub import AudioSegment

DEFAULT_GTTS_URL = "https://translate.google.com/_/TranslateWebserverUi/data/batchexecute"


@dataclass(frozen=True)
class Part:
    """One piece of synthesised speech and the text it says (gTTS returns one per request)."""

    audio: AudioSegment
    text: str
