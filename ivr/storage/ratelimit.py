"""Rate-limit counters in the database every app server shares (a `limits` storage).

Flask-Limiter keeps its counters in process memory unless it is given Redis, Memcached or
MongoDB, none of which this service runs; in memory each gunicorn worker on each machine
would count on its own. The counters live in the rate_limits table instead: one row per
key and fixed window, bumped by one atomic upsert per limited request.
"""

from __future__ import annotations

import secrets
import time

from limits.storage import Storage
from sqlalchemy import Float, String, case, delete, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class RateLimitCounter(Base):
    """One fixed-window counter: how many hits `key` had in the window ending at expires_at."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class DatabaseStorage(Storage):
    """`limits` storage on the app's database: `storage_uri="ivr+db://"`, engine in options."""

    STORAGE_SCHEME = ["ivr+db"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 engine: Engine | None = None, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        if engine is None:
            raise ValueError("DatabaseStorage needs the engine (storage_options={'engine': ...})")
        self.engine = engine

    @property
    def base_exceptions(self):
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount` to the key's window (a new window if the old one ended); the new count."""
        now = time.time()
        table = RateLimitCounter.__table__
        insert = postgresql.insert(RateLimitCounter)
        ended = table.c.expires_at <= now
        stmt = insert.values(key=key, count=amount, expires_at=now + expiry).on_conflict_do_update(
            index_elements=[table.c.key],
            set_={"count": case((ended, amount), else_=table.c.count + amount),
                  "expires_at": case((ended, now + expiry), else_=table.c.expires_at)},
        ).returning(table.c.count)
        with self.engine.begin() as conn:
            count = conn.execute(stmt).scalar_one()
            if secrets.randbelow(100) == 0:  # now and then, forget windows long over
                conn.execute(delete(RateLimitCounter).where(table.c.expires_at < now - 3600))
        return count

    def get(self, key: str) -> int:
        """The key's count in its current window (0 when none)."""
        with self.engine.connect() as conn:
            count = conn.scalar(select(RateLimitCounter.count).where(
                RateLimitCounter.key == key, RateLimitCounter.expires_at > time.time()))
        return count or 0

    def get_expiry(self, key: str) -> float:
        """When the key's window ends (now when there is none)."""
        with self.engine.connect() as conn:
            at = conn.scalar(select(RateLimitCounter.expires_at).where(
                RateLimitCounter.key == key))
        now = time.time()
        return at if at and at > now else now

    def check(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        """Forget every counter; how many there were."""
        with self.engine.begin() as conn:
            n = conn.scalar(select(func.count()).select_from(RateLimitCounter))
            conn.execute(delete(RateLimitCounter))
        return n

    def clear(self, key: str) -> None:
        """Forget one key's counter."""
        with self.engine.begin() as conn:
            conn.execute(delete(RateLimitCounter).where(RateLimitCounter.key == key))
