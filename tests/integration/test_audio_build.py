"""Building prompt audio with the offline engine: the files, the manifest, incremental runs,
failures, and the CLI. Audio is checked objectively (format, rate, level, lead-in, length).
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from click.testing import CliRunner

from ivr.adapters.audio import manifest as manifest_module
from ivr.adapters.audio.build import build
from ivr.adapters.audio.errors import AudioBuildError, EngineError
from ivr.adapters.audio.espeak_engine import EspeakEngine
from ivr.adapters.audio.manifest import MANIFEST, content_name, read_manifest
from ivr.adapters.audio.normalize import normalize
from ivr.adapters.audio.parts import Part
from ivr.adapters.audio.processing import FORMAT, AudioSegment
from ivr.cli.audio import audio
from ivr.domain.flow import load_flow
from tests.integration.conftest import require_tools
from tests.support.audio import TINY_FLOW, check_prompt_file, wav_header, write_flow

FIELDS = {"flow", "prompt_id", "language", "text", "normalized_text", "engine", "voice",
          "file", "sha256", "duration_ms", "rms_dbfs", "peak_dbfs", "built_at", "parts"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One offline build of the tiny flow (2 prompts x 2 languages), shared by the module."""
    root = tmp_path_factory.mktemp("built")
    flow = write_flow(root / "flows")
    report = build([flow], root / "audio", engine="offline", progress=False)
    return root / "audio", report


def copy_of(built, tmp_path):
    """A private copy of the shared build, for tests that change it."""
    audio_dir = tmp_path / "audio"
    shutil.copytree(built[0], audio_dir)
    return audio_dir


def files(audio_dir):
    return sorted(p.name for p in audio_dir.iterdir() if not p.name.startswith(".build"))


def test_every_prompt_in_every_language_is_rendered(built):
    audio_dir, report = built
    assert report.engine == "espeak-ng"
    assert len(report.rendered) == 4 and not report.up_to_date
    entries = read_manifest(audio_dir / MANIFEST)
    assert {(e.prompt_id, e.language) for e in entries} == {
        ("hello", "tr"), ("hello", "en"), ("bye", "tr"), ("bye", "en")}
    assert files(audio_dir) == sorted([MANIFEST] + [e.file for e in entries])


def test_files_meet_the_telephone_targets(built):
    audio_dir, _ = built
    for e in read_manifest(audio_dir / MANIFEST):
        seg = check_prompt_file(audio_dir / e.file, e.normalized_text)
        assert abs(len(seg) - e.duration_ms) <= 1


def test_mediainfo_reports_pcm_mulaw(built):
    """The same format check through pydub.utils.mediainfo, which needs ffprobe on PATH."""
    # imageio-ffmpeg ships only ffmpeg; ffprobe comes with Debian's ffmpeg.
    require_tools("ffprobe", what="the mediainfo format check")
    from pydub.utils import mediainfo

    e = read_manifest(built[0] / MANIFEST)[0]
    info = mediainfo(str(built[0] / e.file))
    assert (info["codec_name"], info["sample_rate"], info["channels"]) == ("pcm_mulaw", "8000", "1")


def test_manifest_records_text_normalisation_engine_hash_duration_and_time(built):
    audio_dir, _ = built
    doc = json.loads((audio_dir / MANIFEST).read_text(encoding="utf-8"))
    assert doc["version"] == 1
    flow = load_flow(audio_dir.parent / "flows" / "tiny.yaml")
    for item in doc["prompts"]:
        assert set(item) == FIELDS
        assert item["text"] == flow.prompts[item["prompt_id"]][item["language"]]
        assert item["engine"] == "espeak-ng"
        assert item["voice"]["voice"] == {"tr": "tr", "en": "en-us"}[item["language"]]
        assert item["duration_ms"] > 1000 and item["built_at"].endswith("+00:00")
        assert item["sha256"] == hashlib.sha256((audio_dir / item["file"]).read_bytes()).hexdigest()
        # A prompt in one language is one part: the file itself.
        [part] = item["parts"]
        assert (part["lang"], part["text"], part["normalized_text"]) == (
            item["language"], item["text"], item["normalized_text"])
        assert (part["file"], part["sha256"], part["duration_ms"]) == (
            item["file"], item["sha256"], item["duration_ms"])
    by_key = {(i["prompt_id"], i["language"]): i for i in doc["prompts"]}
    assert by_key["hello", "tr"]["normalized_text"].startswith(
        "Merhaba, altı bin altı yüz doksan sekiz sayılı")
    assert "kvkk at pronet dot com dot tee ar" in by_key["hello", "en"]["normalized_text"]


