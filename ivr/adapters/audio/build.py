"""`audio build`: render every prompt of every flow in every language, incrementally.

A file's name is the hash of everything that shapes it (spoken text, language, engine,
voice, format), so a prompt is up to date exactly when its file exists; only new or
changed prompts are synthesised. Files are written atomically and the manifest last.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ivr.domain.flow import Flow, load_flow

from . import processing
from .engines import Choice, Engine, choose_engine
from .errors import AudioBuildError, AudioError
from .manifest import (
    MANIFEST,
    TEMP_PREFIX,
    ManifestEntry,
    atomic_write,
    content_name,
    file_sha256,
    parts_content_name,
    read_manifest,
    write_manifest,
)
from .normalize import normalize

log = logging.getLogger("ivr.audio.build")  # the name logs have always carried
LOCK_FILE = ".build.lock"


@dataclass
class BuildReport:
    """What a build did: the engine it used and why, what it rendered, what was current."""

    engine: str
    note: str
    manifest: Path
    rendered: list[ManifestEntry] = field(default_factory=list)
    up_to_date: list[ManifestEntry] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the operator, e.g. '2 rendered, 28 up to date'."""
        if not self.rendered:
            return f"nothing to render: {len(self.up_to_date)} up to date"
        return (f"{len(self.rendered)} rendered, {len(self.up_to_date)} up to date "
                f"({self.seconds:.1f} s)")


@dataclass(frozen=True)
class _PartJob:
    """One part of a prompt: its language, words, spoken form, voice and own file."""

    lang: str
    text: str
    spoken: str
    voice: dict
    file: str

    def entry(self, sha256: str, duration_ms: int) -> dict:
        """The part as the manifest lists it."""
        return {"lang": self.lang, "text": self.text, "normalized_text": self.spoken,
                "voice": self.voice, "file": self.file, "sha256": sha256,
                "duration_ms": duration_ms}


@dataclass(frozen=True)
class _Job:
    flow: str
    prompt_id: str
    language: str
    text: str
    spoken: str
    voice: dict
    file: str
    engine: str
    parts: tuple[_PartJob, ...] = ()

    @property
    def joined(self) -> bool:
        """True when the file joins several parts (each also rendered on its own)."""
        return len(self.parts) > 1

    @property
    def key(self) -> tuple[str, str, str]:
        """(flow, prompt id, language), as in the manifest."""
        return (self.flow, self.prompt_id, self.language)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _flows(flows) -> list[Flow]:
    if isinstance(flows, Mapping):
        flows = flows.values()
    if isinstance(flows, (Flow, str, os.PathLike)):
        flows = [flows]
    return [f if isinstance(f, Flow) else load_flow(f) for f in flows]


