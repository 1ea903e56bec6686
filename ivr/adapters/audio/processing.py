"""Engine speech to a telephone prompt: trim, join, resample, lead-in, level, 8 kHz μ-law WAV.

pydub does the editing and the measuring; ffmpeg (the imageio-ffmpeg binary, set as pydub's
converter) does what pydub cannot do well: decoding MP3, anti-aliased resampling (pydub's
set_frame_rate folds everything above 4 kHz back into the band), and applying the gain
in floating point ahead of a look-ahead limiter, where int16 samples would clip first.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

with warnings.catch_warnings():
    # pydub looks for ffmpeg on PATH when imported and warns if it is not there; we point
    # it at imageio-ffmpeg's binary before any use, so the warning is noise.
    warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message=".*audioop.*", category=DeprecationWarning)
    from pydub import AudioSegment, silence
    from pydub.exceptions import CouldntDecodeError

from .errors import ProcessingError
from .parts import Part

SAMPLE_RATE = 8000
LEAD_IN_MS = 200
TAIL_MS = 100
TARGET_RMS_DBFS = -20.0
RMS_TOLERANCE_DB = 1.5
PEAK_MAX_DBFS = -1.0
# The limiter aims half a dB under the peak target: μ-law's coarse steps near full scale
# can add a few tenths of a dB when the result is decoded.
LIMIT_DBFS = -1.5
# Everything that shapes the output file; it is part of each file's content hash, so
# changing any of it re-renders every prompt. Bump "pipeline" when the code changes.
FORMAT = {
    "container": "wav", "codec": "pcm_mulaw", "sample_rate": SAMPLE_RATE, "channels": 1,
    "lead_in_ms": LEAD_IN_MS, "tail_ms": TAIL_MS, "rms_dbfs": TARGET_RMS_DBFS,
    "limit_dbfs": LIMIT_DBFS, "pipeline": 2,
}
# Pauses put between the parts of a prompt, by how the previous part ends.
_PAUSE_MS = {"sentence": 350, "clause": 200, "other": 120}
# Onset margin kept before speech when trimming, so soft consonants are not clipped.
_ONSET_MARGIN_MS = 30
_END_MARGIN_MS = 40
_BAND_TRIM_DB = 25.0

_ffmpeg: str | None = None


def ffmpeg() -> str:
    """Path of the bundled ffmpeg, also set as pydub's converter."""
    global _ffmpeg
    if _ffmpeg is None:
        import imageio_ffmpeg  # late import: ffmpeg is looked up only when audio is decoded

        _ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        AudioSegment.converter = _ffmpeg
    return _ffmpeg


@dataclass(frozen=True)
class Rendered:
    """A finished prompt file and what was measured in it."""

    wav: bytes
    duration_ms: int
    rms_dbfs: float
    peak_dbfs: float


def decode_mp3(data: bytes) -> AudioSegment:
    """An MP3 (gTTS's output: several streams back to back) as a mono segment."""
    ffmpeg()
    try:
        # codec= stops pydub from calling ffprobe, which imageio-ffmpeg does not ship.
        seg = AudioSegment.from_file(io.BytesIO(data), format="mp3", codec="mp3")
    except CouldntDecodeError as e:
        raise ProcessingError(f"the engine's MP3 could not be decoded: "
                              f"{str(e).strip().splitlines()[-1]}") from e
    return seg.set_channels(1)


def decode_wav(data: bytes) -> AudioSegment:
    """A rendered μ-law WAV decoded to 16-bit samples (Python's wave module refuses μ-law)."""
    ffmpeg()
    return AudioSegment.from_file(io.BytesIO(data), format="wav", codec="pcm_mulaw")


