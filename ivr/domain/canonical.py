"""RFC 8785 canonical JSON: the bytes every hashed document of the audit log is made of
(audit entries, notice versions)."""

from __future__ import annotations

import re

import orjson
import rfc8785


def canonical_json(data) -> bytes:
    """RFC 8785 canonical JSON bytes.

    orjson writes exactly the RFC 8785 bytes for what audit entries hold (strings,
    booleans, None, integers within ±2^53, lists, objects with ASCII keys, sorted), many
    times faster than the rfc8785 package; anything else (floats, other keys) goes to the
    package. tests/unit/test_audit_canonical.py checks the two agree."""
    try:
        out = orjson.dumps(data, option=_OPTIONS)
    except orjson.JSONEncodeError:  # a big integer, another type, a lone surrogate...
        return rfc8785.dumps(data)  # ...the package writes it or says what is wrong
    # What orjson may still write otherwise than RFC 8785: floats, and the order of
    # non-ASCII keys. An all-ASCII document with no float token has neither (both looked
    # for in C); anything else is walked.
    if (out.isascii() and not _FLOAT.search(out)) or _plain(data):
        return out
    return rfc8785.dumps(data)


# Integers beyond 2^53, str subclasses, dataclasses and datetimes are not written by orjson
# (the encoding fails, and the package takes them).
_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_PASSTHROUGH_SUBCLASS
            | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME)
# The start of a number with a fraction or an exponent where compact JSON puts a value
# (first, or after : , or [). It finds every float token; text inside a string may match
# too, and then the document is only walked.
_FLOAT = re.compile(rb"(?:^|[:,\[])-?[0-9]+[.eE]")


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
