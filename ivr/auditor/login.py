"""Login for the web pages: one-time secret as password, a signed expiring session cookie,
and a login throttle kept in the database so every worker and machine shares it.

Why the database and not Flask-Limiter: Flask-Limiter keeps counts in process memory
(one count per gunicorn worker, lost on restart) unless it is given Redis, Memcached or
MongoDB, none of which this service runs. Every worker already shares the database, so
failed logins per (name, client address) and per address are counted there.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from sqlalchemy import String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..accounts import User, authenticate
from ..audit import chain
from ..db import Base, utcnow
from ..db import session as db_session
from .access import transaction

bp = Blueprint("auth", __name__)

WORKSPACE_ROLES = ("auditor", "admin")


class LoginFailure(Base):
    """One refused login, kept only as long as the throttle window."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(index=True)


def _limits():
    cfg = current_app.config
    return (timedelta(seconds=int(cfg.get("AUDITOR_LOGIN_WINDOW_SECONDS", 900))),
            int(cfg.get("AUDITOR_LOGIN_MAX_PER_NAME", 5)),
            int(cfg.get("AUDITOR_LOGIN_MAX_PER_ADDRESS", 20)))


def throttled_for(s: Session, name: str, address: str, now: datetime) -> int:
    """Seconds until this name and address may try again; 0 when they may try now."""
    window, per_name, per_address = _limits()
    waits = []
    for where, limit in (((LoginFailure.name == name, LoginFailure.address == address), per_name),
                         ((LoginFailure.address == address,), per_address)):
        # Locked while `limit` failures lie in the window: until the limit-th newest expires.
        times = s.scalars(select(LoginFailure.at).where(*where, LoginFailure.at > now - window)
                          .order_by(LoginFailure.at.desc()).limit(limit)).all()
        if len(times) >= limit:
            waits.append((times[limit - 1] + window - now).total_seconds())
    return max(1, int(max(waits)) + 1) if waits else 0


def record_failure(s: Session, name: str, address: str, now: datetime) -> None:
    """Count one refused login, and forget the ones older than the window."""
    window, _, _ = _limits()
    s.execute(delete(LoginFailure).where(LoginFailure.at <= now - window))
    s.add(LoginFailure(name=name, address=address, at=now))


def failures(s: Session, name: str, address: str) -> int:
    """Failures currently counted against this name and address (for tests and operators)."""
    return s.scalar(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.name == name, LoginFailure.address == address))


def _session_fingerprint(user: User) -> str:
    # Ties the cookie to the secret: a new secret or a deactivated account logs out.
    return user.secret_hash[:16]


def current_user() -> User | None:
    """The logged-in user of this request, or None (expired, deactivated or anonymous)."""
    if "web_user" in g:
        return g.web_user
    user = None
    uid = session.get("uid")
    if isinstance(uid, int):
        user = db_session().get(User, uid)
        max_age = current_app.config["AUDITOR_SESSION_MAX_AGE"].total_seconds()
        if (user is None or not user.active
                or session.get("sh") != _session_fingerprint(user)
                or time.time() - float(session.get("t0", 0)) > max_age):
            user = None
            session.clear()
    g.web_user = user
    return user


def workspace_required(view):
    """Protect a page: log in first (redirect), and hold the auditor or admin role (403)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        user = current_user()
        if user is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        if user.role not in WORKSPACE_ROLES:
            return render_template(
                "auditor/error.html", code=403, title="Not allowed",
                message=f"Your account has the {user.role} role. The auditor workspace is "
                        "for the auditor and admin roles."), 403
        return view(*args, **kwargs)

    return wrapper


def safe_next(target: str | None) -> str:
    """A local path to go to after login; anything else goes to the workspace."""
    default = url_for("auditor.search")
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
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
    key, address, now = name.lower(), _address(), utcnow()
    s = db_session()
    with transaction(s):
        # A locked-out name and address are refused before the secret is even looked at.
        wait = throttled_for(s, key, address, now)
        user = None if wait else authenticate(s, secret, name)
        if user is None and not wait:
            record_failure(s, key, address, now)
        elif user is not None:
            s.execute(delete(LoginFailure).where(LoginFailure.name == key,
                                                 LoginFailure.address == address))
            chain.append(s, [("auditor.login", None, {"user_id": user.id, "user": user.name,
                                                      "role": user.role})], at=now)
    if wait:
        minutes = max(1, round(wait / 60))
        response = current_app.make_response((render_template(
            "auditor/login.html", next=next_url, name=name,
            error=f"Too many failed logins. Try again in about {minutes} minute(s)."), 429))
        response.headers["Retry-After"] = str(wait)
        return response
    if user is None:
        return render_template("auditor/login.html", next=next_url, name=name,
                               error="Wrong name or secret."), 401
    session.clear()
    session.permanent = True
    session["uid"] = user.id
    session["sh"] = _session_fingerprint(user)
    session["t0"] = time.time()
    return redirect(safe_next(next_url))


@bp.post("/logout")
def logout():
    """End the session."""
    session.clear()
    return redirect(url_for("auth.login"))
