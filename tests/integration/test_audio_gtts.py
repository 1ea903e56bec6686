"""The gTTS engine against a local fake of Google's endpoint (a real socket on 127.0.0.1):
answers, refusals, stalls, rate limits, and how `auto` chooses. No test reaches the internet.
"""

from __future__ import annotations

import time

import pytest

from ivr.adapters.audio.build import build
from ivr.adapters.audio.engines import DEFAULT_GTTS_URL, choose_engine, gtts_url
from ivr.adapters.audio.errors import AudioBuildError, EngineError, EngineUnavailable
from ivr.adapters.audio.gtts_engine import GttsEngine
from ivr.adapters.audio.manifest import MANIFEST, read_manifest
from tests.support.audio import FakeGoogle, check_prompt_file, refusing_url, write_flow


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 must never be sent through a proxy from the environment."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def engine(url, **kw):
    """A gTTS engine with short timeouts, and sleeps recorded instead of slept."""
    slept = []
    kw.setdefault("timeout", (1.0, 0.5))
    return GttsEngine(url=url, sleep=slept.append, **kw), slept


def test_renders_through_the_endpoint_one_part_per_chunk():
    text = ("Kişisel verilerinizle ilgili kısa bir bilgilendirme yapacağız. Veri sorumlusu "
            "Pronet Güvenlik Hizmetleri Anonim Şirketidir. Bu görüşme kaydedilmektedir.")
    with FakeGoogle() as google:
        gtts, _ = engine(google.url)
        parts = gtts.synthesize(text, "tr")
    assert len(parts) == len(google.requests) >= 2  # gTTS splits at ~100 characters
    assert all(lang == "tr" for _, lang in google.requests)
    assert " ".join(p.text for p in parts).split() == text.split()
    assert all(p.audio.frame_rate == 24000 and len(p.audio) > 500 for p in parts)


def test_refused_connection_is_a_clear_error_at_once():
    gtts, slept = engine(refusing_url())
    started = time.monotonic()
    with pytest.raises(EngineUnavailable, match=r"cannot reach Google TTS at http://127\.0\.0\.1"
                                                 r".*Connection refused"):
        gtts.synthesize("Merhaba.", "tr")
    assert time.monotonic() - started < 2 and slept == []


def test_a_stalled_server_times_out():
    with FakeGoogle(then="stall") as google:
        gtts, slept = engine(google.url, timeout=(1.0, 0.3))
        started = time.monotonic()
        with pytest.raises(EngineError, match=r"did not answer within 0\.3 s"):
            gtts.synthesize("Merhaba.", "tr")
        assert time.monotonic() - started < 3
    assert slept == [] and len(google.requests) == 1


def test_429_is_retried_a_bounded_number_of_times_with_backoff():
    with FakeGoogle(then=429) as google:
        gtts, slept = engine(google.url, retries=3, backoff=0.5)
        with pytest.raises(EngineError, match=r"HTTP 429 \(rate limit\) 4 time\(s\); gave up"):
            gtts.synthesize("Merhaba.", "tr")
    assert len(google.requests) == 4
    # Exponential backoff, never shorter than the server's Retry-After (1 s).
    assert slept == [1.0, 1.0, 2.0]


def test_a_5xx_then_success_recovers():
    with FakeGoogle(script=[503, 429]) as google:
        gtts, slept = engine(google.url, retries=3, backoff=0.25)
        parts = gtts.synthesize("Merhaba, hoş geldiniz.", "tr")
    assert len(parts) == 1 and len(google.requests) == 3
    assert slept == [0.25, 1.0]


def test_other_http_errors_are_not_retried():
    with FakeGoogle(then=403) as google:
        gtts, slept = engine(google.url)
        with pytest.raises(EngineError, match="HTTP 403"):
            gtts.synthesize("Merhaba.", "tr")
    assert len(google.requests) == 1 and slept == []


def test_endpoint_comes_from_config_then_environment(monkeypatch):
    monkeypatch.delenv("IVR_GTTS_URL", raising=False)
    assert gtts_url({}) == DEFAULT_GTTS_URL
    monkeypatch.setenv("IVR_GTTS_URL", "http://127.0.0.1:9/env")
    assert gtts_url({}) == "http://127.0.0.1:9/env"
    assert gtts_url({"GTTS_URL": "http://127.0.0.1:9/cfg"}) == "http://127.0.0.1:9/cfg"


def test_auto_uses_gtts_when_it_answers():
    with FakeGoogle() as google:
        choice = choose_engine("auto", google.url)
    assert choice.engine.name == "gtts" and "answered within 2 s" in choice.note