@contextlib.contextmanager
def _locked(audio_dir: Path) -> Iterator[None]:
    """One build at a time per folder (make run and make test may start together)."""
    with open(audio_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # Under the lock no other build is writing: any temp file left is from a crash.
            for stale in audio_dir.glob(TEMP_PREFIX + "*"):
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(flows: Iterable[Flow | str | os.PathLike] | Mapping[str, Flow] | Flow,
          audio_dir: str | os.PathLike, engine: str | Engine = "auto", progress: bool = True,
          *, gtts_url: str | None = None, prune: bool = False,
          echo: Callable[[str], None] | None = None) -> BuildReport:
    """Render every prompt of `flows` in every language into `audio_dir` and update the manifest.

    `engine` is "auto", "gtts", "offline" or an Engine. Entries of flows not in this build
    are kept unless `prune`. Raises AudioBuildError naming the first prompt that failed;
    what was rendered before it stays rendered and listed.
    """
    started = time.monotonic()
    say = echo or log.info
    flows = _flows(flows)
    audio_dir = Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(engine, str):
        choice = choose_engine(engine, gtts_url)
    else:
        choice = Choice(engine, f"engine: {engine.name}")
    fell_back = isinstance(engine, str) and engine == "auto" and choice.engine.name != "gtts"
    say(choice.note)
    with _locked(audio_dir):
        report = _build_locked(flows, audio_dir, choice.engine, progress, prune, fell_back)
    report.note = choice.note
    report.seconds = time.monotonic() - started
    say(report.summary())
    return report


def _part_job(part, engine: Engine) -> _PartJob:
    """A part normalised and voiced in its own language."""
    spoken = normalize(part.text, part.lang)
    if not spoken.strip():
        raise AudioError("nothing left to say after normalisation")
    voice = engine.voice(part.lang)
    name = content_name(spoken, part.lang, engine.name, voice, processing.FORMAT)
    return _PartJob(part.lang, part.text, spoken, voice, name)


def _plan(flows: list[Flow], engine: Engine) -> list[_Job]:
    jobs = []
    for flow in flows:
        for prompt_id, texts in flow.prompts.items():
            for language in flow.languages:
                try:
                    parts = tuple(_part_job(p, engine) for p in flow.parts(prompt_id, language))
                except AudioError as e:
                    raise AudioBuildError(flow.id, prompt_id, language, str(e)) from e
                spoken = " ".join(p.spoken for p in parts)
                if len(parts) == 1:
                    # One part: the file is that part's (a prompt in its own language is
                    # named exactly as before parts existed).
                    voice, name = parts[0].voice, parts[0].file
                else:
                    voice = {"parts": [p.voice for p in parts]}
                    name = parts_content_name([(p.spoken, p.lang, p.voice) for p in parts],
                                              engine.name, processing.FORMAT)
                jobs.append(_Job(flow.id, prompt_id, language, texts[language], spoken, voice,
                                 name, engine.name, parts))
    return jobs


def _current_parts(job: _Job, audio_dir: Path, old: ManifestEntry | None,
                   sha: str, duration_ms: int) -> list[dict] | None:
    """The manifest's parts of `job` when every part file is there intact, else None."""
    if not job.joined:
        return [job.parts[0].entry(sha, duration_ms)]
    known = {p["file"]: p for p in (old.parts if old else [])}
    out = []
    for part in job.parts:
        path = audio_dir / part.file
        if not path.is_file():
            return None
        part_sha = file_sha256(path)
        before = known.get(part.file)
        if before is not None and before.get("sha256") == part_sha:
            out.append(part.entry(part_sha, before["duration_ms"]))
            continue
        try:
            out.append(part.entry(part_sha, len(processing.decode_wav(path.read_bytes()))))
        except Exception:  # an unreadable part means: render again
            return None
    return out


def _current(job: _Job, path: Path, old: ManifestEntry | None) -> ManifestEntry | None:
    """The entry for `job` if its file already exists intact, without synthesising."""
    if not path.is_file():
        return None
    sha = file_sha256(path)
    if old is not None and old.file == job.file:
        if old.sha256 != sha:
            return None  # damaged or replaced: render again
        parts = _current_parts(job, path.parent, old, sha, old.duration_ms)
        if parts is None:
            return None
        return ManifestEntry(job.flow, job.prompt_id, job.language, job.text, job.spoken,
                             old.engine, job.voice, job.file, sha, old.duration_ms,
                             old.rms_dbfs, old.peak_dbfs, old.built_at, parts)
    try:
        seg = processing.decode_wav(path.read_bytes())
    except Exception:  # an unreadable file is simply rendered again
        return None
    parts = _current_parts(job, path.parent, old, sha, len(seg))
    if parts is None:
        return None
    built = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return ManifestEntry(job.flow, job.prompt_id, job.language, job.text, job.spoken,
                         job.engine, job.voice, job.file, sha, len(seg), round(seg.dBFS, 2),
                         round(seg.max_dBFS, 2), built, parts)


def _kept_production(job: _Job, old: ManifestEntry, audio_dir: Path) -> bool:
    """Under --engine auto, never replace gTTS audio with the offline voice for the same text."""
    return (old.engine == "gtts" and old.text == job.text
            and old.normalized_text == job.spoken and (audio_dir / old.file).is_file())


def _build_locked(flows: list[Flow], audio_dir: Path, engine: Engine, progress: bool,
                  prune: bool, fell_back: bool) -> BuildReport:
    manifest_path = audio_dir / MANIFEST
    try:
        old_entries = read_manifest(manifest_path)
    except AudioError as e:
        log.warning("ignoring the old manifest: %s", e)
        old_entries = []
    old = {e.key: e for e in old_entries if (audio_dir / e.file).is_file()}
    entries = dict(old)
    report = BuildReport(engine=engine.name, note="", manifest=manifest_path)
    jobs = _plan(flows, engine)

    todo: list[_Job] = []
    for job in jobs:
        previous = old.get(job.key)
        if fell_back and previous is not None and _kept_production(job, previous, audio_dir):
            report.up_to_date.append(previous)
            continue
        current = _current(job, audio_dir / job.file, previous)
        if current is None:
            todo.append(job)
        else:
            entries[job.key] = current
            report.up_to_date.append(current)

    finished = False
    try:
        _render_all(todo, audio_dir, engine, progress, entries, report)
        finished = True
    finally:
        # Every entry names a whole file that exists. After a failure the entries not
        # reached yet stay as they were; after success, prompts no longer in the built
        # flows (and with `prune`, flows not built) are dropped.
        final = entries
        if finished:
            built = {f.id for f in flows}
            wanted = {j.key for j in jobs}
            final = {k: e for k, e in entries.items()
                     if k in wanted or (k[0] not in built and not prune)}
        if _sorted(final.values()) != _sorted(old_entries):
            write_manifest(manifest_path, list(final.values()), _now())
    return report


def _sorted(entries) -> list[ManifestEntry]:
    return sorted(entries, key=lambda e: e.key)


def _render_all(todo: list[_Job], audio_dir: Path, engine: Engine, progress: bool,
                entries: dict, report: BuildReport) -> None:
    from tqdm import tqdm  # late import: the progress bar loads only for a build

    done: dict[str, ManifestEntry] = {}  # by file: prompts that say exactly the same thing

    # disable=None: tqdm shows the bar only on a terminal, so CI logs stay readable.
    with tqdm(total=len(todo), unit="prompt", desc="Rendering", file=sys.stderr,
              disable=True if not (progress and todo) else None, leave=False) as bar:
        for job in todo:
            bar.set_postfix_str(f"{job.prompt_id} ({job.language})", refresh=False)
            if job.file in done:
                same = done[job.file]
                entry = ManifestEntry(job.flow, job.prompt_id, job.language, job.text,
                                      job.spoken, same.engine, job.voice, job.file, same.sha256,
                                      same.duration_ms, same.rms_dbfs, same.peak_dbfs,
                                      same.built_at, same.parts)
            else:
                entry = _render(job, audio_dir, engine)
                done[job.file] = entry
            entries[job.key] = entry
            report.rendered.append(entry)
            bar.update(1)


def _part_file(part: _PartJob, speech: list, audio_dir: Path) -> dict:
    """A part's own file: kept when one is there already (another prompt may share the
    part, and a render need not be byte-identical twice), else rendered and written."""
    path = audio_dir / part.file
    if path.is_file():
        try:
            return part.entry(file_sha256(path), len(processing.decode_wav(path.read_bytes())))
        except Exception as e:  # unreadable: written again below
            log.warning("part file %s is unreadable, rendering it again: %s", part.file, e)
    alone = processing.render(speech)
    atomic_write(path, alone.wav)
    return part.entry(hashlib.sha256(alone.wav).hexdigest(), alone.duration_ms)


def _render(job: _Job, audio_dir: Path, engine: Engine) -> ManifestEntry:
    """Synthesise each part in its own language and voice; a joined prompt also gets a
    file per part, so each part's audio can be played and checked against its hash."""
    try:
        speech = [engine.synthesize(p.spoken, p.lang) for p in job.parts]
        result = processing.render([piece for pieces in speech for piece in pieces])
        parts = [job.parts[0].entry(hashlib.sha256(result.wav).hexdigest(), result.duration_ms)]
        if job.joined:
            parts = [_part_file(p, pieces, audio_dir) for p, pieces in zip(job.parts, speech,
                                                                           strict=True)]
        atomic_write(audio_dir / job.file, result.wav)
    except (AudioError, OSError) as e:
        raise AudioBuildError(job.flow, job.prompt_id, job.language, str(e)) from e
    return ManifestEntry(job.flow, job.prompt_id, job.language, job.text, job.spoken,
                         engine.name, job.voice, job.file, hashlib.sha256(result.wav).hexdigest(),
                         result.duration_ms, result.rms_dbfs, result.peak_dbfs, _now(), parts)
