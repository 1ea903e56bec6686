"""The offline engine: libespeak-ng from the espeakng-loader wheel, driven through ctypes.

No network and no system package: the wheel ships the library and its voice data. The
library keeps global state and is not thread-safe, so every call holds one lock.
"""

from __future__ import annotations

import array
import ctypes
import threading

from .errors import EngineError, EngineUnavailable
from .parts import Part
from .processing import AudioSegment

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_EE_OK = 0

# The plain Turkish voice and US English, a little slower than espeak's default 175 words a
# minute: a narrow-band phone line loses consonant detail, and a slower rate makes up for it.
VOICES = {
    "tr": {"voice": "tr", "rate": 160, "pitch": 50},
    "en": {"voice": "en-us", "rate": 160, "pitch": 50},
}

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)


class _Library:
    """The loaded libespeak-ng: initialised once per process."""

    lock = threading.Lock()
    _instance: _Library | None = None

    def __init__(self):
        try:
            import espeakng_loader  # late import: optional engine; missing = EngineUnavailable

            self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data = espeakng_loader.get_data_path()
        except (ImportError, OSError, RuntimeError) as e:
            raise EngineUnavailable(f"espeak-ng cannot be loaded (pip install espeakng-loader): "
                                    f"{e}") from e
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(),
                                                 _INITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            raise EngineUnavailable(f"espeak-ng failed to initialise with data at {data}")
        self.version = lib.espeak_Info(None).decode()
        self._samples = array.array("h")
        # Keep a reference: ctypes does not, and a collected callback crashes the process.
        self._callback = _CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _Library:
        with cls.lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, count, events) -> int:
        if count > 0:
            self._samples.frombytes(ctypes.string_at(wav, count * 2))
        return 0  # 0 = go on synthesising

    def speak(self, text: str, voice: dict) -> bytes:
        """16-bit mono samples at `sample_rate` for `text` in `voice`."""
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice["voice"].encode()) != _EE_OK:
                raise EngineUnavailable(f"espeak-ng has no voice '{voice['voice']}'")
            self.lib.espeak_SetParameter(_PARAM_RATE, voice["rate"], 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, voice["pitch"], 0)
            self._samples = array.array("h")
            data = text.encode("utf-8")
            rc = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                       None, None)
            self.lib.espeak_Synchronize()
            if rc != _EE_OK:
                raise EngineError(f"espeak-ng refused the text (error {rc})")
            return self._samples.tobytes()


class EspeakEngine:
    """Offline speech with espeak-ng: robotic but intelligible, and always available."""

    name = "espeak-ng"

    def __init__(self, voices: dict[str, dict] | None = None):
        self.voices = voices or VOICES
        self._lib = _Library.get()

    def describe(self) -> str:
        """A short human description: engine and version."""
        return f"espeak-ng {self._lib.version}"

    def voice(self, language: str) -> dict:
        """The espeak voice, rate and pitch for `language`, with the library version."""
        if language not in self.voices:
            raise EngineUnavailable(f"espeak-ng has no voice configured for language "
                                    f"'{language}'")
        return {**self.voices[language], "version": self._lib.version}

    def synthesize(self, text: str, language: str) -> list[Part]:
        """The whole text in one part (espeak places its own pauses)."""
        voice = self.voice(language)
        raw = self._lib.speak(text, voice)
        if not raw:
            raise EngineError("espeak-ng produced no audio")
        seg = AudioSegment(data=raw, sample_width=2, frame_rate=self._lib.sample_rate, channels=1)
        return [Part(seg, text)]