def test_file_names_are_content_hashes(built, tmp_path):
    """Same text, language, engine, voice and format: the same name in a fresh folder."""
    audio_dir, _ = built
    again = tmp_path / "again"
    build([audio_dir.parent / "flows" / "tiny.yaml"], again, engine="offline", progress=False)
    assert files(again) == files(audio_dir)
    flow = load_flow(audio_dir.parent / "flows" / "tiny.yaml")
    entry = read_manifest(again / MANIFEST)[0]
    assert entry.file == content_name(normalize(flow.prompts[entry.prompt_id][entry.language],
                                                entry.language),
                                      entry.language, "espeak-ng", entry.voice, FORMAT)


def test_second_run_synthesises_nothing(built, tmp_path):
    audio_dir = copy_of(built, tmp_path)
    before = (audio_dir / MANIFEST).stat().st_mtime_ns
    lines = []
    report = build([built[0].parent / "flows" / "tiny.yaml"], audio_dir, engine="offline",
                   progress=False, echo=lines.append)
    assert not report.rendered and len(report.up_to_date) == 4
    assert lines[-1] == "nothing to render: 4 up to date"
    assert (audio_dir / MANIFEST).stat().st_mtime_ns == before  # not even rewritten


def test_changing_one_prompt_rerenders_only_that_prompt(built, tmp_path):
    audio_dir = copy_of(built, tmp_path)
    old = {e.key: e for e in read_manifest(audio_dir / MANIFEST)}
    flow = write_flow(tmp_path / "flows", TINY_FLOW.replace(
        "Thank you for listening to us today.", "Thank you very much for listening today."))
    report = build([flow], audio_dir, engine="offline", progress=False)
    assert [(e.prompt_id, e.language) for e in report.rendered] == [("bye", "en")]
    assert len(report.up_to_date) == 3
    new = {e.key: e for e in read_manifest(audio_dir / MANIFEST)}
    changed = [k for k in new if new[k].file != old[k].file]
    assert changed == [("tiny", "bye", "en")]
    assert new["tiny", "hello", "tr"].built_at == old["tiny", "hello", "tr"].built_at
    # The old file stays: a call in progress may still be playing it.
    assert (audio_dir / old["tiny", "bye", "en"].file).exists()


def test_a_deleted_file_is_rendered_again(built, tmp_path):
    audio_dir = copy_of(built, tmp_path)
    victim = read_manifest(audio_dir / MANIFEST)[0]
    (audio_dir / victim.file).unlink()
    report = build([built[0].parent / "flows" / "tiny.yaml"], audio_dir, engine="offline",
                   progress=False)
    assert [e.key for e in report.rendered] == [victim.key]
    assert (audio_dir / victim.file).read_bytes()


def test_a_damaged_file_is_rendered_again(built, tmp_path):
    audio_dir = copy_of(built, tmp_path)
    victim = read_manifest(audio_dir / MANIFEST)[0]
    (audio_dir / victim.file).write_bytes(b"RIFF garbage")
    report = build([built[0].parent / "flows" / "tiny.yaml"], audio_dir, engine="offline",
                   progress=False)
    assert [e.key for e in report.rendered] == [victim.key]
    check_prompt_file(audio_dir / victim.file, victim.normalized_text)


class FailOn:
    """The offline engine, except that one text fails the way `how` says."""

    def __init__(self, fragment, how="error"):
        self.inner, self.fragment, self.how = EspeakEngine(), fragment, how
        self.name = self.inner.name

    def voice(self, language):
        return self.inner.voice(language)

    def synthesize(self, text, language):
        if self.fragment in text:
            if self.how == "error":
                raise EngineError("the engine broke down")
            return [Part(AudioSegment.silent(1000, frame_rate=22050), text)]
        return self.inner.synthesize(text, language)


