"""Playing a call's recording: fetched from Twilio per request, streamed, each play audited."""

from __future__ import annotations

from flask import Response, current_app, render_template, stream_with_context
from flask_babel import gettext as _
from werkzeug.exceptions import NotFound

from ivr.adapters.twilio_recordings import EXTENSIONS, MediaUnavailable, TwilioAccount, open_media
from ivr.services.auditor.access import access_entry, transaction
from ivr.services.auditor.recordings import RECORDING_SID, playable
from ivr.storage import audit_store
from ivr.web.current import session as db_session

from .blueprint import bp
from .login import logged_in_user, workspace_required
from .search import CALL_SID


@bp.get("/calls/<call_sid>/recordings/<recording_sid>.wav")
@workspace_required
def recording(call_sid: str, recording_sid: str):
    """A recording's audio, from Twilio to the browser; an auditor.access entry per play."""
    if not CALL_SID.fullmatch(call_sid) or not RECORDING_SID.fullmatch(recording_sid):
        raise NotFound()
    s = db_session()
    with transaction(s):
        known = playable(s, call_sid, recording_sid)
    if not known:
        raise NotFound()
    try:
        media = open_media(TwilioAccount.from_config(current_app.config), recording_sid)
    except MediaUnavailable as e:
        from ivr.web.i18n import media_error  # i18n imports this package
        return render_template("auditor/error.html", code=e.status,
                               title=_("The recording cannot be played"),
                               message=media_error(e.reason), detail=e.detail), e.status
    try:
        with transaction(s):
            kind, ref, data = access_entry(logged_in_user(), "play.recording", via="web",
                                           call_sid=call_sid)
            audit_store.append(s, [(kind, ref, {**data, "recording_sid": recording_sid})])
    except Exception:
        media.close()  # no audit entry, no audio
        raise
    # Only WAV or MP3 reaches here (open_media); named as a file, never sniffed as a page.
    headers = {"Accept-Ranges": "none", "X-Content-Type-Options": "nosniff",
               "Content-Disposition":
               f'inline; filename="{recording_sid}.{EXTENSIONS[media.content_type]}"'}
    if media.length:
        headers["Content-Length"] = media.length
    return Response(stream_with_context(media.chunks()), mimetype=media.content_type,
                    headers=headers)
