"""C2SP tlog-cosignature (cosignature/v1) and the tlog-witness request, against the
specifications' own text and published examples (c2sp.org/tlog-cosignature,
c2sp.org/tlog-witness, and transparency-dev/formats' test values)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ivr.audit import cosignature, merkle, note
from ivr.audit import witness as protocol

ASSETS = Path(__file__).resolve().parents[1] / "assets"

# tlog-cosignature's example checkpoint and the signed message it gives for it.
SPEC_TEXT = ("example.com/behind-the-sofa\n20852163\n"
             "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
SPEC_MESSAGE = ("cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
                "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
SPEC_COSIGNATURE = ("— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5"
                    "OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==")
SPEC_LOG_SIGNATURE = ("— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurm"
                      "RDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=")


def test_signed_message_is_the_specifications_example():
    assert cosignature.signed_message(SPEC_TEXT, 1679315147) == SPEC_MESSAGE.encode()


def test_the_specifications_cosigned_checkpoint_parses_as_key_id_time_and_signature():
    n = note.parse_note(f"{SPEC_TEXT}\n{SPEC_LOG_SIGNATURE}\n{SPEC_COSIGNATURE}\n")
    cosig = n.signatures[1]
    assert cosig.name == "witness.example.com/w1"
    assert len(cosig.signature) == 8 + 64
    # The time in the cosignature is the one in the spec's signed message example.
    assert cosignature.timestamp_of(cosig) == 1679315147
    # The log's own signature is a plain Ed25519 note signature: 64 bytes, no timestamp.
    with pytest.raises(note.NoteError):
        cosignature.timestamp_of(n.signatures[0])


def test_timestamp_of_transparency_dev_vector():
    blob = base64.b64decode("ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9u"
                            "L+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==")
    sig = note.Signature("w", int.from_bytes(blob[:4], "big"), blob[4:])
    assert cosignature.timestamp_of(sig) == 1727964367


def test_a_published_type_4_vkey_parses_and_its_key_id_is_recomputed():
    c = cosignature.parse_vkey(
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
    assert (c.name, f"{c.id:08x}") == ("remora.n621.de", "da77ade7")
    assert c.vkey() == "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"


@pytest.mark.parametrize("vkey, why", [
    ("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6", "type 0x01"),
    ("remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
     "computed da77ade7"),
    ("bananas.example+12345678", r"<name>\+<hash>\+<key>"),
])
def test_vkeys_that_are_not_cosignature_v1_keys_are_refused(vkey, why):
    with pytest.raises(note.NoteError, match=why):
        cosignature.parse_vkey(vkey)


def test_cosign_then_verify_and_key_id_uses_type_4():
    key = Ed25519PrivateKey.generate()
    c = cosignature.cosigner("witness.example/w1", key)
    line = cosignature.cosign(SPEC_TEXT, c.name, key, 1700000000)
    sig = note.parse_note(f"{SPEC_TEXT}\n{line}").signatures[0]
    assert sig.hash == c.id != note.key_hash(c.name, key.public_key())
    assert cosignature.verify_cosignature(SPEC_TEXT, sig, c) == 1700000000
    # The same signature over another checkpoint (a replay) does not verify.
    other = SPEC_TEXT.replace("20852163", "20852164")
    with pytest.raises(merkle.VerificationError, match="does not verify"):
        cosignature.verify_cosignature(other, sig, c)
    # Nor with a changed time (the time is signed).
    forged = note.Signature(sig.name, sig.hash,
                            (1700000001).to_bytes(8, "big") + sig.signature[8:])
    with pytest.raises(merkle.VerificationError):
        cosignature.verify_cosignature(SPEC_TEXT, forged, c)


def test_the_specifications_add_checkpoint_request_parses():
    req = protocol.parse_request((ASSETS / "tlog_witness_spec_request.txt").read_bytes())
    assert req.old_size == 20852014 and len(req.proof) == 4
    assert req.note_text.startswith(SPEC_TEXT + "\n— example.com/behind-the-sofa ")
    # format_request writes the same layout back.
    again = protocol.format_request(req.old_size, list(req.proof), req.note_text)
    assert again == (ASSETS / "tlog_witness_spec_request.txt").read_bytes()


@pytest.mark.parametrize("body, status", [
    (b"old 01\n\nx\n", 400),
    (b"old 1\nnot-base64\n\nx\n", 400),
    (b"old 1\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\nx\n", 400),
    (b"old 1\n", 400),
])
def test_malformed_requests_are_400(body, status):
    with pytest.raises(protocol.Refusal) as e:
        protocol.parse_request(body)
    assert e.value.status == status
