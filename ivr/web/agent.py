"""The agent's page: a transfer's live status, read from the JSON API with the agent's token."""

from __future__ import annotations

import re
import secrets

from flask import Blueprint, abort, make_response, render_template

bp = Blueprint("agent", __name__, url_prefix="/agent")
TRANSFER_ID = re.compile(r"[0-9a-f]{32}")


@bp.get("/transfers/<transfer_id>")
def transfer_page(transfer_id: str):
    """The status page of one transfer.

    The page itself holds no data: the script asks for the agent's bearer token, keeps it
    in this tab's sessionStorage, and polls GET /api/transfers/<id> with it. So the page
    needs no login session of its own, and the API's role checks decide what is shown.
    """
    if not TRANSFER_ID.fullmatch(transfer_id):
        abort(404)
    nonce = secrets.token_urlsafe(16)
    response = make_response(render_template("agent/transfer.html", transfer_id=transfer_id,
                                             nonce=nonce))
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
