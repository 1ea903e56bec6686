"""Personal data kept out of logs: phone numbers redacted in any usual shape (also
percent- or plus-encoded), request targets cut to allow-listed parameters, SIDs checked."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

# A phone number in any usual shape: +90 532 123 45 67, 0 (532) 123-45-67, 905321234567,
# 5321234567, and as it appears in a URL, percent- or plus-encoded, once or twice (a search
# URL inside a login redirect): %2B90+532+123+45+67, 0532%20123%2045%2067, (0532)%20123-45-67,
# %252B905321234567. Never inside a word, a token (after `-` or `.`: base64url, versions)
# or a percent escape, so call SIDs, hashes and run ids stay readable; right after an
# escape (`%3D0532...`) a number may start.
_ESCAPE = r"%(?:25)*"
_SEP = rf"(?:[ \-()+]|{_ESCAPE}(?:20|2[bBdD]|28|29))"
_PHONE = re.compile(
    r"(?<!%)(?<!%[0-9A-Fa-f])"
    r"(?:(?<![\w+(.\-])|(?<=%[0-9A-Fa-f]{2})|(?<=%25[0-9A-Fa-f]{2}))"
    rf"(?:\(|{_ESCAPE}28)?"
    rf"(?:(?:\+|{_ESCAPE}2[bB]|00)\d(?:{_SEP}{{0,3}}\d){{7,15}}|\d(?:{_SEP}{{0,3}}\d){{9,15}})"
    r"(?!\w)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
REDACTED = "[phone]"
# C0 controls, DEL and C1 controls, and the backslash that introduces an escape.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


def escape_controls(text: str) -> str:
    """`text` as one printable log field: each control character (C0, DEL, C1) written as
    `\\xNN`, the Unicode line and paragraph separators as `\\u2028` and `\\u2029`, and a
    backslash doubled, so no field can end a line, write a NUL byte or a terminal escape,
    or pass for an escape it is not."""
    if text.isprintable() and "\\" not in text:
        return text
    return _CONTROL.sub(_escaped, text)


def _escaped(m: re.Match[str]) -> str:
    n = ord(m.group())
    if m.group() == "\\":
        return "\\\\"
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def redact(text: str) -> str:
    """`text` with anything shaped like a phone number replaced by [phone]."""
    if not text or not any(c.isdigit() for c in text):
        return text
    return _PHONE.sub(lambda m: m.group(0) if _DATE.match(m.group(0)) else REDACTED, text)


# Query parameters whose values a request log may show: ids, steps, filters. Any other
# parameter (phone, next, s ...) is logged by name only, whatever it holds.
LOGGED_PARAMETERS = frozenset({"run", "step", "transfer", "call_sid", "decision", "since",
                               "until", "limit"})


def loggable_target(target: str) -> str:
    """A request target fit for a log: the path, and the values of allow-listed parameters."""
    path, question, query = target.partition("?")
    if not question:
        return redact(path)
    parts = []
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, _value = pair.partition("=")
        parts.append(pair if unquote_plus(name) in LOGGED_PARAMETERS else f"{name}=-")
    return redact(path + "?" + "&".join(parts))


_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")


def safe_sid(value: str | None) -> str:
    """A Twilio SID as given; anything else (a forged form can send anything) redacted."""
    if not value:
        return "-"
    return value if _SID.fullmatch(value) else redact(value[:64])
