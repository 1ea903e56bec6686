"""The evidence ZIP's README shell steps, extracted from a real package's README and run as
written, against Merkle tamper vectors of the package (the attacker also rewrites
SHA256SUMS); the data controller's key is given separately as controller-public.pem."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.auditor import audio_dir, auditor, place_call, rendered_audio
from tests.support.verification import (
    TOOLS,
    flip_decision,
    note_parts,
    pem,
    resigned,
    root_from_inclusion,
    run_script,
)

from .conftest import require_tools
from .test_auditor_evidence import SHELL_STEPS, download, open_package
from .test_auditor_standard_tools import public_key

__all__ = ["audio_dir", "auditor", "rendered_audio"]  # fixtures, so pytest finds them

Files = dict[str, bytes]


def _consent_index(files: Files) -> int:
    return next(int(n[len("proof/leaf-"):-len(".bin")]) for n, data in files.items()
                if n.startswith("proof/leaf-") and b'"consent.decided"' in data)


def _flip_entry(files: Files, i: int) -> None:
    lines = [json.loads(x) for x in files["entries.jsonl"].decode().splitlines()]
    for e in lines:
        if e["index"] == i:
            e["body"] = flip_decision(e["body"].encode()).decode()
    files["entries.jsonl"] = "".join(json.dumps(e, ensure_ascii=False) + "\n"
                                     for e in lines).encode()


def _path(files: Files, i: int) -> list[bytes]:
    return [bytes.fromhex(line.split()[1])
            for line in files[f"proof/path-{i}.txt"].decode().splitlines()]


def untouched(files: Files) -> Files:
    """The package as built."""
    return files


def leaf_modified(files: Files) -> Files:
    """The consent flipped in its leaf file and in entries.jsonl."""
    i = _consent_index(files)
    files[f"proof/leaf-{i}.bin"] = flip_decision(files[f"proof/leaf-{i}.bin"])
    _flip_entry(files, i)
    return files


def entries_modified(files: Files) -> Files:
    """The consent flipped in entries.jsonl only."""
    _flip_entry(files, _consent_index(files))
    return files


def leaf_file_deleted(files: Files) -> Files:
    """The consent's leaf file and its proof removed (entries.jsonl still lists it)."""
    i = _consent_index(files)
    del files[f"proof/leaf-{i}.bin"], files[f"proof/path-{i}.txt"]
    return files


def proof_hash_changed(files: Files) -> Files:
    """One bit of the consent leaf's first proof hash flipped."""
    name = f"proof/path-{_consent_index(files)}.txt"
    first, rest = files[name].decode().split("\n", 1)
    side, h = first.split()
    files[name] = f"{side} {bytes([int(h[:2], 16) ^ 1]).hex()}{h[2:]}\n{rest}".encode()
    return files


def checkpoint_resigned_key_swapped(files: Files) -> Files:
    """The consent flipped, the root it then leads to signed by the attacker's key, and the
    package's key files replaced by the attacker's."""
    leaf_modified(files)
    i = _consent_index(files)
    _text, _name, size, _root = note_parts(files["proof/checkpoint.note"].decode())
    root = root_from_inclusion(i, size, files[f"proof/leaf-{i}.bin"], _path(files, i))
    key = Ed25519PrivateKey.generate()
    note = resigned(files["proof/checkpoint.note"].decode(), key, root=root)
    text, _name, _size, _b64 = note_parts(note)
    files["proof/checkpoint.note"] = note.encode()
    files["proof/checkpoint.txt"] = text.encode()
    files["proof/checkpoint.sig"] = base64.b64decode(note.rsplit(" ", 1)[1])[4:]
    files["proof/public_key.pem"] = pem(key).encode()
    return files


def checkpoint_text_edited(files: Files) -> Files:
    """The note's tree size raised by one, its signature kept."""
    note = files["proof/checkpoint.note"].decode()
    text, _name, size, _root = note_parts(note)
    files["proof/checkpoint.note"] = note.replace(
        text, text.replace(f"\n{size}\n", f"\n{size + 1}\n", 1), 1).encode()
    return files


def package_key_swapped(files: Files) -> Files:
    """Only the package's own public key replaced."""
    files["proof/public_key.pem"] = pem(Ed25519PrivateKey.generate()).encode()
    return files


