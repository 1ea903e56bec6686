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
from flask_babel import Babel, format_decimal, format_percent, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape

from ivr.services.accounts import set_language
from ivr.services.auditor.access import transaction
from ivr.web.current import session as db_session

from .auditor.login import current_user, safe_next
from .auditor.roles import ROLE_NAMES as ROLES

LANGUAGES = {"tr": "Türkçe", "en": "English"}
DEFAULT = "tr"

# Stored codes as the pages name them, here and in the tables below (the roles' names live
# in roles.py). English shows the code itself, as the pages always have (tests and auditors
# match on it); Turkish shows the team's own words.
DECISIONS = {"granted": _l("granted"), "declined": _l("declined"), "no_input": _l("no_input"),
             "withdrawn": _l("withdrawn")}
ORIGINS = {"inbound": _l("inbound"), "transfer": _l("transfer"), "api": _l("api")}
TRANSFER_STATUSES = {"requested": _l("requested"), "in_flow": _l("in_flow"),
                     "decided": _l("decided"), "returned": _l("returned"),
                     "failed": _l("failed")}
DIFF_STATES = {"added": _l("added"), "removed": _l("removed"), "changed": _l("changed"),
               "same": _l("same")}

CALL_STATUSES = {"queued": _l("queued"), "ringing": _l("ringing"),
                 "in-progress": _l("in-progress"), "completed": _l("completed"),
                 "busy": _l("busy"), "failed": _l("failed"),
                 "no-answer": _l("no-answer"), "canceled": _l("canceled")}
DIRECTIONS = {"inbound": _l("inbound"), "outbound-api": _l("outbound-api"),
              "outbound-dial": _l("outbound-dial")}
PURPOSES = {"marketing": _l("marketing")}
RECORDING_STATUSES = {"in-progress": _l("in-progress"), "completed": _l("completed"),
                      "absent": _l("absent"),
                      "failed": _l("failed"), "paused": _l("paused"),
                      "stopped": _l("stopped"), "processing": _l("processing")}
TRACKS = {"inbound": _l("inbound"), "outbound": _l("outbound"),
          "both": _l("both")}
AUDIT_KINDS = {
    "call.started": _l("call.started"), "prompts.played": _l("prompts.played"),
    "notice.played": _l("notice.played"), "input.received": _l("input.received"),
    "consent.decided": _l("consent.decided"), "consent.withdrawn": _l("consent.withdrawn"),
    "call.status": _l("call.status"), "recording.status": _l("recording.status"),
    "transfer.requested": _l("transfer.requested"),
    "transfer.redirected": _l("transfer.redirected"),
    "transfer.in_flow": _l("transfer.in_flow"),
    "transfer.decided": _l("transfer.decided"),
    "transfer.returned": _l("transfer.returned"),
    "transfer.failed": _l("transfer.failed"),
}
ACCESS_ACTIONS = {
    "view.search": _l("view.search"), "view.call": _l("view.call"),
    "export.csv": _l("export.csv"), "export.json": _l("export.json"),
    "export.evidence": _l("export.evidence"), "api.call": _l("api.call"),
    "api.consents": _l("api.consents"), "play.recording": _l("play.recording"),
    "view.queues": _l("view.queues"), "view.hangups": _l("view.hangups"),
}
VIA = {"web": _l("web"), "api": _l("api")}
IYS_ACTIONS = {"export": _l("to export"), "skipped": _l("will not be sent"),
               "superseded": _l("superseded")}
