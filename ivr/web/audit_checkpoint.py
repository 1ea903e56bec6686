"""`GET /audit/checkpoint`: the latest signed checkpoint, for anyone (it names no caller),
with every witness cosignature collected for it as extra signature lines."""

from __future__ import annotations

from flask import Blueprint, Response

from ..storage.anchor_store import cosignature_lines
from ..storage.audit_tree import latest_head
from ..storage.db import session

bp = Blueprint("audit_log", __name__)


@bp.get("/audit/checkpoint")
def latest_checkpoint():
    """The latest signed note, as text/plain; 404 before the first checkpoint."""
    s = session()
    head = latest_head(s)
    cosigs = cosignature_lines(s, head.id) if head is not None else []
    s.rollback()
    if head is None:
        return Response("no checkpoint yet\n", status=404, mimetype="text/plain")
    return Response(head.note + "".join(cosigs), mimetype="text/plain",
                    headers={"Cache-Control": "no-cache"})


def init_app(app) -> None:
    """Serve the latest checkpoint."""
    app.register_blueprint(bp)
