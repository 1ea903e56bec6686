"""Audit bodies are RFC 8785 canonical JSON: the fast encoder for plain data gives exactly
the rfc8785 package's bytes, and anything else is left to the package."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.audit.leaves import canonical

_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
_scalars = (st.none() | st.booleans() | _text
            | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
            | st.integers() | st.floats(allow_nan=False, allow_infinity=False))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_text, inner, max_size=4), max_leaves=25)


def _package(value):
    try:
        return rfc8785.dumps(value)
    except Exception as exc:  # what the package refuses, canonical refuses
        return type(exc)


def _ours(value):
    try:
        return canonical(value)
    except Exception as exc:
        return type(exc)


@settings(max_examples=600, deadline=None)
@given(_json)
def test_canonical_is_the_rfc8785_packages_bytes(value):
    assert _ours(value) == _package(value)


@pytest.mark.parametrize("value", [
    {"b": "\x00\x1f\x7f\u2028\"\\/", "a": [True, False, None, 2**53 - 1, -(2**53) + 1]},
    {"\u00e7": 1, "z": 2, "\U0001f600": 3, "\uffff": 4},
    {"n": 1.5, "e": 1e21, "s": "ğüşıöç İ"},
])
def test_edge_cases(value):
    assert canonical(value) == rfc8785.dumps(value)


def test_a_lone_surrogate_is_refused_as_the_package_refuses_it():
    assert _ours({"a": "\ud800"}) == _package({"a": "\ud800"}) != b""