# Why an İYS record is not sent, by its code (ivr/domain/kvkk/iys.py); %(...)s from params.
IYS_REASONS = {
    "RECIPIENT": _l("The recipient is not an E.164 phone number."),
    "DATE": _l("İYS takes no consent date before 01.05.2015."),
    "H175": _l("A first İYS record for a recipient and type cannot be RET (H175): the number "
               "was never registered with ONAY, so there is nothing to withdraw in İYS."),
    "H178": _l("Older than the consent date last sent for this recipient and type "
               "(%(date)s; H178)."),
    "H174": _l("İYS already holds RET for this recipient and type (batch %(batch)s); a "
               "repeated RET is refused (H174)."),
    "UNCHANGED": _l("İYS already holds ONAY for this recipient and type (batch %(batch)s); "
                    "nothing new to register."),
    "SUPERSEDED": _l("A later decision (consent %(consent)s) for this recipient and type is "
                     "what İYS needs."),
}
# KVKK Art. 11 requests: what is asked and how it was received.
REQUEST_KINDS = {
    "learn": _l("learn"), "information": _l("information"),
    "purpose": _l("purpose"), "recipients": _l("recipients"),
    "rectification": _l("rectification"), "erasure": _l("erasure"),
    "notify_third_parties": _l("notify_third_parties"), "objection": _l("objection"),
    "compensation": _l("compensation"), "other": _l("other")}
RECEIVED_BY = {"email": _l("email"), "post": _l("post"), "phone": _l("phone"),
               "in_person": _l("in_person"), "other": _l("other")}
RETENTION_ACTS = {"anonymised": _l("anonymised"), "deleted": _l("deleted")}
RETENTION_REASONS = {"retention period ended": _l("retention period ended")}
RETENTION_CATEGORIES = {
    "subject_requests": _l("subject_requests"), "webhook_logs": _l("webhook_logs"),
    "consent_records": _l("consent_records"), "recording_metadata": _l("recording_metadata"),
    "iys_batch_files": _l("iys_batch_files"), "call_metadata": _l("call_metadata"),
    "transaction_security": _l("transaction_security"),
}

# Why a transfer was refused or failed, by its reason code (the JSON API keeps English
# messages); the values come from the error's details.
TRANSFER_REASONS = {
    "call_ended": _l("the call has already ended (%(call_status)s)"),
    "transfer_in_progress": _l("another transfer of this call is on its way"),
    "already_decided": _l("the caller already decided on this call (%(decision)s); tick "
                          "\"ask again\" to ask once more"),
    "key_reused": _l("this form was already used for a different transfer; reload the page"),
    "request_in_progress": _l("the first request is still waiting for Twilio"),
    "call_not_found": _l("Twilio has no call with this CallSid"),
    "call_not_in_progress": _l("the call is not in progress (it has ended or has not been "
                               "answered)"),
    "twilio_auth_failed": _l("Twilio rejected this server's credentials; an administrator "
                             "must fix them"),
    "twilio_unavailable": _l("Twilio is unavailable at the moment; try again"),
    "twilio_rejected": _l("Twilio refused the redirect"),
    "twilio_timeout": _l("Twilio did not answer in time; the outcome is unknown"),
    "twilio_unreachable": _l("Twilio cannot be reached from this server"),
    "twilio_bad_answer": _l("Twilio's answer could not be read"),
    "hung_up_in_flow": _l("the caller hung up in the consent flow"),
    "database_unavailable": _l("the database is unavailable; send the form again"),
}
# The desk form's fields, and what each needs when a value is refused.
FIELD_RULES = {
    "call_sid": _l("a CallSid is CA followed by 32 lowercase hex digits"),
    "queue": _l("a queue name is 1 to 64 characters on one line"),
    "number": _l("a phone number in E.164 form, such as +902122223344"),
    "client": _l("a client name is 1 to 100 letters, digits or _ . @ -"),
    "return_type": _l("choose where the caller goes afterwards"),
    "language": _l("choose one of the flow's languages"),
}

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
            set_language(s, user, lang)
    return redirect(target)


def name_of(table: dict, code: object) -> str:
    """A stored code in the page's language; an unknown code as it is."""
    return str(table[code]) if code in table else ("" if code is None else str(code))


