"""The agent desk (/agent/): the agent's transfers with live status, and the form that
sends a live call into the consent flow, through the same transfer service as
POST /api/transfers. Logged in with the web session; every form carries a CSRF token and
an Idempotency-Key of its own, so a double submit makes one transfer.
"""

from __future__ import annotations

import uuid

from flask import current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy.exc import SQLAlchemyError

from ivr.services import transfer_request
from ivr.services import transfers as service
from ivr.storage.transfer_models import Transfer
from ivr.web import transfer_start as start
from ivr.web.agent import TRANSFER_ID, agent_page, bp
from ivr.web.api.transfers import REFUSALS, document
from ivr.web.auditor.guards import role_required
from ivr.web.auditor.login import current_user, logged_in_user
from ivr.web.auditor.roles import DESK_ROLES
from ivr.web.current import flows, personal_data
from ivr.web.current import session as db_session
from ivr.web.i18n import field_rule, transfer_reason

LISTED = 50
# The queue the desk offers by default: where `simulate --transfer` sends callers back.
DEFAULT_QUEUE = "agents"
LIVE = ("requested", "in_flow", "decided")
RETURN_TYPES = ("queue", "dial_number", "dial_client", "hangup")
VIEWERS = ("auditor", "admin")  # besides the agent who made it


def _agent_transfers(s, user) -> list[Transfer]:
    return service.recent(s, None if user.role == "admin" else str(user.id), LISTED)


def _end_read(s) -> None:
    # The session lookup may have opened a transaction: each step runs in its own.
    if s.in_transaction():
        s.commit()


def _listing(s, user) -> list[dict]:
    _end_read(s)
    with s.begin():
        return [document(t) for t in _agent_transfers(s, user)]


def _form_defaults() -> dict:
    return {"call_sid": "", "return_type": "queue", "queue": DEFAULT_QUEUE, "number": "",
            "client": "",
            "language": "", "force": False}


def _desk(form: dict, errors: dict, status: int = 200, message: str | None = None):
    user = logged_in_user()
    s = db_session()
    rows = _listing(s, user)
    html = render_template("agent/desk.html", transfers=rows, form=form, errors=errors,
                           message=message, key=uuid.uuid4().hex, live=LIVE,
                           languages=flows().default.languages, all_agents=user.role == "admin")
    return agent_page(html, status)


@bp.get("/", endpoint="desk")
@role_required(DESK_ROLES, "the agent desk")
def desk():
    """The desk: the form and the agent's transfers, newest first."""
    return _desk(_form_defaults(), {})


@bp.get("/transfers.json")
def transfers_json():
    """The agent's transfers as JSON, for the desk's live status (session, not token)."""
    user = current_user()
    if user is None:
        return _json_error(401, "log in first")
    if user.role not in DESK_ROLES:
        return _json_error(403, f"the {user.role} role has no agent desk")
    return jsonify({"transfers": _listing(db_session(), user)})


@bp.get("/transfers/<transfer_id>.json")
def transfer_json(transfer_id: str):
    """One transfer as JSON: to the agent who made it, to auditors and admins (session)."""
    user = current_user()
    if user is None:
        return _json_error(401, "log in first")
    if not TRANSFER_ID.fullmatch(transfer_id):
        return _json_error(404, "no such transfer")
    s = db_session()
    _end_read(s)
    with s.begin():
        t = service.get(s, transfer_id)
        doc = document(t) if t is not None else None
    if doc is None or (user.role not in VIEWERS and doc["agent"]["id"] != str(user.id)):
        return _json_error(404, "no such transfer")
    return jsonify(doc)


def _json_error(status: int, message: str):
    response = jsonify({"status": status, "message": message})
    response.status_code = status
    return response


def form_body(form) -> tuple[dict, dict]:
    """The desk's form as the JSON body POST /api/transfers takes, and the fields as typed."""
    typed = {"call_sid": form.get("call_sid", "").strip(),
             "return_type": form.get("return_type", ""), "queue": form.get("queue", "").strip(),
             "number": form.get("number", "").strip(), "client": form.get("client", "").strip(),
             "language": form.get("language", ""), "force": form.get("force") == "on"}
    kind = typed["return_type"]
    if kind == "queue":
        return_to = {"type": "queue", "name": typed["queue"]}
    elif kind == "dial_number":
        return_to = {"type": "dial", "number": typed["number"]}
    elif kind == "dial_client":
        return_to = {"type": "dial", "client": typed["client"]}
    elif kind == "hangup":
        return_to = {"type": "hangup"}
    else:
        return_to = {"type": kind}
    body = {"call_sid": typed["call_sid"], "return_to": return_to, "force": typed["force"]}
    if typed["language"]:
        body["language"] = typed["language"]
    return body, typed


# Which form field a request error belongs to.
FIELD_OF = {"call_sid": "call_sid", "return_to.name": "queue", "return_to.number": "number",
            "return_to.client": "client", "return_to.type": "return_type",
            "return_to": "return_type", "language": "language", "force": "force",
            "Idempotency-Key": "call_sid"}


@bp.post("/transfers")
@role_required(DESK_ROLES, "the agent desk")
def create():
    """Send a live call into the consent flow from the desk's form."""
    user = logged_in_user()
    body, typed = form_body(request.form)
    try:
        key = transfer_request.idempotency_key(request.form.get("idempotency_key"))
        req = transfer_request.parse(body, flows())
    except transfer_request.InvalidRequest as exc:
        field = FIELD_OF.get(exc.field or "", "call_sid")
        return _desk(typed, {field: field_rule(field, exc.message)}, 400,
                     _("The transfer was not started."))
    s = db_session()
    _end_read(s)
    url = current_app.extensions["ivr_renderer"].url
    try:
        t, new = start.start(s, req, service.Agent(id=str(user.id), name=user.name), key,
                             pii=personal_data(),
                             settings=current_app.extensions["ivr_twilio_rest"],
                             twiml_url=url)
    except service.Refused as exc:
        return _desk(typed, {}, REFUSALS[exc.reason], _(
            "The transfer was not started: %(reason)s.",
            reason=transfer_reason(exc.reason, exc.message, exc.details)))
    except start.StillWaiting:
        return _desk(typed, {}, 409, _("This form was already sent and is still waiting for "
                                        "Twilio. Wait a moment; the transfer appears below."))
    except SQLAlchemyError:
        s.rollback()
        return _desk(typed, {}, 503, _("The database is unavailable. Send the form again."))
    if t.status == "failed":
        flash(_("The transfer of %(sid)s failed: %(reason)s.", sid=t.call_sid,
                reason=transfer_reason(t.failure_reason, t.failure_message)), "error")
    elif new:
        flash(_("The transfer of %(sid)s has started.", sid=t.call_sid), "ok")
    else:
        flash(_("This form was already sent: the transfer of %(sid)s is below.",
                sid=t.call_sid), "ok")
    return redirect(url_for("agent.desk"), 303)
