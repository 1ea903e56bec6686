"""Server-side sessions of the web pages: the cookie carries a random token, the database
says whether the session it names is still alive.

A signed cookie alone cannot be taken back: a copy of it stays valid until it expires.
Here every request looks its session up, so ending the row (logout, a disabled account,
a rotated secret) ends every copy of the cookie at once.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from .models import WebSession
from .results import rows_affected

# A live session's last_seen_at is written at most this often: not one write per page view.
TOUCH_EVERY = timedelta(seconds=60)
# Ended or expired rows are kept this long (to tell an operator why a session ended).
KEEP_ENDED = timedelta(days=1)


def token_id(token: str) -> str:
    """The stored id of a cookie token (its SHA-256): the table alone forges no cookie."""
    return hashlib.sha256(token.encode()).hexdigest()


def start(s: Session, user_id: int, now: datetime) -> str:
    """Open a session for a user; returns the token for the cookie."""
    token = secrets.token_urlsafe(32)
    s.add(WebSession(id=token_id(token), user_id=user_id, created_at=now, last_seen_at=now))
    return token


def alive(s: Session, token: str | None, now: datetime, idle: timedelta,
          max_age: timedelta) -> WebSession | None:
    """The live session a cookie token names, or None (unknown, ended, idle or too old)."""
    if not isinstance(token, str) or not token or len(token) > 100:
        return None
    row = s.get(WebSession, token_id(token))
    if row is None or row.ended_at is not None:
        return None
    if now - row.last_seen_at > idle:
        return None
    if now - row.created_at > max_age:
        return None
    return row


def needs_touch(row: WebSession, now: datetime) -> bool:
    """Whether the session's last use should be written now (bounded to one write a minute)."""
    return now - row.last_seen_at >= TOUCH_EVERY


def touch(s: Session, session_id: str, now: datetime) -> None:
    """Record a use of a live session (it resets the idle limit)."""
    s.execute(update(WebSession).where(WebSession.id == session_id,
                                       WebSession.ended_at.is_(None))
              .values(last_seen_at=now))


def end(s: Session, token: str | None, now: datetime, reason: str) -> bool:
    """End the session a cookie token names; True if it was alive."""
    if not isinstance(token, str) or not token or len(token) > 100:
        return False
    result = s.execute(update(WebSession).where(WebSession.id == token_id(token),
                                                WebSession.ended_at.is_(None))
                       .values(ended_at=now, end_reason=reason))
    return rows_affected(result) > 0


def end_all(s: Session, user_id: int, now: datetime, reason: str) -> int:
    """End every session of a user; how many were open."""
    result = s.execute(update(WebSession).where(WebSession.user_id == user_id,
                                                WebSession.ended_at.is_(None))
                       .values(ended_at=now, end_reason=reason))
    return rows_affected(result)


def open_count(s: Session, user_id: int, now: datetime, idle: timedelta,
               max_age: timedelta) -> int:
    """How many live sessions a user has."""
    return s.execute(select(func.count()).select_from(WebSession).where(
        WebSession.user_id == user_id, WebSession.ended_at.is_(None),
        WebSession.last_seen_at > now - idle, WebSession.created_at > now - max_age)
    ).scalar_one()


def forget_old(s: Session, now: datetime, max_age: timedelta) -> None:
    """Delete sessions that ended, or could no longer be used, more than a day ago."""
    s.execute(delete(WebSession).where(or_(
        WebSession.ended_at < now - KEEP_ENDED,
        WebSession.created_at < now - max_age - KEEP_ENDED)))
