"""User accounts (auditor, agent, admin): one-time secrets stored hashed, and their
lifecycle (list, disable, enable, rotate), each change an audit entry."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.storage import audit_store, web_sessions
from ivr.storage.accounts import User

ROLES = ("auditor", "agent", "admin")


class AccountError(Exception):
    """An account cannot be created or used."""


def hash_secret(secret: str) -> str:
    """SHA-256 of a secret. Secrets are 256-bit random tokens, so a fast hash suffices."""
    return hashlib.sha256(secret.encode()).hexdigest()


def add_user(s: Session, name: str, role: str) -> tuple[User, str]:
    """Create an account; returns it and its one-time secret (shown once, stored hashed)."""
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if not name or len(name) > 100:
        raise AccountError("a name of 1 to 100 characters is required")
    secret = "ivr_" + secrets.token_urlsafe(32)
    user = User(name=name, role=role, secret_hash=hash_secret(secret))
    s.add(user)
    try:
        s.flush()
    except IntegrityError:
        raise AccountError(f"an account named {name!r} already exists") from None
    return user, secret


def find_user(s: Session, name: str) -> User:
    """The account with this exact name, or AccountError."""
    user = s.scalar(select(User).where(User.name == name))
    if user is None:
        raise AccountError(f"no account named {name!r} (see: python -m ivr users list)")
    return user


def _facts(user: User, by: str | None, **more) -> dict:
    return {"user_id": user.id, "user": user.name, "role": user.role,
            "by": (by or "")[:100] or None, **more}


def set_active(s: Session, user: User, active: bool, now: datetime,
               by: str | None = None) -> int:
    """Disable or enable an account, as an audit entry; disabling ends its sessions at once.

    Returns how many web sessions ended. Its bearer token stops working with the same
    commit: every API request checks that the account is active.
    """
    if user.active == active:
        state = "active" if active else "disabled"
        raise AccountError(f"the account {user.name!r} is already {state}")
    user.active = active
    ended = 0 if active else web_sessions.end_all(s, user.id, now, "disabled")
    kind = "account.enabled" if active else "account.disabled"
    audit_store.append(s, [(kind, f"user:{user.id}", _facts(user, by, sessions_ended=ended))],
                       at=now)
    return ended


def rotate_secret(s: Session, user: User, now: datetime,
                  by: str | None = None) -> tuple[str, int]:
    """Give an account a new secret, as an audit entry: the old secret stops working as
    password and bearer token, and every web session of the account ends.

    Returns the new secret (shown once, stored hashed) and how many sessions ended.
    """
    secret = "ivr_" + secrets.token_urlsafe(32)
    user.secret_hash = hash_secret(secret)
    ended = web_sessions.end_all(s, user.id, now, "rotated")
    audit_store.append(s, [("account.rotated", f"user:{user.id}",
                            _facts(user, by, sessions_ended=ended))], at=now)
    return secret, ended


def list_users(s: Session, now: datetime, idle: timedelta, max_age: timedelta,
               by: str | None = None) -> list[tuple[User, int]]:
    """Every account with its number of live web sessions; the listing is an audit entry."""
    users = list(s.scalars(select(User).order_by(User.id)))
    rows = [(u, web_sessions.open_count(s, u.id, now, idle, max_age)) for u in users]
    audit_store.append(s, [("account.listed", None, {"by": (by or "")[:100] or None,
                                                "count": len(users)})], at=now)
    return rows


def authenticate(s: Session, secret: str | None, name: str | None = None) -> User | None:
    """The active user holding this secret (and name, when given), or None."""
    if not secret or len(secret) > 200:
        return None
    user = s.scalar(select(User).where(User.secret_hash == hash_secret(secret)))
    if user is None or not user.active:
        return None
    if name is not None and not hmac.compare_digest(user.name.encode(), name.encode()):
        return None
    return user


def session_user(s: Session, token: str, now: datetime, idle: timedelta,
                 max_age: timedelta) -> tuple[User | None, bool]:
    """The active user a live web session belongs to (None when the session ended, expired or
    its user is disabled), and whether the session's last use should be written now."""
    row = web_sessions.alive(s, token, now, idle, max_age)
    user = s.get(User, row.user_id) if row is not None else None
    if row is None or user is None or not user.active:
        return None, False
    return user, web_sessions.needs_touch(row, now)


def set_language(s: Session, user: User, language: str) -> None:
    """Store the language a user's pages are shown in."""
    user.language = language
    s.add(user)