@pytest.mark.parametrize("server", ["refuse", "stall", 429])
def test_auto_falls_back_to_offline_and_says_why(server):
    if server == "refuse":
        choice = choose_engine("auto", refusing_url(), probe_timeout=0.5)
    else:
        with FakeGoogle(then=server) as google:
            started = time.monotonic()
            choice = choose_engine("auto", google.url, probe_timeout=0.5)
            assert time.monotonic() - started < 2
    assert choice.engine.name == "espeak-ng"
    assert choice.note.startswith("engine: offline (espeak-ng")
    assert "because gTTS is not usable" in choice.note


def test_explicit_gtts_fails_loudly_instead_of_falling_back(tmp_path):
    flow = write_flow(tmp_path / "flows")
    with pytest.raises(AudioBuildError, match=r"prompt 'hello' \(tr\).*cannot reach Google TTS"):
        build([flow], tmp_path / "audio", engine="gtts", gtts_url=refusing_url(),
              progress=False)
    assert not list((tmp_path / "audio").glob("*.wav"))
    assert not (tmp_path / "audio" / MANIFEST).exists()


def test_failure_in_the_middle_of_a_prompt_leaves_no_partial_file(tmp_path):
    """The first chunk arrives, the second is rate-limited for good: nothing is written."""
    flow = write_flow(tmp_path / "flows", """\
id: long
languages: [tr]
start: a
prompts:
  a:
    tr: >-
      Kişisel verilerinizle ilgili kısa bir bilgilendirme yapacağız, lütfen dinleyin.
      Bu görüşme kaydedilmektedir ve saklanacaktır.
nodes:
  a: {type: exit, prompts: [a], action: hangup}
""")
    with FakeGoogle(script=["audio"], then=500) as google:
        gtts, _ = engine(google.url, retries=1)
        with pytest.raises(AudioBuildError, match=r"prompt 'a' \(tr\).*HTTP 500"):
            build([flow], tmp_path / "audio", engine=gtts, progress=False)
    assert len(google.requests) == 3
    leftovers = [p.name for p in (tmp_path / "audio").iterdir() if p.name != ".build.lock"]
    assert leftovers == []


def test_gtts_build_end_to_end_meets_the_targets(tmp_path):
    flow = write_flow(tmp_path / "flows")
    with FakeGoogle() as google:
        report = build([flow], tmp_path / "audio", engine="gtts", gtts_url=google.url,
                       progress=False)
    assert report.engine == "gtts" and len(report.rendered) == 4
    for e in read_manifest(tmp_path / "audio" / MANIFEST):
        assert e.engine == "gtts" and e.voice == {"lang": e.language, "tld": "com", "slow": False}
        check_prompt_file(tmp_path / "audio" / e.file, e.normalized_text)


def test_auto_never_replaces_gtts_audio_with_the_offline_voice(tmp_path):
    flow = write_flow(tmp_path / "flows")
    audio_dir = tmp_path / "audio"
    with FakeGoogle() as google:
        build([flow], audio_dir, engine="gtts", gtts_url=google.url, progress=False)
    before = {e.key: e.file for e in read_manifest(audio_dir / MANIFEST)}
    # Google is now unreachable: auto falls back, but the production audio stays.
    report = build([flow], audio_dir, engine="auto", gtts_url=refusing_url(), progress=False)
    assert report.engine == "espeak-ng" and not report.rendered
    assert {e.key: e.file for e in read_manifest(audio_dir / MANIFEST)} == before
    # An explicit offline build does re-render.
    report = build([flow], audio_dir, engine="offline", progress=False)
    assert len(report.rendered) == 4


def test_each_part_of_a_prompt_is_requested_in_its_own_language(tmp_path):
    """The production voice too: the English sentence of a Turkish prompt goes to Google as
    English ('press 0', never 'press sıfır'), the Turkish sentence as Turkish."""
    flow = write_flow(tmp_path / "flows", """\
id: mixed
languages: [tr, en]
start: hello
prompts:
  hello:
    tr:
      - {lang: tr, text: "Onay için 1'e basın."}
      - {lang: en, text: "For English, press 0."}
    en: "Press 1 to consent."
nodes:
  hello: {type: play, prompts: [hello], next: done}
  done: {type: exit, prompts: [hello], action: hangup}
""")
    with FakeGoogle() as google:
        build([flow], tmp_path / "audio", engine=GttsEngine(url=google.url, timeout=(1.0, 2.0)),
              progress=False)
    assert ("For English, press 0.", "en") in google.requests
    assert ("Onay için bire basın.", "tr") in google.requests
    assert not [t for t, _lang in google.requests if "sıfır" in t]
    [entry] = [e for e in read_manifest(tmp_path / "audio" / MANIFEST) if e.language == "tr"]
    assert [(p["lang"], p["voice"]["lang"]) for p in entry.parts] == [("tr", "tr"), ("en", "en")]
