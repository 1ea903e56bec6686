"""RFC 8785 canonical JSON: the bytes every hashed document of the audit log is made of
(audit entries, notice versions)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TypeAlias, cast

import orjson
import rfc8785

# What RFC 8785 writes: the JSON values, as the rfc8785 package types them.
JSONValue: TypeAlias = (None | bool | int | float | str | Sequence["JSONValue"]
                        | Mapping[str, "JSONValue"])


def canonical_json(data: object) -> bytes:
    """RFC 8785 canonical JSON bytes; rfc8785.CanonicalizationError for a value JSON cannot
    hold.

    orjson writes exactly the RFC 8785 bytes for what audit entries hold (strings,
    booleans, None, integers within ±2^53, lists, objects with ASCII keys, sorted), many
    times faster than the rfc8785 package; anything else (floats, other keys) goes to the
    package. tests/unit/test_audit_canonical.py checks the two agree."""
    try:
        out = orjson.dumps(data, option=_OPTIONS)
    except orjson.JSONEncodeError:  # a big integer, another type, a lone surrogate...
        return _package(data)  # ...the package writes it or says what is wrong
    # What orjson may still write otherwise than RFC 8785: floats, and the order of
    # non-ASCII keys. An all-ASCII document with no float token has neither (both looked
    # for in C); anything else is walked.
    if (out.isascii() and not _FLOAT.search(out)) or _plain(data):
        return out
    return _package(data)


def _package(data: object) -> bytes:
    # Any object may be handed over: the package checks every value's type as it writes,
    # and raises CanonicalizationError for one JSON cannot hold.
    return rfc8785.dumps(cast(JSONValue, data))


# Integers beyond 2^53, str subclasses, dataclasses and datetimes are not written by orjson
# (the encoding fails, and the package takes them).
_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_PASSTHROUGH_SUBCLASS
            | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME)
# The start of a number with a fraction or an exponent where compact JSON puts a value
# (first, or after : , or [). It finds every float token; text inside a string may match
# too, and then the document is only walked.
_FLOAT = re.compile(rb"(?:^|[:,\[])-?[0-9]+[.eE]")


_SAFE_INT = 2**53


def _plain(value: object) -> bool:
    # Exact types (`type(...) is`), not isinstance: a subclass is the package's to write.
    if value is None or type(value) is str or type(value) is bool:
        return True
    if type(value) is int:
        return -_SAFE_INT < value < _SAFE_INT
    if type(value) is dict:
        return all(type(k) is str and k.isascii() and _plain(v) for k, v in value.items())
    if type(value) is list or type(value) is tuple:
        return all(_plain(v) for v in value)
    return False
