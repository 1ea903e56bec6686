"""The accounts table (auditors, agents and admins, with their secrets stored hashed) and
the refused logins the login throttle counts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from ivr.domain.times import utcnow

from .base import Base


class User(Base):
    """A person who uses the API or the auditor pages."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The workspace language the user chose ("tr" or "en"); none chosen means Turkish.
    language: Mapped[str | None] = mapped_column(String(8), default=None)


class LoginFailure(Base):
    """One refused login, kept only as long as the throttle window."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(index=True)
