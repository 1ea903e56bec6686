"""The auditor's data as JSON for other systems: one call's timeline, and consent records.

Bearer token with the auditor role (admin passes too); every answer that shows data is
recorded as an auditor.access entry, like the web pages.
"""

from __future__ import annotations

from datetime import datetime

from flask import jsonify, request

from ivr.domain import inputs
from ivr.domain.pii import DataKeyError
from ivr.domain.vocabulary import DECISIONS
from ivr.services.auditor.access import record_access, transaction
from ivr.services.consents import export_record
from ivr.services.reports import call_timeline, consent_records, stored_call
from ivr.web.auditor.search import CALL_SID, SearchError, phone_fingerprint
from ivr.web.current import personal_data, session
from ivr.web.tokens import require_token, token_user

from .blueprint import bp
from .errors import bad_request, error_response

CONSENT_PARAMS = ("phone", "since", "until", "decision", "limit")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000


@bp.get("/calls/<call_sid>")
@require_token("auditor")
def api_call(call_sid: str):
    """One call's timeline (the `calls show --json` document); 404 for an unknown call."""
    if not CALL_SID.fullmatch(call_sid):
        return error_response(404, "no such call")
    s = session()
    try:
        with transaction(s):
            row = stored_call(s, call_sid)
            doc = call_timeline(s, call_sid, personal_data()) if row else None
            record_access(s, token_user(), "api.call", via="api", call_sid=call_sid,
                          phone_hmac=row.phone_hmac if row else None, found=row is not None)
    except DataKeyError as e:
        return error_response(500, str(e))
    if doc is None:
        return error_response(404, f"no call with CallSid {call_sid}")
    return jsonify(doc)


class EmptyRange(SearchError):
    """Well-formed criteria whose time range holds no instant (422)."""


def _consent_criteria(args) -> tuple[dict, int]:  # noqa: C901 - one rule per query parameter, each with its error
    """The criteria of GET /api/consents; SearchError naming every bad parameter.

    Values are taken as sent: a parameter given empty, or with spaces around a date or a
    number, is refused rather than guessed at.
    """
    errors: dict[str, str] = {}
    unknown = sorted(set(args) - set(CONSENT_PARAMS))
    if unknown:
        errors["parameters"] = (f"unknown: {', '.join(unknown)}; use "
                                f"{', '.join(CONSENT_PARAMS)}")
    for name in CONSENT_PARAMS:
        if name in args and not args[name].strip():
            errors[name] = "empty: leave the parameter out or give a value"
    given = {k: v for k, v in args.items() if k in CONSENT_PARAMS and k not in errors}
    crit: dict = {}
    for name in ("since", "until"):
        if name in given:
            try:
                crit[name] = inputs.instant(given[name], name, end=name == "until")
            except inputs.InvalidInput as e:
                errors[name] = e.message
    if "decision" in given:
        if given["decision"] in DECISIONS:
            crit["decision"] = given["decision"]
        else:
            errors["decision"] = f"one of {', '.join(DECISIONS)}"
    if "phone" in given:
        try:
            crit["phone_hmac"] = phone_fingerprint(given["phone"], personal_data())
        except SearchError as e:
            errors.update(e.errors)
    limit = DEFAULT_LIMIT
    if "limit" in given:
        try:
            limit = inputs.whole_number(given["limit"], "limit", low=1, high=MAX_LIMIT)
        except inputs.InvalidInput as e:
            errors["limit"] = e.message
    if errors:
        raise SearchError(errors)
    if "since" in crit and "until" in crit and crit["since"] >= crit["until"]:
        raise EmptyRange({"until": "must be after since"})
    return crit, limit


@bp.get("/consents")
@require_token("auditor")
def api_consents():
    """Consent records by phone, time range (captured_at: since inclusive, until exclusive)
    and decision, oldest first, with the export fields."""
    try:
        crit, limit = _consent_criteria(request.args)
    except EmptyRange as e:
        return error_response(422, "the time range is empty", errors=e.errors)
    except SearchError as e:
        return bad_request("invalid query parameters", errors=e.errors)
    query = {k: (v.isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v)
             for k, v in crit.items()}
    query = {("phone" if k == "phone_hmac" else k): v for k, v in query.items()}
    s = session()
    pii = personal_data()
    try:
        with transaction(s):
            recs = consent_records(s, crit.get("since"), crit.get("until"),
                                   crit.get("decision"), crit.get("phone_hmac"), limit + 1)
            truncated = len(recs) > limit
            recs = recs[:limit]
            rows = [export_record(r, pii) for r in recs]
            sids = list(dict.fromkeys(r.call_sid for r in recs if r.call_sid))
            record_access(s, token_user(), "api.consents", via="api",
                          phone_hmac=crit.get("phone_hmac"), query=query, call_sids=sids)
    except DataKeyError as e:
        return error_response(500, str(e))
    return jsonify({"consents": rows, "count": len(rows), "limit": limit,
                    "truncated": truncated, "query": query})
