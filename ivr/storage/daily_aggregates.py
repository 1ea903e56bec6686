"""The daily aggregates: counts per Istanbul day that grow with days, not with calls.

- `daily_consents`: consent records per day (of `captured_at`) × decision × language ×
  origin × agent × flow version × notice version;
- `daily_notices`: the same records per day × flow version × language × notice version (the
  flow registry reads every day of them);
- `daily_runs`: flow runs per day (of `created_at`) × flow version × language: the runs,
  the calls whose first run of that version it was, the calls from a hidden number whose
  first such run it was, and the first and last start;
- `daily_hangups`: runs that hung up without a decision, per day × language × notice phase;
- `aggregate_marks`: the days a write changed since they were last counted, one row per
  marking write, inserted by triggers (sql/daily_aggregates.sql) inside the writing
  statement.

A value the stored row does not have (no agent, no language) is the empty string here, so
each key is a primary key. ivr/services/daily_aggregates.py computes and reads them.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from sqlalchemy import BigInteger, Date, Integer, String
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base

SQL = Path(__file__).parent / "sql" / "daily_aggregates.sql"


class DailyConsents(Base):
    """Consent records of one Istanbul day with one value of every breakdown."""

    __tablename__ = "daily_consents"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    decision: Mapped[str] = mapped_column(String(16), primary_key=True)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    origin: Mapped[str] = mapped_column(String(16), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    flow_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    notice_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    consents: Mapped[int] = mapped_column(Integer)


class DailyNotices(Base):
    """Consent records of one Istanbul day per flow version, language and notice version
    (what the flow registry reads over every day: a few rows a day)."""

    __tablename__ = "daily_notices"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    flow_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    notice_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    consents: Mapped[int] = mapped_column(Integer)


class DailyRuns(Base):
    """Flow runs started on one Istanbul day under one flow version in one language."""

    __tablename__ = "daily_runs"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    flow_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    runs: Mapped[int] = mapped_column(Integer)
    calls: Mapped[int] = mapped_column(Integer)  # calls whose first run of this version
    hidden: Mapped[int] = mapped_column(Integer)  # hidden-number calls' first such run
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]


class DailyHangups(Base):
    """Runs started on one Istanbul day, in one language, that hung up without a decision
    during one phase of the notice."""

    __tablename__ = "daily_hangups"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    phase: Mapped[str] = mapped_column(String(100), primary_key=True)
    hangups: Mapped[int] = mapped_column(Integer)


class AggregateMark(Base):
    """A write changed this Istanbul day's counts, and they are not counted again yet."""

    __tablename__ = "aggregate_marks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date, index=True)


def create_sql() -> str:
    """The trigger functions and triggers that mark the days writes change."""
    return SQL.read_text("utf-8")


def install(engine: Engine) -> None:
    """Create (or replace) the triggers that mark the days writes change."""
    with engine.begin() as conn:
        conn.exec_driver_sql(create_sql())
