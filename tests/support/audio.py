"""Helpers for the audio tests: objective checks of a prompt file, a tiny flow, and a fake
Google TTS server on 127.0.0.1 that can answer, refuse, stall or rate-limit.

Nothing here reaches the network: the fake server speaks with espeak-ng and encodes MP3
with the bundled ffmpeg, so its replies look like Google's.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ivr.adapters.audio import processing  # imports pydub quietly and sets up ffmpeg
from ivr.adapters.audio.espeak_engine import EspeakEngine
from ivr.adapters.audio.processing import AudioSegment, silence

TINY_FLOW = """\
id: tiny
languages: [tr, en]
start: hello
prompts:
  hello:
    tr: "Merhaba, 6698 sayılı Kanun kapsamında sizi arıyoruz."
    en: "Hello, for requests write to kvkk@pronet.com.tr please."
  bye:
    tr: "Bizi dinlediğiniz için teşekkür ederiz."
    en: "Thank you for listening to us today."
nodes:
  hello: {type: play, prompts: [hello], next: done}
  done: {type: exit, prompts: [bye], action: hangup}
"""


def write_flow(folder: Path, text: str = TINY_FLOW, name: str = "tiny.yaml") -> Path:
    """A flow file in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# --- objective checks of one prompt file -------------------------------------------------

@dataclass
class WavHeader:
    format_tag: int
    channels: int
    sample_rate: int
    bits: int


def wav_header(data: bytes) -> WavHeader:
    """The fmt chunk of a RIFF/WAVE file, read byte by byte (independent of ffmpeg)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", "not a RIFF/WAVE file"
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", data[pos + 8:pos + 16])
            bits = struct.unpack("<H", data[pos + 22:pos + 24])[0]
            return WavHeader(tag, channels, rate, bits)
        pos += 8 + size + (size & 1)
    raise AssertionError("no fmt chunk")


def decode(path: Path) -> AudioSegment:
    """A μ-law prompt file decoded to 16-bit samples."""
    return processing.decode_wav(Path(path).read_bytes())


def leading_silence_ms(seg: AudioSegment) -> int:
    """Milliseconds before the first 5 ms chunk louder than -45 dBFS."""
    return silence.detect_leading_silence(seg, silence_threshold=-45.0, chunk_size=5)


def check_prompt_file(path: Path, spoken_text: str) -> AudioSegment:
    """Assert every objective target for a telephone prompt; return the decoded audio."""
    data = Path(path).read_bytes()
    header = wav_header(data)
    assert (header.format_tag, header.channels, header.sample_rate, header.bits) == (7, 1, 8000, 8)
    seg = decode(path)
    assert seg.frame_rate == 8000 and seg.channels == 1
    assert abs(seg.dBFS - (-20.0)) <= 1.5, f"RMS {seg.dBFS:.2f} dBFS"
    assert seg.max_dBFS <= -1.0, f"peak {seg.max_dBFS:.2f} dBFS"
    samples = seg.get_array_of_samples()
    assert max(abs(min(samples)), max(samples)) < 32000, "clipped samples"
    lead = leading_silence_ms(seg)
    assert 100 <= lead <= 300, f"lead-in {lead} ms"
    tail = silence.detect_leading_silence(seg.reverse(), silence_threshold=-45.0, chunk_size=5)
    speech_s = (len(seg) - lead - tail) / 1000
    rate = len(spoken_text) / speech_s
    assert 10 <= rate <= 20, f"{rate:.1f} characters/s for {len(spoken_text)} characters"
    return seg


# --- a fake Google TTS endpoint ---------------------------------------------------------

def refusing_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/batchexecute"


def speech_mp3(text: str, language: str) -> bytes:
    """MP3 at 24 kHz, like Google's, of `text` spoken by espeak-ng."""
    part = EspeakEngine().synthesize(text, language)[0].audio
    raw = part.raw_data
    cmd = [processing.ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "s16le",
           "-ar", str(part.frame_rate), "-ac", "1", "-i", "pipe:0", "-ar", "24000",
           "-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3", "pipe:1"]
    return subprocess.run(cmd, input=raw, capture_output=True, check=True).stdout


def google_reply(mp3: bytes) -> bytes:
    """A batchexecute reply carrying `mp3`, shaped like Google's."""
    payload = base64.b64encode(mp3).decode()
    line = json.dumps([["wrb.fr", "jQ1olc", json.dumps([payload]), None, None, None,
                        "generic"]], separators=(",", ":"))  # compact, as Google sends it
    return f")]}}'\n\n{len(line)}\n{line}\n25\n[[\"e\",4,null,null,141]]\n".encode()


@dataclass
class FakeGoogle:
    """A local HTTP server answering like Google's TTS endpoint, scripted per request.

    `script` is consumed one item per request: "audio", "stall", or an HTTP status code;
    when it runs out, `then` is used for every further request.
    """

    script: list = field(default_factory=list)
    then: object = "audio"
    requests: list = field(default_factory=list)
    stall_seconds: float = 5.0

    def __post_init__(self):
        self._release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                rpc = json.loads(urllib.parse.unquote(body[len("f.req="):].rstrip("&")))
                text, lang = json.loads(rpc[0][0][1])[:2]
                fake.requests.append((text, lang))
                action = fake.script.pop(0) if fake.script else fake.then
                if action == "stall":
                    fake._release.wait(fake.stall_seconds)
                    return
                if action == "audio":
                    reply = google_reply(speech_mp3(text, lang))
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                    return
                status = int(action)
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/batchexecute"

    def __enter__(self) -> FakeGoogle:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
