"""The agent's pages: the desk (ivr/web/agent_desk.py) and one transfer's live status.

The status page works two ways. Logged in (agents, auditors and admins), its script polls
the desk's own JSON endpoint with the session cookie. Without a session it asks for the
agent's bearer token, keeps it in this tab's sessionStorage and polls the JSON API with it.
Either way the page itself holds no data: the role checks of the endpoint decide.
"""

from __future__ import annotations

import re

from flask import Blueprint, abort, make_response, render_template, url_for

from ivr.web.auditor.login import current_user

bp = Blueprint("agent", __name__, url_prefix="/agent")
TRANSFER_ID = re.compile(r"[0-9a-f]{32}")
# Stricter than the site's policy: scripts, styles and fetches from this origin, nothing else.
AGENT_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
             "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def agent_page(html: str, status: int = 200):
    """An agent page with its own policy and no caching."""
    response = make_response(html, status)
    response.headers["Content-Security-Policy"] = AGENT_CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/transfers/<transfer_id>")
def transfer_page(transfer_id: str):
    """The status page of one transfer (session when logged in, else the pasted token)."""
    if not TRANSFER_ID.fullmatch(transfer_id):
        abort(404)
    user = current_user()
    if user is not None:
        source = url_for("agent.transfer_json", transfer_id=transfer_id)
    else:
        source = url_for("api.get_transfer", transfer_id=transfer_id)
    return agent_page(render_template("agent/transfer.html", transfer_id=transfer_id,
                                      mode="session" if user else "token", source=source))
