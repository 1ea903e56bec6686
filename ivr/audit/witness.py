"""The C2SP tlog-witness `add-checkpoint` protocol: the request body, and the witness's checks
in the order and with the status codes the specification gives.

Pure: no network, no files. The request body is an old size line (`old N`), zero to 63
consistency proof lines (base64 hashes), an empty line, then the signed checkpoint note. The
witness answers 404 for an unknown origin; 403 when no trusted log key signed the note, or a
trusted key's signature fails; 400 for a malformed request or an old size above the
checkpoint's; 409 with its own size (text/x.tlog.size) when the old size is not the size it
last cosigned; 422 for a size-0 checkpoint whose root is not the empty tree's, a proof with
an old size of 0, a consistency proof that does not verify, or equal sizes with different
roots. Otherwise it cosigns (ivr/audit/cosignature.py) and records the new size and root.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature

from . import merkle, note

MAX_PROOF = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD = re.compile(r"old (0|[1-9][0-9]*)")


class Refusal(Exception):
    """The witness does not cosign: an HTTP status and why (409 carries the known size)."""

    def __init__(self, status: int, reason: str, known_size: int | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.known_size = known_size


def format_request(old_size: int, proof: list[bytes], checkpoint_note: str) -> bytes:
    """The body of an add-checkpoint request."""
    lines = [f"old {old_size}", *(base64.b64encode(h).decode() for h in proof)]
    return ("".join(f"{x}\n" for x in lines) + "\n" + checkpoint_note).encode()


@dataclass(frozen=True)
class Request:
    """A parsed add-checkpoint request."""

    old_size: int
    proof: tuple[bytes, ...]
    note_text: str


def parse_request(body: bytes) -> Request:
    """Split an add-checkpoint body; Refusal(400) when it is malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "the request is not UTF-8") from None
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise Refusal(400, "the request has no empty line before the checkpoint")
    lines = head.split("\n")
    m = _OLD.fullmatch(lines[0])
    if m is None:
        raise Refusal(400, f"the first line is not 'old <size>': {lines[0][:40]!r}")
    if len(lines) - 1 > MAX_PROOF:
        raise Refusal(400, f"more than {MAX_PROOF} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except binascii.Error:
            h = b""
        if len(h) != merkle.HASH_SIZE:
            raise Refusal(400, f"a consistency proof line is not a base64 hash: {line[:50]!r}")
        proof.append(h)
    return Request(int(m.group(1)), tuple(proof), checkpoint)


def open_trusted(note_text: str, logs: dict[str, list[note.Verifier]]
                 ) -> tuple[note.Note, note.Checkpoint]:
    """The note and checkpoint, if a trusted key of its origin signed it: 400 if it is not a
    checkpoint note, 404 for an unknown origin, 403 for no trusted signature or a trusted
    key's signature that fails (signatures of unknown keys are ignored)."""
    try:
        n = note.parse_note(note_text)
        cp = note.parse_checkpoint(n.text)
    except note.NoteError as e:
        raise Refusal(400, f"not a signed checkpoint: {e}") from None
    keys = logs.get(cp.origin)
    if keys is None:
        raise Refusal(404, f"unknown log origin {cp.origin!r}")
    known = {(v.name, v.hash): v for v in keys}
    good = False
    for s in n.signatures:
        v = known.get((s.name, s.hash))
        if v is None:
            continue
        try:
            v.key.verify(s.signature, n.text.encode())
        except InvalidSignature:
            raise Refusal(403, f"the signature of {s.name}+{s.hash:08x} does not "
                          "verify") from None
        good = True
    if not good:
        raise Refusal(403, f"no signature by a trusted key of {cp.origin!r}")
    return n, cp


def check(req: Request, cp: note.Checkpoint, known_size: int, known_root: bytes | None) -> None:
    """The consistency checks against the latest checkpoint cosigned for this origin
    (`known_size` 0 and `known_root` None if none)."""
    if req.old_size > cp.size:
        raise Refusal(400, f"old size {req.old_size} is above the checkpoint's {cp.size}")
    if req.old_size != known_size:
        raise Refusal(409, f"old size {req.old_size} is not the size last cosigned, "
                      f"{known_size}", known_size)
    if cp.size == 0 and cp.root != merkle.EMPTY_ROOT:
        raise Refusal(422, "a checkpoint of size 0 must have the empty tree's root")
    if req.old_size == 0:
        if req.proof:
            raise Refusal(422, "a proof from size 0 must be empty")
        return
    if req.old_size == cp.size:
        if req.proof or cp.root != known_root:
            raise Refusal(422, f"size {cp.size} again, with another root or a proof")
        return
    if known_root is None:  # the caller broke the rule above: a size, but no root
        raise ValueError(f"size {known_size} was cosigned, but its root is not given")
    try:
        merkle.verify_consistency(req.old_size, cp.size, known_root, cp.root, list(req.proof))
    except merkle.VerificationError as e:
        raise Refusal(422, f"the consistency proof does not verify: {e}") from None
