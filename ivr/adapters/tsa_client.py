"""Sending an RFC 3161 request to a time-stamp authority over HTTP (RFC 3161 §3.4): the DER
TimeStampReq POSTed as application/timestamp-query, the DER TimeStampResp back. Only the
anchoring worker calls it (ivr/services/anchoring.py), never a webhook."""

from __future__ import annotations

import requests

from ivr.audit.timestamps import CONTENT_TYPE

MAX_RESPONSE = 256 * 1024


class AuthorityUnavailable(Exception):
    """The authority did not answer with a time-stamp response: down, slow, or an HTTP error."""


def request_token(url: str, query: bytes, timeout: float) -> bytes:
    """The authority's answer to a DER TimeStampReq (unverified bytes)."""
    try:
        r = requests.post(url, data=query, timeout=timeout, stream=True,
                          headers={"Content-Type": CONTENT_TYPE,
                                   "Accept": "application/timestamp-reply"})
        body = r.raw.read(MAX_RESPONSE + 1, decode_content=True)
        r.close()
    except requests.RequestException as e:
        raise AuthorityUnavailable(f"{type(e).__name__}: {str(e)[:200]}") from e
    if r.status_code != 200:
        raise AuthorityUnavailable(f"HTTP {r.status_code}")
    if len(body) > MAX_RESPONSE:
        raise AuthorityUnavailable(f"an answer over {MAX_RESPONSE} bytes")
    return body