def transfer_reason(code: object, message: object = "", details: dict | None = None) -> str:
    """A transfer's refusal or failure in the page's language; an unknown one as given."""
    if code not in TRANSFER_REASONS:
        return "" if message is None else str(message)
    values = {"call_status": "", "decision": "", **(details or {})}
    values["call_status"] = name_of(CALL_STATUSES, values["call_status"])
    values["decision"] = name_of(DECISIONS, values["decision"])
    return str(TRANSFER_REASONS[code]) % values


# Why a recording cannot be played (MediaUnavailable.reason); the player shows it.
MEDIA_ERRORS = {
    "unreachable": _l("Twilio could not be reached, so the recording cannot be played now. "
                      "Try again later; if it persists, an administrator should check "
                      "IVR_TWILIO_API_URL."),
    "gone": _l("Twilio no longer has this recording."),
    "credentials": _l("Twilio refused this server's credentials; an administrator must "
                      "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN."),
    "http": _l("Twilio answered with an error, so the recording cannot be played now. "
               "Try again later."),
    "type": _l("Twilio did not answer with a WAV or MP3 recording; nothing was played."),
}


def media_error(reason: str) -> str:
    """Why a recording cannot be played, in the page's language."""
    return str(MEDIA_ERRORS.get(reason, MEDIA_ERRORS["http"]))


# An İYS push's answer, as a person reads it; the HTTP status and İYS's codes stay as detail.
PUSH_ANSWERS = {
    "unreachable": _l("İYS could not be reached; retry the push later."),
    "rejected": _l("İYS rejected the batch: its error codes say which records and why."),
    "failed": _l("İYS answered with an error; retry the push later."),
    "accepted": _l("İYS accepted the batch."),
}
# Why a spooled webhook was quarantined (the program's own words stay as detail).
QUARANTINE_ERRORS = [
    ("waited ", _l("An earlier step of its call never arrived, so it could not be applied.")),
    ("cannot decrypt", _l("It cannot be decrypted: IVR_PII_KEY is not the key that wrote it.")),
    ("not a spool record", _l("The file is not a spool record.")),
    ("ValueError: unknown spool record kind",
     _l("It is of a kind this server does not know.")),
]
QUARANTINE_OTHER = _l("Applying it failed; the program's message below says why.")
SPOOL_OUTCOMES = {"applied": _l("applied"), "waiting": _l("waiting for an earlier step"),
                  "quarantined again": _l("quarantined again")}


def push_answer(outcome: str | None, http_status: int | None) -> str:
    """What İYS's answer to a push means, in the page's language."""
    if outcome != "accepted" and http_status is None:
        return str(PUSH_ANSWERS["unreachable"])
    if outcome is None or outcome not in PUSH_ANSWERS:
        return str(PUSH_ANSWERS["failed"])
    return str(PUSH_ANSWERS[outcome])


def quarantine_error(error: object) -> str:
    """Why a spooled webhook was quarantined, in the page's language."""
    text = "" if error is None else str(error)
    for prefix, sentence in QUARANTINE_ERRORS:
        if text.startswith(prefix):
            return str(sentence)
    return str(QUARANTINE_OTHER)


def spool_outcome(outcome: object) -> str:
    """A retried spool record's outcome ("waiting (why)" keeps its program detail)."""
    text = "" if outcome is None else str(outcome)
    head, _sep, rest = text.partition(" (")
    if head in SPOOL_OUTCOMES:
        return str(SPOOL_OUTCOMES[head]) + (f" ({rest}" if rest else "")
    return text


def field_rule(field: str, message: object = "") -> str:
    """What a desk form field needs, in the page's language."""
    return str(FIELD_RULES[field]) if field in FIELD_RULES else str(message or "")


def origin_label(code: object) -> str:
    """A flow run's or consent's origin: an incoming call, or the transfer that started it."""
    text = "" if code is None else str(code)
    if text.startswith("transfer:"):
        return _("transfer %(id)s", id=text.split(":", 1)[1][:12])
    return name_of(ORIGINS, "inbound" if text == "incoming" else text)