def trim(seg: AudioSegment, below_rms_db: float = 30.0) -> AudioSegment:
    """`seg` without leading and trailing silence: anything `below_rms_db` under its RMS."""
    if seg.rms == 0:
        raise ProcessingError("the engine returned only silence")
    threshold = seg.dBFS - below_rms_db
    start = silence.detect_leading_silence(seg, silence_threshold=threshold, chunk_size=5)
    end_silence = silence.detect_leading_silence(seg.reverse(), silence_threshold=threshold,
                                                 chunk_size=5)
    start = max(0, start - _ONSET_MARGIN_MS)
    end = len(seg) - max(0, end_silence - _END_MARGIN_MS)
    if end - start <= _ONSET_MARGIN_MS:
        raise ProcessingError("the engine returned only silence")
    return seg[start:end]


def _pause_after(text: str) -> int:
    end = text.rstrip()[-1:] if text.strip() else ""
    if end in ".!?;:":
        return _PAUSE_MS["sentence"]
    if end == ",":
        return _PAUSE_MS["clause"]
    return _PAUSE_MS["other"]


def join(parts: list[Part]) -> AudioSegment:
    """The parts of a prompt, each trimmed, with a pause fitting the punctuation between."""
    if not parts:
        raise ProcessingError("the engine returned no audio")
    rate = max(p.audio.frame_rate for p in parts)
    out = None
    for i, part in enumerate(parts):
        seg = trim(part.audio.set_channels(1).set_sample_width(2))
        if seg.frame_rate != rate:
            seg = resample(seg, rate)
        if out is None:
            out = seg
        else:
            pause = AudioSegment.silent(_pause_after(parts[i - 1].text), frame_rate=rate)
            out = out + pause + seg
    return out


def resample(seg: AudioSegment, rate: int = SAMPLE_RATE) -> AudioSegment:
    """`seg` at `rate` Hz, mono, through ffmpeg's anti-aliasing resampler."""
    ffmpeg()
    buf = io.BytesIO()
    seg.export(buf, format="wav", parameters=["-ar", str(rate), "-ac", "1"])
    return AudioSegment.from_wav(io.BytesIO(buf.getvalue()))


def _encode(seg: AudioSegment, gain_db: float) -> bytes:
    limit = 10 ** (LIMIT_DBFS / 20)
    chain = (f"volume={gain_db:.3f}dB,"
             f"alimiter=limit={limit:.5f}:level=false:attack=5:release=50:latency=true")
    buf = io.BytesIO()
    seg.export(buf, format="wav", codec="pcm_mulaw", parameters=[
        "-ar", str(SAMPLE_RATE), "-ac", "1", "-af", chain,
        # Same input, same bytes: no encoder tag or metadata in the file.
        "-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
    ])
    return buf.getvalue()


def render(parts: list[Part]) -> Rendered:
    """A finished 8 kHz mono μ-law WAV from engine parts, checked against the level targets."""
    ffmpeg()
    # Trim again in the telephone band: a fricative onset ("th", "f") is mostly above
    # 4 kHz, so after resampling it is near-silence and would lengthen the lead-in.
    speech = trim(resample(join(parts)), below_rms_db=_BAND_TRIM_DB)
    padded = (AudioSegment.silent(LEAD_IN_MS, frame_rate=SAMPLE_RATE) + speech
              + AudioSegment.silent(TAIL_MS, frame_rate=SAMPLE_RATE))
    gain = TARGET_RMS_DBFS - padded.dBFS
    # The limiter takes a little off loud prompts' RMS; two corrections at most bring it back.
    for _ in range(3):
        wav = _encode(padded, gain)
        out = decode_wav(wav)
        if abs(out.dBFS - TARGET_RMS_DBFS) <= RMS_TOLERANCE_DB / 3:
            break
        gain += TARGET_RMS_DBFS - out.dBFS
    if abs(out.dBFS - TARGET_RMS_DBFS) > RMS_TOLERANCE_DB or out.max_dBFS > PEAK_MAX_DBFS:
        raise ProcessingError(f"level out of range after levelling: RMS {out.dBFS:.1f} dBFS, "
                              f"peak {out.max_dBFS:.1f} dBFS")
    return Rendered(wav=wav, duration_ms=len(out), rms_dbfs=round(out.dBFS, 2),
                    peak_dbfs=round(out.max_dBFS, 2))