@pytest.mark.parametrize("how, reason", [
    ("error", "the engine broke down"),
    ("silence", "the engine returned only silence"),
])
def test_a_failure_names_the_prompt_and_leaves_no_partial_file(tmp_path, how, reason):
    flow = write_flow(tmp_path / "flows")
    audio_dir = tmp_path / "audio"
    with pytest.raises(AudioBuildError) as err:
        build([flow], audio_dir, engine=FailOn("Thank you", how), progress=False)
    assert (err.value.prompt_id, err.value.language) == ("bye", "en")
    assert str(err.value) == f"prompt 'bye' (en) of flow 'tiny': {reason}"
    # The prompts rendered before the failure are kept and listed; nothing else is there.
    entries = read_manifest(audio_dir / MANIFEST)
    assert ("bye", "en") not in {(e.prompt_id, e.language) for e in entries}
    assert files(audio_dir) == sorted([MANIFEST] + [e.file for e in entries])
    assert all((audio_dir / f).stat().st_size > 0 for f in files(audio_dir))


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    flow = write_flow(tmp_path / "flows")
    audio_dir = tmp_path / "audio"

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manifest_module.os, "replace", full_disk)
    with pytest.raises(AudioBuildError, match="No space left on device"):
        build([flow], audio_dir, engine="offline", progress=False)
    assert files(audio_dir) == []


def test_building_one_flow_keeps_the_other_flows_entries(built, tmp_path):
    audio_dir = copy_of(built, tmp_path)
    other = write_flow(tmp_path / "flows", TINY_FLOW.replace("id: tiny", "id: other"),
                       name="other.yaml")
    build([other], audio_dir, engine="offline", progress=False)
    flows = {e.flow for e in read_manifest(audio_dir / MANIFEST)}
    assert flows == {"tiny", "other"}
    # With prune (the CLI without --flow), flows that are gone are dropped from the manifest.
    build([other], audio_dir, engine="offline", progress=False, prune=True)
    assert {e.flow for e in read_manifest(audio_dir / MANIFEST)} == {"other"}


def test_cli_builds_the_flows_folder_and_says_when_up_to_date(tmp_path):
    write_flow(tmp_path / "flows")
    env = {"IVR_FLOWS_DIR": str(tmp_path / "flows"), "IVR_AUDIO_DIR": str(tmp_path / "audio")}
    runner = CliRunner()
    first = runner.invoke(audio, ["build", "--engine", "offline", "--no-progress"], env=env)
    assert first.exit_code == 0, first.output
    assert "engine: offline (espeak-ng" in first.output
    assert "4 rendered, 0 up to date" in first.output
    second = runner.invoke(audio, ["build", "--engine", "offline"], env=env)
    assert second.exit_code == 0, second.output
    assert second.output.splitlines()[-1] == "nothing to render: 4 up to date"
    assert wav_header((tmp_path / "audio" / read_manifest(
        tmp_path / "audio" / MANIFEST)[0].file).read_bytes()).format_tag == 7


def test_cli_with_flow_option_and_a_bad_flow(tmp_path):
    bad = write_flow(tmp_path, "id: broken\n", name="broken.yaml")
    env = {"IVR_AUDIO_DIR": str(tmp_path / "audio")}
    result = CliRunner().invoke(audio, ["build", "--engine", "offline", "--flow", str(bad)],
                                env=env)
    assert result.exit_code == 1
    assert "broken.yaml" in result.output and "Traceback" not in result.output


def test_cli_inside_an_app_context_uses_the_app_config(tmp_path, monkeypatch, database_url):
    from ivr import create_app

    monkeypatch.delenv("IVR_AUDIO_DIR", raising=False)
    write_flow(tmp_path / "flows")
    app = create_app({"AUDIO_DIR": str(tmp_path / "app-audio"),
                      "FLOWS_DIR": str(tmp_path / "flows"),
                      "INSTANCE_DIR": str(tmp_path / "inst"),
                      "DATABASE_URL": database_url})
    with app.app_context():
        result = CliRunner().invoke(audio, ["build", "--engine", "offline", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(read_manifest(tmp_path / "app-audio" / MANIFEST)) == 4
