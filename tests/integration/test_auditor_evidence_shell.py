"""The evidence ZIP's README shell steps, extracted from the README and run as written,
against every tamper vector of verification_support (the attacker also rewrites
entries.jsonl, public_key.pem, checkpoint.msg/.sig and SHA256SUMS to match)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from ..support.audit import invoke
from ..support.auditor import audio_dir, auditor, place_call, rendered_audio
from ..support.verification import TOOLS, VECTORS, Export, indented_block_after, run_script
from .conftest import ROOT, require_tools
from .test_auditor_evidence import download, open_package

__all__ = ["audio_dir", "auditor", "rendered_audio"]  # fixtures, so pytest finds them

HEADING = "CHECK WITH A SHELL"


def _is_fact(line: dict, sid: str) -> bool:
    body = json.loads(line["body"])
    return body.get("ref") == sid and not body["kind"].startswith("auditor.")


def write_package(files: dict[str, bytes], ex: Export, sid: str, trusted_pem: str,
                  folder: Path) -> None:
    """The package as the attacker hands it over, plus the controller's key beside it."""
    out = dict(files)
    out["chain/segment.jsonl"] = ex.jsonl().encode()
    out["entries.jsonl"] = "".join(json.dumps(e, ensure_ascii=False) + "\n"
                                   for e in ex.lines if _is_fact(e, sid)).encode()
    out["chain/checkpoint.json"] = (json.dumps(ex.checkpoint, indent=2) + "\n").encode()
    out["chain/checkpoint.msg"] = b"\x01" + ex.checkpoint["signed_body"].encode()
    out["chain/checkpoint.sig"] = base64.b64decode(ex.checkpoint["signature"])
    out["chain/public_key.pem"] = ex.checkpoint["public_key"].encode()
    del out["SHA256SUMS"]
    out["SHA256SUMS"] = "".join(f"{hashlib.sha256(out[n]).hexdigest()}  {n}\n"
                                for n in sorted(out)).encode()
    for name, data in out.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "controller-public.pem").write_text(trusted_pem)


def resum(folder: Path) -> None:
    """Rewrite SHA256SUMS for the files now in the package, as an attacker would."""
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                   and p.name not in ("SHA256SUMS", "controller-public.pem"))
    (folder / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in names))


@pytest.fixture
def package(app, auditor, local_caller):
    """A real evidence package of a granted consent call, with the controller's key."""
    sid = place_call(local_caller, ["1"]).call_sid
    r = download(auditor, sid)
    assert r.status_code == 200
    files = open_package(r.data, sid)
    trusted = invoke(app, "audit", "public-key").output.split("\n", 1)[1]
    segment = tuple(json.loads(x) for x in files["chain/segment.jsonl"].decode().splitlines())
    checkpoint = json.loads(files["chain/checkpoint.json"])
    return sid, files, Export(lines=segment, checkpoint=checkpoint, public_key=trusted)


def test_the_package_ships_the_published_script(package):
    _sid, files, _ex = package
    assert files["verify.sh"] == (ROOT / "docs" / "verify-with-standard-tools.sh").read_bytes()


def test_the_published_script_and_the_packaged_copy_are_equal():
    assert (ROOT / "ivr" / "web" / "auditor" / "verify_chain.sh").read_bytes() == (
        ROOT / "docs" / "verify-with-standard-tools.sh").read_bytes()


@pytest.mark.parametrize("name", list(VECTORS))
def test_the_readme_steps_fail_exactly_on_every_tamper_vector(package, tmp_path, name):
    require_tools(*TOOLS, what="the evidence README's shell steps")
    sid, files, ex = package
    steps = indented_block_after(files["README.txt"].decode(), HEADING)
    assert steps is not None and "verify.sh" in steps
    vector, accepted = VECTORS[name]
    folder = tmp_path / "package"  # tmp_path/audio is the app's own audio folder
    write_package(files, vector(ex), sid, ex.public_key, folder)
    r = run_script(steps, folder)
    out = r.stdout + r.stderr
    if accepted:
        assert r.returncode == 0, out
        assert r.stdout.splitlines()[-1] == ("OK: the package agrees with the audit log signed "
                                             "by controller-public.pem")
    else:
        assert r.returncode != 0, out
        assert "FAILED" in out and "OK: the package" not in out, out


@pytest.mark.parametrize("damage", ["entry_only_in_entries", "audio_replaced", "sums_not_updated"])
def test_the_readme_steps_catch_package_only_changes(package, tmp_path, damage):
    require_tools(*TOOLS, what="the evidence README's shell steps")
    sid, files, ex = package
    steps = indented_block_after(files["README.txt"].decode(), HEADING)
    tmp_path = tmp_path / "package"  # tmp_path/audio is the app's own audio folder
    write_package(files, ex, sid, ex.public_key, tmp_path)
    if damage == "entry_only_in_entries":
        text = (tmp_path / "entries.jsonl").read_text()
        forged = text.replace('\\"decision\\":\\"granted\\"', '\\"decision\\":\\"declined\\"')
        assert forged != text
        (tmp_path / "entries.jsonl").write_text(forged)
        resum(tmp_path)
    elif damage == "audio_replaced":
        wavs = sorted((tmp_path / "audio").glob("*.wav"))
        assert wavs, "the package should hold rendered audio"
        wavs[0].write_bytes(wavs[1].read_bytes())
        resum(tmp_path)
    else:
        seg = tmp_path / "chain" / "segment.jsonl"
        seg.write_text(seg.read_text() + "\n")
    r = run_script(steps, tmp_path)
    assert r.returncode != 0 and "FAILED" in r.stdout + r.stderr, r.stdout + r.stderr
