"""Prompts in several languages: each part normalised and spoken in its own language, the
parts joined into one file, and the manifest listing every part with its own audio."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

import pytest

from ivr.adapters.audio.build import build
from ivr.adapters.audio.espeak_engine import EspeakEngine
from ivr.adapters.audio.manifest import MANIFEST, content_name, parts_content_name, read_manifest
from ivr.adapters.audio.normalize import normalize
from ivr.adapters.audio.processing import FORMAT
from ivr.domain.flow import load_flow
from tests.integration.conftest import ROOT
from tests.support.audio import check_prompt_file, decode, write_flow

CONSENT = ROOT / "flows" / "consent.yaml"


@pytest.fixture(scope="module")
def consent_audio(tmp_path_factory):
    """The consent flow rendered once with the offline engine."""
    audio_dir = tmp_path_factory.mktemp("consent-audio")
    build([CONSENT], audio_dir, engine="offline", progress=False)
    return audio_dir, {e.key: e for e in read_manifest(audio_dir / MANIFEST)}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_turkish_question_ends_with_an_english_part(consent_audio):
    audio_dir, entries = consent_audio
    entry = entries["kvkk-consent", "question", "tr"]
    tr, en = entry.parts
    assert tr["lang"] == "tr" and tr["voice"]["voice"] == "tr"
    assert en["lang"] == "en" and en["voice"]["voice"] == "en-us"
    assert en["text"] == "For English, press 0."
    assert en["normalized_text"] == "For English, press 0."
    assert "sıfır" not in en["normalized_text"] and "sıfır" not in entry.normalized_text
    assert entry.normalized_text.endswith("For English, press 0.")
    # Each part has its own file, named and hashed as a prompt in that language would be.
    voice_en = EspeakEngine().voice("en")
    assert en["file"] == content_name("For English, press 0.", "en", "espeak-ng", voice_en,
                                      FORMAT)
    for part in (tr, en):
        assert sha(audio_dir / part["file"]) == part["sha256"]
        assert abs(len(decode(audio_dir / part["file"])) - part["duration_ms"]) <= 1
    assert len({tr["sha256"], en["sha256"], entry.sha256}) == 3
    # The joined file holds both: longer than the Turkish part alone, by about the English.
    joined = check_prompt_file(audio_dir / entry.file, entry.normalized_text)
    assert len(joined) > tr["duration_ms"] + en["duration_ms"] // 2
    assert entry.file == parts_content_name(
        [(tr["normalized_text"], "tr", tr["voice"]), (en["normalized_text"], "en", en["voice"])],
        "espeak-ng", FORMAT)
    # Not what the Turkish voice reading the whole text would have made.
    whole_tr = normalize(load_flow(CONSENT).text("question", "tr"), "tr")
    assert "press sıfır" in whole_tr
    assert entry.file != content_name(whole_tr, "tr", "espeak-ng", tr["voice"], FORMAT)


def test_the_language_offer_in_the_turkish_greeting_is_english_audio(consent_audio):
    _audio_dir, entries = consent_audio
    tr = entries["kvkk-consent", "language_offer", "tr"]
    en = entries["kvkk-consent", "language_offer", "en"]
    [part] = tr.parts
    assert part["lang"] == "en" and "sıfır" not in tr.normalized_text
    # The same English sentence in the same English voice: the very same file.
    assert (tr.file, tr.sha256) == (en.file, en.sha256)


def test_a_one_language_prompt_is_one_part_named_as_before(consent_audio):
    _audio_dir, entries = consent_audio
    e = entries["kvkk-consent", "greeting", "tr"]
    [part] = e.parts
    assert (part["file"], part["sha256"], part["lang"]) == (e.file, e.sha256, "tr")
    assert e.file == content_name(e.normalized_text, "tr", "espeak-ng", e.voice, FORMAT)


def test_a_rebuild_with_parts_renders_nothing(consent_audio, tmp_path):
    audio_dir, entries = consent_audio
    report = build([CONSENT], audio_dir, engine="offline", progress=False)
    assert not report.rendered and len(report.up_to_date) == len(entries)


def test_a_missing_part_file_renders_the_prompt_again(consent_audio, tmp_path):
    import shutil

    audio_dir = tmp_path / "audio"
    shutil.copytree(consent_audio[0], audio_dir)
    en = consent_audio[1]["kvkk-consent", "question", "tr"].parts[1]
    (audio_dir / en["file"]).unlink()
    report = build([CONSENT], audio_dir, engine="offline", progress=False)
    assert {(e.prompt_id, e.language) for e in report.rendered} >= {("question", "tr")}
    again = {e.key: e for e in read_manifest(audio_dir / MANIFEST)}
    [part] = [p for p in again["kvkk-consent", "question", "tr"].parts if p["lang"] == "en"]
    assert part["file"] == en["file"] and sha(audio_dir / en["file"]) == part["sha256"]
    # The same part in the withdrawal question now names the same (new) bytes.
    [same] = [p for p in again["kvkk-consent", "question_withdraw", "tr"].parts
              if p["lang"] == "en"]
    assert same == part


def test_the_turkish_call_plays_the_english_offer(consent_audio, app_config, tmp_path):
    """Through the webhook: the greeting turn plays the files whose parts are English."""
    from ivr import create_app
    from ivr.adapters.simulate import Caller, flask_transport
    from ivr.web.current import database
    from tests.integration.conftest import AUTH_TOKEN

    audio_dir, entries = consent_audio
    app_config["AUDIO_DIR"] = str(audio_dir)
    app = create_app(app_config)
    database(app).create_all()
    try:
        caller = Caller(app.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(app.test_client()))
        root = ET.fromstring(caller.dial().twiml)
        played = [el.text.rsplit("/", 1)[-1] for el in root.iter("Play")]
        offer = entries["kvkk-consent", "language_offer", "tr"]
        question = entries["kvkk-consent", "question", "tr"]
        assert played[1] == offer.file and played[-1] == question.file
        assert [p["lang"] for p in question.parts] == ["tr", "en"]
    finally:
        database(app).engine.dispose()


def test_parts_in_a_flow_of_its_own(tmp_path):
    flow = write_flow(tmp_path / "flows", """\
id: mixed
languages: [tr, en]
start: hello
prompts:
  hello:
    tr:
      - {lang: tr, text: "Merhaba, 1'e basın."}
      - {lang: en, text: "For English, press 2."}
    en: "Hello, press 1."
nodes:
  hello: {type: play, prompts: [hello], next: done}
  done: {type: exit, prompts: [hello], action: hangup}
""")
    audio_dir = tmp_path / "audio"
    build([flow], audio_dir, engine="offline", progress=False)
    [e] = [e for e in read_manifest(audio_dir / MANIFEST) if e.language == "tr"]
    assert [(p["lang"], p["normalized_text"]) for p in e.parts] == [
        ("tr", "Merhaba, bire basın."), ("en", "For English, press 2.")]
    assert e.text == "Merhaba, 1'e basın. For English, press 2."
