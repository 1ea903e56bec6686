"""/auditor/queues: the work queues page and its actions (POST forms with a CSRF token).

Each action runs the CLI's verb through ivr/services/auditor/work_queues.py, appends its
audit entries in the same transaction, and answers with a redirect back to the page and a
one-line note.
"""

from __future__ import annotations

from dataclasses import replace

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from ivr.domain.kvkk.businessdays import HolidayConfigError, load_calendar, local_date
from ivr.domain.times import utcnow
from ivr.services.auditor import work_queues as q
from ivr.services.auditor.access import record_access, transaction
from ivr.services.kvkk import iys_push
from ivr.web.current import apply_record, personal_data, spool
from ivr.web.current import session as db_session

from .blueprint import bp
from .login import logged_in_user, workspace_required
from .search import masked


def _back(message: str, ok: bool = True) -> Response:
    flash(message, "ok" if ok else "error")
    return redirect(url_for("auditor.queues"))


def problem_text(e: q.QueueError) -> str:
    """Why a queue action was refused, in the auditor's language."""
    v = e.values
    match e.problem:
        case q.Problem.NO_OUTCOME:
            return _("Write what was done or answered before closing the request.")
        case q.Problem.NOT_CLOSABLE:
            return _("The request cannot be closed: %(problem)s.", problem=v["detail"])
        case q.Problem.NO_BATCH:
            return _("There is no İYS batch %(batch)s.", batch=v["batch"])
        case q.Problem.NOT_FAILED:
            return _("Batch %(batch)s is %(status)s; only a failed push is retried.",
                     batch=v["batch"], status=v["status"])
        case q.Problem.NEVER_PUSHED:
            return _("Batch %(batch)s was never pushed, so there is no endpoint to "
                     "retry; push it with `python -m ivr iys push URL`.", batch=v["batch"])
        case q.Problem.BATCH_UNAVAILABLE:
            return v["detail"]
        case q.Problem.NO_RECORD:
            return _("There is no quarantined record %(id)s.", id=v["record"])
        case q.Problem.SPOOL_BUSY:
            return _("Another process is draining the spool; try again in a moment.")


@bp.get("/queues", endpoint="queues")
@workspace_required
def queues_page():
    """İYS pending and failed pushes, open subject requests, destruction runs, quarantine."""
    now, s, pii = utcnow(), db_session(), personal_data()
    try:
        cal = load_calendar(current_app.config.get("HOLIDAYS_FILE"))
    except HolidayConfigError as e:
        return render_template("auditor/error.html", code=500, title=_("Holiday calendar"),
                               message=_("The İYS deadlines cannot be computed: %(problem)s",
                                         problem=e)), 500
    with transaction(s):
        found = q.work_queues(s, pii, cal, now)
        # The İYS list shows recipients (masked): seeing it is an access like a search.
        record_access(s, logged_in_user(), "view.queues", via="web",
                      query={"iys_pending": len(found.pending),
                             "subject_requests": len(found.requests)})
    pending = [replace(r, recipient=masked(r.recipient)) for r in found.pending]
    return render_template("auditor/queues.html", pending=pending, failed=found.failed,
                           requests=found.requests, runs=found.runs,
                           quarantined=spool().quarantined(),
                           overdue=sum(1 for r in pending if r.state == "overdue"),
                           iys_token=bool(current_app.config.get("IYS_TOKEN")))


@bp.post("/queues/requests/<int:request_id>/close")
@workspace_required
def close_request(request_id: int):
    """Close a subject request with the answer given."""
    s, now = db_session(), utcnow()
    try:
        with transaction(s):
            req = q.close_request(s, personal_data(), logged_in_user(), request_id,
                                  request.form.get("outcome", ""), now)
    except q.QueueError as e:
        return _back(problem_text(e), ok=False)
    late = "" if local_date(now) <= req.due_on else " " + _(
        "It was due on %(day)s.", day=req.due_on.strftime("%d.%m.%Y"))
    return _back(_("Request #%(id)s is closed.", id=req.id) + late)


@bp.post("/queues/iys/<batch_id>/push")
@workspace_required
def retry_push(batch_id: str):
    """Push a failed İYS batch again, to the endpoint of its last push."""
    token = current_app.config.get("IYS_TOKEN")
    if not token:
        return _back(_("IVR_IYS_TOKEN is not set, so nothing can be pushed to İYS."), ok=False)
    try:
        timeout = float(current_app.config.get("IYS_TIMEOUT") or 30)
    except ValueError:
        return _back(_("IVR_IYS_TIMEOUT must be a number of seconds."), ok=False)
    s, pii = db_session(), personal_data()
    try:
        with transaction(s):
            target = q.push_target(s, pii, batch_id)
    except q.QueueError as e:
        return _back(problem_text(e), ok=False)
    # Outside any transaction: the endpoint may be slow, the database must not wait on it.
    answer = iys_push.send(target.url, token, target.body, timeout)
    with transaction(s):
        outcome = q.record_push(s, logged_in_user(), target, answer, utcnow())
    if outcome == "accepted":
        return _back(_("Batch %(batch)s was accepted by İYS (transactionId %(tid)s).",
                       batch=target.batch_id, tid=answer.transaction_id))
    from ivr.web.i18n import push_answer  # i18n imports this package
    codes = ", ".join(e["code"] for e in answer.errors)
    return _back(_("Batch %(batch)s was not accepted: %(answer)s (HTTP %(status)s: %(codes)s)",
                   batch=target.batch_id, answer=push_answer(outcome, answer.http_status),
                   status=answer.http_status or "-", codes=codes), ok=False)


@bp.post("/queues/spool/<record_id>/retry")
@workspace_required
def retry_spool(record_id: str):
    """Put a quarantined webhook back in the spool and drain it."""
    s = db_session()
    user = logged_in_user()
    if s.in_transaction():
        s.commit()
    try:
        outcome = q.retry_quarantined(s, spool(), user, record_id, apply_record, utcnow())
    except q.QueueError as e:
        return _back(problem_text(e), ok=False)
    from ivr.web.i18n import spool_outcome  # i18n imports this package
    return _back(_("Record %(id)s was retried: %(outcome)s.", id=record_id,
                   outcome=spool_outcome(outcome)), ok=outcome == "applied")


@bp.post("/queues/spool/<record_id>/discard")
@workspace_required
def discard_spool(record_id: str):
    """Delete a quarantined webhook for good; the audit log keeps an entry saying so."""
    s = db_session()
    user = logged_in_user()
    if s.in_transaction():
        s.commit()
    try:
        q.discard_quarantined(s, spool(), user, record_id, request.form.get("reason", ""),
                              utcnow())
    except q.QueueError as e:
        return _back(problem_text(e), ok=False)
    return _back(_("Record %(id)s was discarded.", id=record_id))
