"""Login for the web pages: one-time secret as password, a server-side session, and a
login throttle kept in the database so every worker and machine shares it.

Sessions: the cookie (signed, HttpOnly) holds a random token naming a row of web_sessions
(ivr/storage/web_sessions.py). Every request checks the row, so logout, a disabled account or a
rotated secret end the session at once, a copied cookie included. A session also ends after
PERMANENT_SESSION_LIFETIME without use (30 minutes) and AUDITOR_SESSION_MAX_AGE after
login (8 hours).

Throttle, as identity servers keep it (no account can be locked out from elsewhere), and
alike for every name typed, an account's or not, so that it tells nobody which names are
accounts (OWASP's authentication guidance):
- a name slows down per (name, client address): after AUDITOR_LOGIN_MAX_PER_NAME failures
  in the window, each further try waits AUDITOR_LOGIN_DELAY_SECONDS, doubling per failure
  up to AUDITOR_LOGIN_MAX_DELAY_SECONDS, and is refused before the secret is looked at; a
  correct secret from another address is never slowed by these failures;
- an address has a budget of AUDITOR_LOGIN_MAX_PER_ADDRESS failures in the window, over
  all the names it typed; past it every wrong name or secret from there is answered 429,
  whatever the name, while the right name and secret still log in (the budget slows a
  sprayer of names down and locks no account holder out).

Why the database and not Flask-Limiter: Flask-Limiter keeps counts in process memory
(one count per gunicorn worker, lost on restart) unless it is given Redis, Memcached or
MongoDB, none of which this service runs. Every worker already shares the database.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import ngettext

from ivr.domain.times import utcnow
from ivr.services.accounts import authenticate, session_user
from ivr.services.auditor import login_throttle as throttle
from ivr.services.auditor.access import transaction
from ivr.storage import audit_store, web_sessions
from ivr.storage.accounts import User
from ivr.web.current import session as db_session

from .roles import WORKSPACE_ROLES, area_message, forbidden, home_url, may_open

bp = Blueprint("auth", __name__)

def _limits() -> throttle.Limits:
    return throttle.Limits.from_config(current_app.config)


def _idle() -> timedelta:
    return current_app.config["PERMANENT_SESSION_LIFETIME"]


def _max_age() -> timedelta:
    return current_app.config["AUDITOR_SESSION_MAX_AGE"]


def current_user() -> User | None:
    """The logged-in user of this request, or None (ended, expired, disabled or anonymous)."""
    if "web_user" in g:
        return g.web_user
    user = None
    token = session.get("sid")
    if token is not None:
        s, now = db_session(), utcnow()
        user, touch = session_user(s, token, now, _idle(), _max_age())
        if user is None:
            session.clear()
        elif touch:
            # The idle limit counts from the last use the server saw, in a write of its own
            # (the view that follows opens its own transaction).
            with transaction(s):
                web_sessions.touch(s, web_sessions.token_id(token), now)
    g.web_user = user
    return user


def signed_in_user() -> User:
    """The logged-in user of a view behind workspace_required (or another login guard)."""
    user = current_user()
    if user is None:  # the guard redirects to the login page before the view runs
        raise RuntimeError("a view behind a login guard ran without a logged-in user")
    return user


def workspace_required(view):
    """Protect a page: log in first (redirect), and hold the auditor or admin role (403)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        user = current_user()
        if user is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        if user.role not in WORKSPACE_ROLES:
            return forbidden(user, area_message(WORKSPACE_ROLES, "the auditor workspace"))
        return view(*args, **kwargs)

    return wrapper


def safe_next(target: str | None, user: User | None = None) -> str:
    """A local path to go to after login that the user's role may open; else their home."""
    default = home_url(user)
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    if user is not None and not may_open(user, parts.path):
        return default
    return target


def _address() -> str:
    return (request.remote_addr or "unknown")[:64]


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The login form; on success a fresh session, on failure a counted refusal."""
    next_url = request.values.get("next", "")
    if request.method == "GET":
        return render_template("auditor/login.html", next=next_url, name="", error=None)
    name = (request.form.get("name") or "").strip()[:100]
    secret = request.form.get("secret") or ""
    address, now = _address(), utcnow()
    s = db_session()
    with transaction(s):
        # Every name is counted the same way, an account's or not: the answers (401, then
        # 429 at the same count) never tell which names are accounts.
        key = name.lower() if name else throttle.UNKNOWN
        limits = _limits()
        # A slowed-down name and address are refused before the secret is even looked at.
        wait = throttle.throttled_for(s, limits, key, address, now)
        spent = 0 if wait else throttle.address_spent_for(s, limits, address, now)
        user = None if wait else authenticate(s, secret, name)
        if user is None and not wait:
            throttle.record_failure(s, limits, key, address, now)
            wait = spent  # past the address's budget: any wrong try is answered 429
        elif user is not None:
            throttle.forget(s, key, address)
            # A cookie from before this login names no session afterwards (no fixation).
            web_sessions.end(s, session.get("sid"), now, "replaced")
            web_sessions.forget_old(s, now, _max_age())
            token = web_sessions.start(s, user.id, now)
            audit_store.append(s, [("auditor.login", None, {"user_id": user.id, "user": user.name,
                                                            "role": user.role})], at=now)
    if wait:
        minutes = max(1, round(wait / 60))
        response = current_app.make_response((render_template(
            "auditor/login.html", next=next_url, name=name,
            error=ngettext("Too many failed logins. Try again in about %(num)d minute.",
                           "Too many failed logins. Try again in about %(num)d minutes.",
                           minutes)), 429))
        response.headers["Retry-After"] = str(wait)
        return response
    if user is None:
        return render_template("auditor/login.html", next=next_url, name=name,
                               error=_("Wrong name or secret.")), 401
    session.clear()
    session.permanent = True
    session["sid"] = token
    return redirect(safe_next(next_url, user))


@bp.post("/logout")
def logout():
    """End the session on the server (every copy of its cookie) and clear the cookie."""
    user, token, now = current_user(), session.get("sid"), utcnow()
    if token is not None:
        s = db_session()
        with transaction(s):
            ended = web_sessions.end(s, token, now, "logout")
            if ended and user is not None:
                audit_store.append(s, [("auditor.logout", None, {"user_id": user.id,
                                                                 "user": user.name})], at=now)
    session.clear()
    return redirect(url_for("auth.login"))
