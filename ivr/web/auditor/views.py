"""The workspace pages: search, a call's record, and the exports. Each view that shows or
exports personal data appends an auditor.access entry in the transaction that read it."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from flask import (
    Response,
    current_app,
    g,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import NotFound

from ivr.audit.errors import AuditError
from ivr.domain.pii import DataKeyError
from ivr.domain.spreadsheet import safe_row
from ivr.domain.times import DAY_PATTERN, form_day, utcnow
from ivr.services.audit_replay import replay_call
from ivr.services.audit_verify import verify_entries
from ivr.services.auditor.access import access_entries, record_access, transaction
from ivr.services.auditor.audio_index import HASH, AudioIndex
from ivr.services.auditor.call_search import (
    CHUNK,
    EXPORT_FIELDS,
    EXPORT_LIMIT,
    export_rows,
    export_subjects,
    parse_cursor,
    safe_phone,
    search,
)
from ivr.services.auditor.dashboard_figures import agent_names
from ivr.services.auditor.evidence import EvidenceError, build_package
from ivr.services.auditor.recordings import call_recordings
from ivr.services.reports import call_duration, call_timeline, stored_call
from ivr.services.timeline import fact_entries
from ivr.web.current import app, flows, personal_data
from ivr.web.current import session as db_session

from .blueprint import bp
from .login import logged_in_user, workspace_required
from .search import CALL_SID, DECISION_CHOICES, SearchError, masked, parse_search


def _audio_index() -> AudioIndex:
    """The app's index of its audio folder (made on first use, again when AUDIO_DIR moves)."""
    index = current_app.extensions.get("ivr_auditor_audio")
    if index is None or index.directory != Path(current_app.config["AUDIO_DIR"]):
        index = current_app.extensions["ivr_auditor_audio"] = AudioIndex(
            current_app.config["AUDIO_DIR"])
    return index


def _error(code: int, title: str, message: str):
    return render_template("auditor/error.html", code=code, title=title, message=message), code


@bp.app_context_processor
def _inject_user():
    return {"web_user": g.get("web_user")}


@bp.after_request
def _no_store(response):
    # Pages and exports carry personal data: no browser or proxy may keep a copy.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(DataKeyError)
def _data_key(exc):
    return _error(500, _("Personal data cannot be decrypted"), str(exc))


@bp.errorhandler(NotFound)
def _not_found(exc):
    return _error(404, _("Not found"), _("There is no such page in the auditor workspace."))


@bp.get("/", endpoint="search")
@workspace_required
def search_page():
    """The search form, and the matching calls when criteria are given."""
    return _search()


def _iso_days(args) -> MultiDict:
    """The criteria with days typed as 30.11.2026 rewritten as 2026-11-30 for the search."""
    out = MultiDict(args)
    for name in ("since", "until"):
        if out.get(name):
            out[name] = form_day(out[name])
    return out


def _search():
    pii = personal_data()
    args = request.args
    ctx = {"args": args, "errors": {}, "decisions": DECISION_CHOICES, "found": None,
           "phones": {}, "message": None, "day_pattern": DAY_PATTERN}
    try:
        crit = parse_search(_iso_days(args), pii)
        cursor = parse_cursor(args)
    except SearchError as e:
        ctx["errors"] = e.errors
        return render_template("auditor/search.html", **ctx), 400
    if crit.empty:
        ctx["message"] = _("Give a phone number, a CallSid, a date range or a decision.")
        return render_template("auditor/search.html", **ctx)
    s = db_session()
    with transaction(s):
        found = search(s, crit, cursor=cursor)
        phones = {c.call_sid: masked(safe_phone(pii, c.phone_enc)) for c in found.calls}
        durations = {c.call_sid: call_duration(c)[0] for c in found.calls}
        agent = args.get("agent")
        ctx["agent_names"] = agent_names(s, [agent]) if agent and agent != "-" else {}
        record_access(s, logged_in_user(), "view.search", via="web", phone_hmac=crit.phone_hmac,
                      query=crit.audit_query(), call_sids=found.call_sids)
    next_url = (url_for("auditor.search", **{**args.to_dict(), **found.next_cursor()})
                if found.more else None)
    ctx.update(found=found, phones=phones, durations=durations, next_url=next_url)
    return render_template("auditor/search.html", **ctx)


