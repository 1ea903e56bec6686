"""C2SP signed notes and tlog checkpoints, against golang.org/x/mod/sumdb/note's example."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ivr.audit import note
from ivr.audit.merkle import VerificationError

# The example key and note of golang.org/x/mod/sumdb/note's documentation and tests.
SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
TEXT = ("If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n")
SIGNED = (TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgY"
          "N1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")


def test_sumdb_vector_sign_and_vkey():
    name, key = note.parse_skey(SKEY)
    assert note.verifier(name, key).vkey() == VKEY
    assert note.sign_note(TEXT, name, key) == SIGNED


def test_sumdb_vector_opens():
    v = note.parse_vkey(VKEY)
    n = note.parse_note(SIGNED)
    assert n.text == TEXT
    assert note.verify_note(n, [v]) == v


@pytest.mark.parametrize("tamper", [
    lambda s: s.replace("cryptography", "cryptographY"),
    lambda s: s.replace("x08go/", "x08gp/"),
], ids=["text changed", "signature changed"])
def test_tampered_note_fails(tamper):
    v = note.parse_vkey(VKEY)
    with pytest.raises(VerificationError, match="PeterNeumann\\+c74f20a3"):
        note.verify_note(note.parse_note(tamper(SIGNED)), [v])


def test_unknown_key_fails_and_names_both():
    other = note.verifier("PeterNeumann", Ed25519PrivateKey.generate())
    with pytest.raises(VerificationError) as e:
        note.verify_note(note.parse_note(SIGNED), [other])
    assert "unknown key" in e.value.found and f"{other.hash:08x}" in e.value.expected


@pytest.mark.parametrize("bad", [
    "no blank line\n\u2014 a AAAAAAA=\n", TEXT + "\n", TEXT + "\n- PeterNeumann AAAAAAAA\n",
    TEXT + "\n\u2014 PeterNeumann AAA\n", b"\xff\xfe\n\n- x AAAAAAAA\n",
])
def test_malformed_notes(bad):
    with pytest.raises(note.NoteError):
        note.parse_note(bad)


@pytest.mark.parametrize("vkey", [
    "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "Peter+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20a3",
])
def test_bad_vkeys(vkey):
    with pytest.raises(note.NoteError):
        note.parse_vkey(vkey)


def test_checkpoint_round_trip():
    key = Ed25519PrivateKey.generate()
    cp = note.Checkpoint("ivr.test/audit-log", 8, bytes(range(32)))
    assert cp.text() == f"ivr.test/audit-log\n8\n{base64.b64encode(bytes(range(32))).decode()}\n"
    signed = note.sign_checkpoint(cp, "ivr.test/audit-log", key)
    v = note.verifier("ivr.test/audit-log", key)
    assert note.open_checkpoint(signed, [v], origin="ivr.test/audit-log") == cp
    with pytest.raises(VerificationError, match="origin"):
        note.open_checkpoint(signed, [v], origin="elsewhere")
    forged = signed.replace("\n8\n", "\n9\n")
    with pytest.raises(VerificationError, match="signature does not verify"):
        note.open_checkpoint(forged, [v])


@pytest.mark.parametrize("text", [
    "origin\n08\nAAAA\n", "origin\n8\n", "\n8\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    "origin\n8\nAAAA\n", "origin\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
])
def test_malformed_checkpoints(text):
    with pytest.raises(note.NoteError):
        note.parse_checkpoint(text)