def no_leaves(files: Files) -> Files:
    """Every leaf, proof and entry removed."""
    for name in [n for n in files if n.startswith(("proof/leaf-", "proof/path-"))]:
        del files[name]
    files["entries.jsonl"] = b""
    return files


def audio_replaced(files: Files) -> Files:
    """One audio file's bytes replaced by another's, names kept."""
    wavs = sorted(n for n in files if n.startswith("audio/"))
    files[wavs[0]] = files[wavs[1]]
    return files


# name -> (vector, accepted, what the failure says)
VECTORS: dict[str, tuple[Callable[[Files], Files], bool, str]] = {
    "untouched": (untouched, True, ""),
    "leaf_modified": (leaf_modified, False, "leads to"),
    "entries_modified": (entries_modified, False, "differs from proof/leaf-"),
    "leaf_file_deleted": (leaf_file_deleted, False, "hold different leaves"),
    "proof_hash_changed": (proof_hash_changed, False, "leads to"),
    "checkpoint_resigned_key_swapped": (checkpoint_resigned_key_swapped, False,
                                        "the checkpoint is not signed by controller-public.pem"),
    "checkpoint_text_edited": (checkpoint_text_edited, False, "signature does not verify"),
    "package_key_swapped": (package_key_swapped, False,
                            "proof/public_key.pem is not the key in controller-public.pem"),
    "no_leaves": (no_leaves, False, "the package holds no leaves"),
    "audio_replaced": (audio_replaced, False, "is not the file its name says"),
}


def write_package(files: Files, trusted_pem: str | None, folder: Path, resum=True) -> None:
    """The package as the attacker hands it over (SHA256SUMS rewritten to match), plus the
    controller's key the auditor saved beside it."""
    out = dict(files)
    if resum:
        out["SHA256SUMS"] = "".join(f"{hashlib.sha256(out[n]).hexdigest()}  {n}\n"
                                    for n in sorted(out) if n != "SHA256SUMS").encode()
    for name, data in out.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    if trusted_pem is not None:
        (folder / "controller-public.pem").write_text(trusted_pem)


@pytest.fixture
def package(app, auditor, local_caller):
    """A real evidence package of a granted consent call, and the controller's key."""
    place_call(local_caller, ["2"])
    sid = place_call(local_caller, ["1"]).call_sid
    r = download(auditor, sid)
    assert r.status_code == 200
    return open_package(r.data, sid), public_key(app)


def steps(files: Files) -> str:
    """The README's shell steps, as written."""
    m = SHELL_STEPS.search(files["README.txt"].decode())
    assert m is not None
    return m.group(1)


@pytest.mark.parametrize("name", list(VECTORS))
def test_the_readme_steps_fail_exactly_on_every_tamper_vector(package, tmp_path, name):
    require_tools(*TOOLS, what="the evidence README's shell steps")
    files, trusted = package
    vector, accepted, reason = VECTORS[name]
    folder = tmp_path / "package"  # tmp_path/audio is the app's own audio folder
    write_package(vector(dict(files)), trusted, folder)
    r = run_script(steps(files), folder)
    out = r.stdout + r.stderr
    if accepted:
        assert r.returncode == 0, out
        size = json.loads(files["proof/proof.json"])["tree_size"]
        assert r.stdout.splitlines()[-1] == (f"OK: every leaf of this call is in the tree of "
                                             f"{size} leaves signed with controller-public.pem")
    else:
        assert r.returncode == 1, out
        assert "FAILED: " in r.stdout and reason in r.stdout, out
        assert "OK: " not in out


def test_the_steps_need_the_controllers_key_and_untouched_sums(package, tmp_path):
    require_tools(*TOOLS, what="the evidence README's shell steps")
    files, trusted = package
    write_package(files, None, tmp_path / "nokey")
    r = run_script(steps(files), tmp_path / "nokey")
    assert r.returncode == 1 and "save the data controller's published public key" in r.stdout
    write_package(entries_modified(dict(files)), trusted, tmp_path / "sums", resum=False)
    r = run_script(steps(files), tmp_path / "sums")
    assert r.returncode == 1 and "FAILED: a file differs from SHA256SUMS" in r.stdout
