"""RFC 8785 canonical JSON: the bytes every hashed document of the audit log is made of
(audit entries, notice versions)."""

from __future__ import annotations

import orjson
import rfc8785


def canonical_json(data) -> bytes:
    """RFC 8785 canonical JSON bytes.

    orjson writes exactly the RFC 8785 bytes for what audit entries hold (strings,
    booleans, None, integers within ±2^53, lists, objects with ASCII keys, sorted), many
    times faster than the rfc8785 package; anything else (floats, other keys) goes to the
    package. tests/unit/test_audit_canonical.py checks the two agree."""
    if _plain(data):
        try:
            return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # a lone surrogate: the package says what is wrong
            pass
    return rfc8785.dumps(data)


_SAFE_INT = 2**53


def _plain(value) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_SAFE_INT < value < _SAFE_INT
    if kind is dict:
        return all(type(k) is str and k.isascii() and _plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    return False