@bp.post("/export.<fmt>")
@workspace_required
def export(fmt: str):
    """The search result as a CSV or JSON download."""
    if fmt not in ("csv", "json"):
        raise NotFound()
    try:
        crit = parse_search(_iso_days(request.form), personal_data())
    except SearchError as e:
        return _error(400, _("Cannot export"), _("The search is not valid: %(problem)s", problem=e))
    if crit.empty:
        return _error(400, _("Cannot export"), _("Give at least one search criterion to export."))
    s = db_session()
    with transaction(s):
        sids, ids = export_subjects(s, crit)
        too_many = len(sids) > EXPORT_LIMIT or len(ids) > EXPORT_LIMIT
        if not too_many:
            record_access(s, logged_in_user(), f"export.{fmt}", via="web",
                          phone_hmac=crit.phone_hmac, query=crit.audit_query(), call_sids=sids)
    if too_many:
        return _error(400, _("Too many results"), _(
            "An export holds at most %(limit)s calls. Narrow the date range, or use "
            "`.venv/bin/python -m ivr consents export` for bulk.", limit=EXPORT_LIMIT))
    pii = personal_data()
    parts: list[tuple[list[str], list[int]]] = [
        (sids[i:i + CHUNK], []) for i in range(0, len(sids), CHUNK)]
    parts += [([], ids[i:i + CHUNK]) for i in range(0, len(ids), CHUNK)]

    def read(part):
        # One short transaction per chunk, so a slow download never holds the database.
        with transaction(s):
            return list(export_rows(s, pii, *part))

    first = read(parts[0]) if parts else []  # a key problem shows as a page, not a cut file

    def all_rows():
        yield from first
        for part in parts[1:]:
            yield from read(part)

    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":
        body = _csv(all_rows())
        mimetype = "text/csv"
    else:
        body = _json(all_rows(), crit.audit_query(), len(sids), len(ids))
        mimetype = "application/json"
    return Response(stream_with_context(body), mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="ivr-calls-{stamp}.{fmt}"'})


def _csv(rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(safe_row({
            **row, "channels": json.dumps(row["channels"]),
            "duration": "" if row["duration"] in (None, "") else row["duration"]}))
        if buf.tell() > 1 << 16:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _json(rows, query: dict, calls: int, loose: int):
    head = {"exported_at": utcnow().isoformat().replace("+00:00", "Z"), "query": query,
            "calls": calls, "consents_without_call": loose, "fields": EXPORT_FIELDS}
    yield json.dumps(head, ensure_ascii=False)[:-1] + ', "rows": ['
    sep = ""
    for row in rows:
        yield sep + json.dumps(row, ensure_ascii=False)
        sep = ","
    yield "]}"


@bp.get("/calls/<call_sid>")
@workspace_required
def call(call_sid: str):
    """One call: summary, decision, chain status, timeline with audio, recordings, access."""
    if not CALL_SID.fullmatch(call_sid):
        raise NotFound()
    pii = personal_data()
    s = db_session()
    user = logged_in_user()
    with transaction(s):
        row = stored_call(s, call_sid)
        doc = call_timeline(s, call_sid, pii, flows()) if row is not None else None
        if row is None or doc is None:
            record_access(s, user, "view.call", via="web", call_sid=call_sid, found=False)
        else:
            entries = fact_entries(s, call_sid)
            status = verify_entries(s, [e.seq for e in entries], ref=call_sid)
            replay = _replay(s, call_sid)
            accesses = access_entries(s, call_sid)
            recordings = call_recordings(s, call_sid)
            names = agent_names(s, [str(c["agent_id"]) for c in doc["consents"]
                                    if c.get("agent_id")])
            record_access(s, user, "view.call", via="web", call_sid=call_sid,
                          phone_hmac=row.phone_hmac)
    if doc is None:
        return _error(404, _("Unknown call"),
                      _("No call with CallSid %(sid)s is stored.", sid=call_sid))
    index = _audio_index()
    hashes = [p["audio"] for ev in doc["timeline"] for p in ev["prompts"]]
    hashes += [p["audio"] for n in doc["notices"] for p in n["parts"]]
    return render_template("auditor/call.html", doc=doc, events=doc["timeline"],
                           playable=set(index.find(hashes)), chain=status, replay=replay,
                           accesses=accesses, recordings=recordings, agent_names=names)


@bp.get("/audio/<sha256>.wav")
@workspace_required
def audio(sha256: str):
    """A prompt file by the SHA-256 of its bytes, the hash the audit log records."""
    if not HASH.fullmatch(sha256):
        raise NotFound()
    index = _audio_index()
    name = index.find([sha256]).get(sha256)
    if name is None:
        raise NotFound()
    path = index.path(name)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:  # replaced since it was indexed
        raise NotFound()
    return Response(data, mimetype="audio/wav")


def _replay(s, call_sid: str) -> dict:
    """The replay verdict for the page: ok, or where the recomputed path diverges."""
    try:
        result = replay_call(s, flows(), call_sid)
    except (AuditError, LookupError) as e:
        return {"ok": False, "message": str(e)}
    if result.ok:
        return {"ok": True, "message": _("the recorded keys, re-run through the flow engine "
                                         "under the call's flow version, give the same prompts, "
                                         "path and decision as stored")}
    return {"ok": False, "message": _("the paths diverge at %(where)s",
                                               where=result.mismatches[0])}


@bp.post("/calls/<call_sid>/evidence.zip")
@workspace_required
def evidence(call_sid: str):
    """The evidence package of one call, as a ZIP download."""

    if not CALL_SID.fullmatch(call_sid):
        raise NotFound()
    s = db_session()
    try:
        package = build_package(s, app(), call_sid,
                                registry=flows(), pii=personal_data(),
                                index=_audio_index(), user=logged_in_user(),
                                since=request.form.get("since", type=int))
    except EvidenceError as e:
        return _error(e.status, _("Cannot build the evidence package"), str(e))
    return Response(package.data, mimetype="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{package.filename}"'})
