"""RFC 3161 time-stamps on checkpoints: the request, and the checks on a token.

Pure: no database, no Flask, no network (ivr/adapters/tsa_client.py sends the request). The
message time-stamped is a checkpoint note's signed body: its text up to and including the
body's final newline, the exact bytes the log's key signs; the request carries its SHA-256.
Tokens are kept as the DER TimeStampResp the authority answered. Trust is an argument:
the authorities' root certificates (IVR_TSA_CA_FILE, read by the caller).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import rfc3161_client
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import note
from .merkle import VerificationError

SHA256_OID = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
CONTENT_TYPE = "application/timestamp-query"


def signed_body(note_text: str) -> bytes:
    """The bytes a checkpoint's signature covers: the note's text, up to and including the
    body's final newline (no blank line, no signature line)."""
    return note.parse_note(note_text).text.encode()


def imprint(note_text: str) -> bytes:
    """SHA-256 of the note's signed body: the message imprint its token must carry."""
    return hashlib.sha256(signed_body(note_text)).digest()


@dataclass(frozen=True)
class Request:
    """A DER TimeStampReq and the nonce it carries."""

    der: bytes
    nonce: int | None
    _req: rfc3161_client.TimeStampRequest

    def verifier(self, roots: list[x509.Certificate]) -> rfc3161_client.Verifier:
        """An rfc3161-client verifier bound to this request's nonce and the given roots."""
        builder = rfc3161_client.VerifierBuilder.from_request(self._req)
        for r in roots:
            builder = builder.add_root_certificate(r)
        return builder.build()


def make_request(body: bytes) -> Request:
    """A TimeStampReq over SHA-256(body), with a nonce, asking for the TSA's certificate."""
    req = (rfc3161_client.TimestampRequestBuilder().data(body)
           .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
           .cert_request(cert_request=True).nonce(nonce=True).build())
    return Request(req.as_bytes(), req.nonce, req)


def load_roots(pem: bytes, source: str = "IVR_TSA_CA_FILE") -> list[x509.Certificate]:
    """Every certificate of a PEM bundle."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise ValueError(f"{source}: not a PEM bundle of certificates: {e}") from None
    if not certs:
        raise ValueError(f"{source}: no certificate in it")
    return certs


@dataclass(frozen=True)
class Token:
    """What a verified token says."""

    gen_time: datetime
    accuracy: timedelta
    serial: int
    policy: str
    tsa: str
    digest: bytes
    certificates: tuple[bytes, ...]  # DER, as the token carries them

    def latest(self) -> datetime:
        """The latest instant the token allows: its time plus its accuracy."""
        return self.gen_time + self.accuracy


def _accuracy(info: rfc3161_client.TimeStampTokenInfo) -> timedelta:
    try:
        acc = info.accuracy
        return timedelta(seconds=acc.seconds or 0, milliseconds=acc.millis or 0,
                         microseconds=acc.micros or 0)
    except (AttributeError, ValueError):
        return timedelta(0)


def _tsa_name(info: rfc3161_client.TimeStampTokenInfo) -> str:
    try:
        name = info.name
    except (AttributeError, ValueError):
        return ""
    value = getattr(name, "value", name)
    return value.rfc4514_string() if hasattr(value, "rfc4514_string") else str(value)


def parse(der: bytes, what: str = "time-stamp token") -> rfc3161_client.TimeStampResponse:
    """The decoded TimeStampResp; VerificationError if it is not one."""
    try:
        return rfc3161_client.decode_timestamp_response(der)
    except (ValueError, TypeError) as e:
        raise VerificationError(what, "a DER TimeStampResp (RFC 3161)",
                                f"bytes that do not parse: {str(e)[:120]}") from None


def describe(resp: rfc3161_client.TimeStampResponse) -> Token:
    """The fields of a decoded response's token."""
    info = resp.tst_info
    gen = info.gen_time
    if gen.tzinfo is None:
        gen = gen.replace(tzinfo=UTC)
    return Token(gen_time=gen, accuracy=_accuracy(info), serial=info.serial_number,
                 policy=info.policy.dotted_string, tsa=_tsa_name(info),
                 digest=info.message_imprint.message,
                 certificates=tuple(sorted(resp.signed_data.certificates)))


def digest_of(der: bytes) -> bytes:
    """The message imprint a token carries (no signature check)."""
    return describe(parse(der)).digest


def verify(der: bytes, body: bytes, roots: list[x509.Certificate], *, request: Request | None
           = None, what: str = "time-stamp token") -> Token:
    """Check a token over `body` against the authorities' roots (and the request's nonce):
    granted, over SHA-256(body), signed by a timeStamping certificate that chains to a root.
    Raises VerificationError saying what was expected and what was found."""
    resp = parse(der, what)
    if resp.status not in (0, 1):
        raise VerificationError(what, "status granted", f"PKI status {resp.status}")
    tok = describe(resp)
    if resp.tst_info.message_imprint.hash_algorithm != SHA256_OID:
        raise VerificationError(what, "a SHA-256 message imprint",
                                resp.tst_info.message_imprint.hash_algorithm.dotted_string)
    want = hashlib.sha256(body).digest()
    if tok.digest != want:
        raise VerificationError(what, f"a time-stamp over SHA-256 {want.hex()} (this "
                                "checkpoint's signed body)",
                                f"a time-stamp over {tok.digest.hex()}")
    if not roots:
        raise VerificationError(what, "authority roots to check it with", "none configured")
    if request is not None:
        verifier = request.verifier(roots)
    else:
        builder = rfc3161_client.VerifierBuilder()
        for r in roots:
            builder = builder.add_root_certificate(r)
        verifier = builder.build()
    try:
        verifier.verify(resp, want)
    except rfc3161_client.VerificationError as e:
        raise VerificationError(what, "a token signed by a time-stamping authority under "
                                "the configured roots", str(e)) from None
    return tok


def check_not_before(tok: Token, at: datetime, what: str = "time-stamp token") -> None:
    """A token cannot predate what it stamps: its time plus its accuracy must reach `at`,
    taken to the whole second (authorities state seconds)."""
    floor = at.astimezone(UTC).replace(microsecond=0)
    if tok.latest() < floor:
        raise VerificationError(what, f"a time no earlier than the checkpoint's own "
                                f"({floor.isoformat()})",
                                f"{tok.gen_time.isoformat()} "
                                f"(± {tok.accuracy.total_seconds():g} s)")


def certificate_pem(der_certs: Iterable[bytes]) -> str:
    """PEM text of DER certificates."""
    return "".join(x509.load_der_x509_certificate(d).public_bytes(
        serialization.Encoding.PEM).decode() for d in der_certs)


def chain_roots(tok: Token, roots: list[x509.Certificate]) -> list[x509.Certificate]:
    """The configured roots that issued one of the token's certificates (for the evidence
    package: the chain a third party checks the token with)."""
    issuers = {x509.load_der_x509_certificate(d).issuer for d in tok.certificates}
    return [r for r in roots if r.subject in issuers] or list(roots)
