"""`GET /audit/checkpoint`: the latest signed checkpoint, for anyone (it names no caller),
with every witness cosignature collected for it as extra signature lines.

A public checkpoint holds the tree's size, so polling it measures how many leaves (calls,
key presses, logins) the log takes over time. An operator who does not want that seen
finely sets IVR_CHECKPOINT_PUBLISH_MINUTES: the endpoint then serves only the newest
checkpoint signed before the current N-minute period began (periods counted from the Unix
epoch, in UTC), so what it shows changes at most once every N minutes. The checkpoints
themselves, and every proof built on them, are unchanged (docs/auditors.md).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app

from ivr.domain.config import ConfigError
from ivr.domain.times import utcnow
from ivr.storage.anchor_store import cosignature_lines
from ivr.storage.audit_tree import latest_head
from ivr.web.current import session

bp = Blueprint("audit_log", __name__)

PUBLISH_ENV = "IVR_CHECKPOINT_PUBLISH_MINUTES"


def publish_minutes(app: Flask) -> int:
    """Minutes between published checkpoints (IVR_CHECKPOINT_PUBLISH_MINUTES); 0: every
    checkpoint as soon as it is signed."""
    raw = app.config.get("CHECKPOINT_PUBLISH_MINUTES") or os.environ.get(PUBLISH_ENV) or "0"
    return int(raw)


def published_before(minutes: int, now: datetime) -> datetime | None:
    """The start of the current `minutes`-long period: checkpoints signed before it are
    published. None when every checkpoint is."""
    if minutes <= 0:
        return None
    period = minutes * 60
    return datetime.fromtimestamp(int(now.timestamp()) // period * period, UTC)


@bp.get("/audit/checkpoint")
def latest_checkpoint():
    """The latest published signed note, as text/plain; 404 before the first one."""
    s = session()
    head = latest_head(s, signed_before=published_before(publish_minutes(current_app),
                                                         utcnow()))
    cosigs = cosignature_lines(s, head.id) if head is not None else []
    s.rollback()
    if head is None:
        return Response("no checkpoint published yet\n", status=404, mimetype="text/plain")
    return Response(head.note + "".join(cosigs), mimetype="text/plain",
                    headers={"Cache-Control": "no-cache"})


def init_app(app) -> None:
    """Serve the latest checkpoint; a wrong IVR_CHECKPOINT_PUBLISH_MINUTES stops start-up."""
    raw = app.config.get("CHECKPOINT_PUBLISH_MINUTES") or os.environ.get(PUBLISH_ENV) or "0"
    if not str(raw).strip().isdigit() or int(raw) > 24 * 60:
        raise ConfigError(f"{PUBLISH_ENV} must be a whole number of minutes from 0 to 1440, "
                         f"not {raw!r}")
    app.register_blueprint(bp)
