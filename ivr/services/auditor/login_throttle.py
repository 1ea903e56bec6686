"""Refused logins, counted per name and address and per address, and how long each must wait.

Every name is counted the same way, an account's or not, so the answers never tell which
names are accounts. The limits come from the app's settings (`Limits.from_config`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ivr.storage.accounts import LoginFailure

# The failures of an empty name are counted under this key.
UNKNOWN = ""


@dataclass(frozen=True)
class Limits:
    """How many failures are free, how the wait grows, and the address's budget."""

    window: timedelta = timedelta(seconds=900)
    free_per_name: int = 5
    delay: int = 30
    max_delay: int = 900
    per_address: int = 20

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Limits:
        """The limits an app's configuration sets (AUDITOR_LOGIN_*), else the defaults."""
        d = cls()
        return cls(
            timedelta(seconds=int(config.get("AUDITOR_LOGIN_WINDOW_SECONDS",
                                             int(d.window.total_seconds())))),
            int(config.get("AUDITOR_LOGIN_MAX_PER_NAME", d.free_per_name)),
            int(config.get("AUDITOR_LOGIN_DELAY_SECONDS", d.delay)),
            int(config.get("AUDITOR_LOGIN_MAX_DELAY_SECONDS", d.max_delay)),
            int(config.get("AUDITOR_LOGIN_MAX_PER_ADDRESS", d.per_address)))


def _recent(s: Session, limits: Limits, name: str, address: str, now: datetime,
            limit: int) -> list[datetime]:
    return list(s.scalars(select(LoginFailure.at).where(
        LoginFailure.name == name, LoginFailure.address == address,
        LoginFailure.at > now - limits.window).order_by(LoginFailure.at.desc()).limit(limit)))


def slow_down(limits: Limits, failed: int) -> timedelta:
    """How long a known account waits at one address after `failed` failures there."""
    if failed < limits.free_per_name:
        return timedelta(0)
    return timedelta(seconds=min(limits.max_delay,
                                 limits.delay * 2 ** min(failed - limits.free_per_name, 32)))


def _seconds_until(until: datetime | None, now: datetime) -> int:
    if until is None or until <= now:
        return 0
    return max(1, math.ceil((until - now).total_seconds()))


def throttled_for(s: Session, limits: Limits, name: str, address: str, now: datetime) -> int:
    """Seconds until this name may try again from this address; 0 when it may try now.

    `name` is the failure key: the name as typed, lowercased (UNKNOWN when empty), the same
    rule whether or not it is an account's.
    """
    times = _recent(s, limits, name, address, now, 64)
    wait = slow_down(limits, len(times))
    return _seconds_until(times[0] + wait if wait else None, now)


def address_spent_for(s: Session, limits: Limits, address: str, now: datetime) -> int:
    """Seconds until this address is under its budget of failures again (every name it
    typed counts); 0 when it is under it now."""
    limit = limits.per_address
    times = list(s.scalars(select(LoginFailure.at).where(
        LoginFailure.address == address, LoginFailure.at > now - limits.window)
        .order_by(LoginFailure.at.desc()).limit(limit)))
    # Spent while `limit` failures lie in the window: until the oldest of them expires.
    return _seconds_until(times[-1] + limits.window if len(times) >= limit else None, now)


def record_failure(s: Session, limits: Limits, name: str, address: str, now: datetime) -> None:
    """Count one refused login, and forget the ones older than the window."""
    s.execute(delete(LoginFailure).where(LoginFailure.at <= now - limits.window))
    s.add(LoginFailure(name=name, address=address, at=now))


def forget(s: Session, name: str, address: str) -> None:
    """A login succeeded: this name's failures at this address no longer count."""
    s.execute(delete(LoginFailure).where(LoginFailure.name == name,
                                         LoginFailure.address == address))


def failures(s: Session, name: str, address: str) -> int:
    """Failures currently counted against this name and address (for tests and operators)."""
    return s.scalar(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.name == name, LoginFailure.address == address)) or 0