def iys_reason(code: object, params: dict | None) -> str:
    """Why an İYS record is not sent, in the page's language."""
    if code not in IYS_REASONS:
        return "" if code is None else str(code)
    values = {"date": "", "batch": "", "consent": "", **(params or {})}
    return str(IYS_REASONS[code]) % values


def number(value: object, digits: int = 0) -> str:
    """A number in the page's language (Babel): 1.234,5 in Turkish, 1,234.5 in English."""
    if value is None:
        return "—"
    fmt = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, format=fmt)


def percent(share: object, digits: int = 1) -> str:
    """A share (0..1) as a percentage in the page's language: %37,5 in Turkish."""
    if share is None:
        return "—"
    return format_percent(share, format="#,##0." + "0" * digits + "%")


def seconds(value: object) -> str:
    """A duration in seconds, in the page's language ("94 sn" in Turkish)."""
    if value is None:
        return "—"
    return _("%(seconds)s s", seconds=number(value))


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
    "not a page of this search (start again from the first page)":
        _l("not a page of this search (start again from the first page)"),
}


def form_error(message: object) -> str:
    """A field error of a shared validator in the page's language (unknown ones as they are)."""
    text = "" if message is None else str(message)
    if text in FORM_ERRORS:
        return str(FORM_ERRORS[text])
    if text.startswith("one of "):
        names = {**{k: str(v) for k, v in DECISIONS.items()}, "none": _("none recorded")}
        choices = ", ".join(names.get(c.strip(), c.strip())
                            for c in text[len("one of "):].split(","))
        return _("one of %(choices)s", choices=choices)
    return text


# A call's timeline is described in English by the code the CLI, the API and the evidence
# package share (ivr/services/timeline.py). The call page puts each title, and each " · " or "; "
# separated piece of a detail, through these patterns; a piece none matches stays as it is.
TITLES = [
    (re.compile(r"Call started"), lambda m: _("Call started")),
    (re.compile(r"Key pressed: (.*)"), lambda m: _("Key pressed: %(keys)s", keys=m[1])),
    (re.compile(r"No key pressed \(timeout\)"), lambda m: _("No key pressed (timeout)")),
    (re.compile(r"Caller hung up"), lambda m: _("Caller hung up")),
    (re.compile(r"Prompts played"), lambda m: _("Prompts played")),
    (re.compile(r"Notice part played \((.*?)\): (.*)"),
     lambda m: _("Notice part played (%(language)s): %(parts)s", language=_code(m[1]),
                 parts=Markup(", ").join(_code(p.strip()) for p in str(m[2]).split(",")))),
    (re.compile(r"Decision: (.*)"),
     lambda m: _("Decision: %(decision)s", decision=name_of(DECISIONS, m[1]))),
    (re.compile(r"Call status: (.*)"),
     lambda m: _("Call status: %(status)s", status=name_of(CALL_STATUSES, m[1]))),
    (re.compile(r"Recording (.*)"),
     lambda m: _("Recording %(status)s", status=name_of(RECORDING_STATUSES, m[1]))),
]
PIECES = [
    (re.compile(r"(inbound|transfer|api)"), lambda m: escape(name_of(ORIGINS, str(m[1])))),
    (re.compile(r"transfer:(\S+)"), lambda m: _("transfer %(id)s", id=_code(str(m[1])[:12]))),
    (re.compile(r"flow (\S+) \((\S+)\)"),
     lambda m: _("flow %(flow)s (%(version)s)", flow=_code(m[1]), version=_code(m[2]))),
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
    (re.compile(r"keys (\S+)"),
     lambda m: _("keys %(keys)s", keys=_("none") if m[1] == "none" else m[1])),
    (re.compile(r"purpose (\S+)"),
     lambda m: _("purpose %(purpose)s", purpose=name_of(PURPOSES, m[1]))),
    (re.compile(r"channels (.*)"), lambda m: _("channels %(channels)s", channels=m[1])),
    (re.compile(r"notice version (\S+)"),
     lambda m: _("notice version %(version)s", version=m[1])),
    (re.compile(r"Twilio sequence (\S+)"), lambda m: _("Twilio sequence %(n)s", n=m[1])),
    (re.compile(r"duration (\S+) s"), lambda m: _("duration %(seconds)s", seconds=seconds(
        int(m[1])) if m[1].isdigit() else m[1])),
    (re.compile(r"(\d+) s"), lambda m: seconds(int(m[1]))),
    (re.compile(r"arrived out of order"), lambda m: _("arrived out of order")),
    (re.compile(r"(\S+) channel\(s\)"), lambda m: _("%(n)s channel(s)", n=m[1])),
]


