"""/auditor/queues: the work queues page and its actions (POST forms with a CSRF token).

Each action runs the CLI's verb through ivr.auditor.queues, appends its audit entries in
the same transaction, and answers with a redirect back to the page and a one-line note.
"""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from ivr.domain.kvkk.businessdays import HolidayConfigError, load_calendar, local_date
from ivr.domain.times import utcnow
from ivr.services.auditor.access import record_access, transaction
from ivr.services.kvkk import iys_push
from ivr.web.current import apply_record, personal_data, spool
from ivr.web.current import session as db_session

from . import queues as q
from .blueprint import bp
from .login import current_user, workspace_required


def _back(message: str, ok: bool = True):
    flash(message, "ok" if ok else "error")
    return redirect(url_for("auditor.queues"))


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
        pending = q.iys_pending(s, pii, cal, now)
        failed = q.failed_batches(s)
        requests_ = q.open_requests(s, local_date(now))
        runs = q.retention_runs(s)
        # The İYS list shows recipients (masked): seeing it is an access like a search.
        record_access(s, current_user(), "view.queues", via="web",
                      query={"iys_pending": len(pending), "subject_requests": len(requests_)})
    return render_template("auditor/queues.html", pending=pending, failed=failed,
                           requests=requests_, runs=runs, quarantined=spool().quarantined(),
                           overdue=sum(1 for r in pending if r["state"] == "overdue"),
                           iys_token=bool(current_app.config.get("IYS_TOKEN")))


@bp.post("/queues/requests/<int:request_id>/close")
@workspace_required
def close_request(request_id: int):
    """Close a subject request with the answer given."""
    s = db_session()
    try:
        with transaction(s):
            req = q.close_request(s, personal_data(), current_user(), request_id,
                                  request.form.get("outcome", ""), utcnow())
    except q.QueueError as e:
        return _back(str(e), ok=False)
    late = "" if local_date(req.closed_at) <= req.due_on else " " + _(
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
        return _back(str(e), ok=False)
    # Outside any transaction: the endpoint may be slow, the database must not wait on it.
    answer = iys_push.send(target.url, token, target.body, timeout)
    with transaction(s):
        outcome = q.record_push(s, current_user(), target, answer, utcnow())
    if outcome == "accepted":
        return _back(_("Batch %(batch)s was accepted by İYS (transactionId %(tid)s).",
                       batch=target.batch_id, tid=answer.transaction_id))
    from ..i18n import push_answer  # i18n imports this package
    codes = ", ".join(e["code"] for e in answer.errors)
    return _back(_("Batch %(batch)s was not accepted: %(answer)s (HTTP %(status)s: %(codes)s)",
                   batch=target.batch_id, answer=push_answer(outcome, answer.http_status),
                   status=answer.http_status or "-", codes=codes), ok=False)


@bp.post("/queues/spool/<record_id>/retry")
@workspace_required
def retry_spool(record_id: str):
    """Put a quarantined webhook back in the spool and drain it."""
    s = db_session()
    user = current_user()
    if s.in_transaction():
        s.commit()
    try:
        outcome = q.retry_quarantined(s, spool(), user, record_id, apply_record, utcnow())
    except q.QueueError as e:
        return _back(str(e), ok=False)
    from ..i18n import spool_outcome  # i18n imports this package
    return _back(_("Record %(id)s was retried: %(outcome)s.", id=record_id,
                   outcome=spool_outcome(outcome)), ok=outcome == "applied")


@bp.post("/queues/spool/<record_id>/discard")
@workspace_required
def discard_spool(record_id: str):
    """Delete a quarantined webhook for good; the audit log keeps an entry saying so."""
    s = db_session()
    user = current_user()
    if s.in_transaction():
        s.commit()
    try:
        q.discard_quarantined(s, spool(), user, record_id, request.form.get("reason", ""),
                              utcnow())
    except q.QueueError as e:
        return _back(str(e), ok=False)
    return _back(_("Record %(id)s was discarded.", id=record_id))
