"""The web pages in Turkish (the default) and English: Flask-Babel, each request's language,
and the switch that stores a user's choice on their account.

The language of a request:
- a logged-in user: the language stored on their account (users.language), Turkish if none;
- before login: `?lang=tr|en` (the login form carries it on), else the browser's
  Accept-Language, else Turkish.
Dates stay written 30.11.2026 and times in Europe/Istanbul in both languages.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, redirect, request, url_for
from flask_babel import Babel, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ivr.storage.db import session as db_session

from .auditor.access import transaction
from .auditor.login import current_user, safe_next
from .auditor.roles import ROLE_NAMES as ROLES

LANGUAGES = {"tr": "Türkçe", "en": "English"}
DEFAULT = "tr"

# Stored codes as the pages name them (the roles' names live in roles.py). English shows
# the code itself, as the pages always have (tests and auditors match on it); Turkish shows
# the team's own words.
DECISIONS = {"granted": _l("granted"), "declined": _l("declined"), "no_input": _l("no_input"),
             "withdrawn": _l("withdrawn")}
ORIGINS = {"inbound": _l("inbound"), "transfer": _l("transfer"), "api": _l("api")}
TRANSFER_STATUSES = {"requested": _l("requested"), "in_flow": _l("in_flow"),
                     "decided": _l("decided"), "returned": _l("returned"),
                     "failed": _l("failed")}
DIFF_STATES = {"added": _l("added"), "removed": _l("removed"), "changed": _l("changed"),
               "same": _l("same")}

babel = Babel()
bp = Blueprint("i18n", __name__)


def chosen(value: object) -> str | None:
    """A supported language code from a form or query value, or None."""
    return value if isinstance(value, str) and value in LANGUAGES else None


def select_locale() -> str:
    """The language of this request (see the module's docstring)."""
    user = current_user()
    if user is not None:
        return chosen(user.language) or DEFAULT
    return (chosen(request.values.get("lang"))
            or request.accept_languages.best_match(list(LANGUAGES))
            or DEFAULT)


def current_language() -> str:
    """The language code the current request is rendered in."""
    return str(get_locale() or DEFAULT)


@bp.post("/language")
def switch():
    """Store the chosen language on the logged-in user's account; then back to the page."""
    lang = chosen(request.form.get("lang"))
    user = current_user()
    target = safe_next(request.form.get("next"), user)
    if user is None:
        # Before login there is no account to store it on: the login page keeps it in its URL.
        return redirect(url_for("auth.login", lang=lang, next=request.form.get("next") or None)
                        if lang else target)
    if lang is not None and lang != user.language:
        s = db_session()
        with transaction(s):
            user.language = lang
            s.add(user)
    return redirect(target)


def name_of(table: dict, code: object) -> str:
    """A stored code in the page's language; an unknown code as it is."""
    return str(table[code]) if code in table else ("" if code is None else str(code))


# The search form's field errors come from code the JSON API shares (and keeps in English);
# the pages show them through this table.
FORM_ERRORS = {
    "not a phone number (try +905321234567 or 0532 123 45 67)":
        _l("not a phone number (try +905321234567 or 0532 123 45 67)"),
    "a CallSid is letters and digits only (CA followed by 32 hex digits)":
        _l("a CallSid is letters and digits only (CA followed by 32 hex digits)"),
    "must not be before the start date": _l("must not be before the start date"),
    "call or consent": _l("call or consent"),
    "calls without a decision have no consent to match consent criteria or consent days":
        _l("calls without a decision have no consent to match consent criteria or consent days"),
    "too long": _l("too long"),
    "not a date (YYYY-MM-DD)": _l("not a date (YYYY-MM-DD)"),
}


def form_error(message: object) -> str:
    """A field error of a shared validator in the page's language (unknown ones as they are)."""
    text = "" if message is None else str(message)
    if text in FORM_ERRORS:
        return str(FORM_ERRORS[text])
    if text.startswith("one of "):
        return _("one of %(choices)s", choices=text[len("one of "):])
    return text


# A call's timeline is described in English by the code the CLI, the API and the evidence
# package share (ivr/timeline.py). The call page puts each title, and each " · " or "; "
# separated piece of a detail, through these patterns; a piece none matches stays as it is.
TITLES = [
    (re.compile(r"Call started"), lambda m: _("Call started")),
    (re.compile(r"Key pressed: (.*)"), lambda m: _("Key pressed: %(keys)s", keys=m[1])),
    (re.compile(r"No key pressed \(timeout\)"), lambda m: _("No key pressed (timeout)")),
    (re.compile(r"Caller hung up"), lambda m: _("Caller hung up")),
    (re.compile(r"Prompts played"), lambda m: _("Prompts played")),
    (re.compile(r"Notice part played \((.*?)\): (.*)"),
     lambda m: _("Notice part played (%(language)s): %(parts)s", language=m[1], parts=m[2])),
    (re.compile(r"Decision: (.*)"),
     lambda m: _("Decision: %(decision)s", decision=name_of(DECISIONS, m[1]))),
    (re.compile(r"Call status: (.*)"), lambda m: _("Call status: %(status)s", status=m[1])),
    (re.compile(r"Recording (.*)"), lambda m: _("Recording %(status)s", status=m[1])),
]
PIECES = [
    (re.compile(r"(inbound|transfer|api)"), lambda m: name_of(ORIGINS, m[1])),
    (re.compile(r"flow (\S+) \((\S+)\)"),
     lambda m: _("flow %(flow)s (%(version)s)", flow=m[1], version=m[2])),
    (re.compile(r"language (\S+)"), lambda m: _("language %(language)s", language=m[1])),
    (re.compile(r"step (\S+)"), lambda m: _("step %(step)s", step=m[1])),
    (re.compile(r"recording started"), lambda m: _("recording started")),
    (re.compile(r"waited up to (\S+) s for a key"),
     lambda m: _("waited up to %(seconds)s s for a key", seconds=m[1])),
    (re.compile(r"waited for a key"), lambda m: _("waited for a key")),
    (re.compile(r"sent to a queue"), lambda m: _("sent to a queue")),
    (re.compile(r"connected onward"), lambda m: _("connected onward")),
    (re.compile(r"hung up"), lambda m: _("hung up")),
    (re.compile(r"part hash (\S+)"), lambda m: _("part hash %(hash)s", hash=m[1])),
    (re.compile(r"the notice version is the hash over every part heard in (\S+)"),
     lambda m: _("the notice version is the hash over every part heard in %(language)s",
                 language=m[1])),
    (re.compile(r"keys (\S+)"), lambda m: _("keys %(keys)s", keys=m[1])),
    (re.compile(r"purpose (\S+)"), lambda m: _("purpose %(purpose)s", purpose=m[1])),
    (re.compile(r"channels (.*)"), lambda m: _("channels %(channels)s", channels=m[1])),
    (re.compile(r"notice version (\S+)"),
     lambda m: _("notice version %(version)s", version=m[1])),
    (re.compile(r"Twilio sequence (\S+)"), lambda m: _("Twilio sequence %(n)s", n=m[1])),
    (re.compile(r"duration (\S+) s"), lambda m: _("duration %(seconds)s s", seconds=m[1])),
    (re.compile(r"arrived out of order"), lambda m: _("arrived out of order")),
    (re.compile(r"(\S+) channel\(s\)"), lambda m: _("%(n)s channel(s)", n=m[1])),
]


def _match(table, text: str) -> str:
    for pattern, say in table:
        m = pattern.fullmatch(text)
        if m:
            return say(m)
    return text


def event_title(title: object) -> str:
    """A timeline event's title in the page's language."""
    return _match(TITLES, "" if title is None else str(title))


def event_detail(detail: object) -> str:
    """A timeline event's detail in the page's language, piece by piece."""
    text = "" if detail is None else str(detail)
    return "; ".join(" · ".join(_match(PIECES, piece) for piece in part.split(" · "))
                     for part in text.split("; "))


def client_texts() -> dict:
    """The words the desk's and the transfer page's scripts write, in the page's language."""
    return {
        "queue": _("queue %(name)s", name="{name}"),
        "dial": _("dial %(target)s", target="{target}"),
        "end": _("end of call"),
        "details": _("Details"),
        "none": _("No transfers yet."),
        "updated": _("Updated %(when)s.", when="{when}"),
        "token_refused": _("That token was not accepted."),
        "server_answered": _("The server answered %(status)s.", status="{status}"),
        "unreachable": _("The server cannot be reached; trying again."),
        "twilio_error": _("(Twilio error %(code)s)", code="{code}"),
        "statuses": {k: str(v) for k, v in TRANSFER_STATUSES.items()},
        "decisions": {k: str(v) for k, v in DECISIONS.items()},
        "progress": {"requested": _("Requested — waiting for the caller to reach the flow"),
                     "in_flow": _("The caller is in the consent flow"),
                     "decided": _("The caller decided"), "returned": _("The caller is back"),
                     "failed": _("Failed")},
    }


def init_app(app: Flask) -> None:
    """Register Flask-Babel, the language switch and the template globals."""
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT)
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", "Europe/Istanbul")
    babel.init_app(app, locale_selector=select_locale)
    app.register_blueprint(bp)
    app.jinja_env.filters["form_error"] = form_error
    app.jinja_env.filters["event_title"] = event_title
    app.jinja_env.filters["event_detail"] = event_detail
    app.jinja_env.globals.update(
        LANGUAGES=LANGUAGES, current_language=current_language, client_texts=client_texts,
        role_name=lambda code: name_of(ROLES, code),
        decision_name=lambda code: name_of(DECISIONS, code),
        origin_name=lambda code: name_of(ORIGINS, code),
        transfer_status=lambda code: name_of(TRANSFER_STATUSES, code),
        diff_state=lambda code: name_of(DIFF_STATES, code))