def _code(value: str) -> Markup:
    """An identifier (a flow id, a prompt id) as the pages show one: not to be translated."""
    return Markup("<code>{}</code>").format(value)


def _match(table, text: str) -> Markup:
    """The first pattern that matches, said in the page's language; identifiers in <code>."""
    for pattern, say in table:
        m = pattern.fullmatch(text)
        if m:
            # Our catalogue's sentence, its values escaped (identifiers in <code>).
            return Markup(say(_Escaped(m)))  # noqa: S704
    return escape(text)


class _Escaped:
    """A match whose groups are escaped text, or <code> for identifiers (group names)."""

    def __init__(self, m):
        self.m = m

    def __getitem__(self, i):
        return escape(self.m[i])


def event_title(title: object) -> str:
    """A timeline event's title in the page's language (a bare kind by its name)."""
    text = "" if title is None else str(title)
    if text in AUDIT_KINDS:
        return str(AUDIT_KINDS[text])
    return _match(TITLES, text)


def event_detail(detail: object) -> str:
    """A timeline event's detail in the page's language, piece by piece."""
    text = "" if detail is None else str(detail)
    return Markup("; ").join(Markup(" · ").join(_match(PIECES, piece)
                                                for piece in part.split(" · "))
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
        # Failures carry no details the page can fill in: their sentences need none.
        "reasons": {k: transfer_reason(k) for k in TRANSFER_REASONS
                    if "%(" not in str(TRANSFER_REASONS[k])},
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
    app.jinja_env.filters["number"] = number
    app.jinja_env.filters["percent"] = percent
    app.jinja_env.filters["seconds"] = seconds
    app.jinja_env.globals.update(
        call_status=lambda code: name_of(CALL_STATUSES, code),
        direction_name=lambda code: name_of(DIRECTIONS, code),
        purpose_name=lambda code: name_of(PURPOSES, code),
        recording_status=lambda code: name_of(RECORDING_STATUSES, code),
        track_name=lambda code: name_of(TRACKS, code),
        access_action=lambda code: name_of(ACCESS_ACTIONS, code),
        via_name=lambda code: name_of(VIA, code),
        iys_action=lambda code: name_of(IYS_ACTIONS, code), iys_reason=iys_reason,
        category_name=lambda code: name_of(RETENTION_CATEGORIES, code),
        retention_act=lambda code: name_of(RETENTION_ACTS, code),
        request_kind=lambda code: name_of(REQUEST_KINDS, code),
        received_by=lambda code: name_of(RECEIVED_BY, code),
        retention_reason=lambda code: name_of(RETENTION_REASONS, code),
        kind_name=lambda code: name_of(AUDIT_KINDS, code), transfer_reason=transfer_reason,
        push_answer=push_answer, quarantine_error=quarantine_error)
    app.jinja_env.globals.update(
        LANGUAGES=LANGUAGES, current_language=current_language, client_texts=client_texts,
        role_name=lambda code: name_of(ROLES, code),
        decision_name=lambda code: name_of(DECISIONS, code),
        origin_name=origin_label,
        transfer_status=lambda code: name_of(TRANSFER_STATUSES, code),
        diff_state=lambda code: name_of(DIFF_STATES, code))
