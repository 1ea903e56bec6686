"""User accounts (auditor, agent, admin): one-time secrets stored hashed, bearer tokens,
and their lifecycle (list, disable, enable, rotate), each change an audit entry."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import click
from flask import Flask, current_app, g, request
from sqlalchemy import String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import web_sessions
from .audit import chain
from .db import Base, session, utcnow

ROLES = ("auditor", "agent", "admin")


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
    chain.append(s, [(kind, f"user:{user.id}", _facts(user, by, sessions_ended=ended))], at=now)
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
    chain.append(s, [("account.rotated", f"user:{user.id}",
                      _facts(user, by, sessions_ended=ended))], at=now)
    return secret, ended


def list_users(s: Session, now: datetime, idle: timedelta, max_age: timedelta,
               by: str | None = None) -> list[tuple[User, int]]:
    """Every account with its number of live web sessions; the listing is an audit entry."""
    users = list(s.scalars(select(User).order_by(User.id)))
    rows = [(u, web_sessions.open_count(s, u.id, now, idle, max_age)) for u in users]
    chain.append(s, [("account.listed", None, {"by": (by or "")[:100] or None,
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


def bearer_user() -> User | None:
    """The user of this request's `Authorization: Bearer` token, if any."""
    if "bearer_user" not in g:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        g.bearer_user = authenticate(session(), token)
    return g.bearer_user


def require_token(*roles: str):
    """Protect an API view: a valid bearer token with one of `roles` (admin always passes)."""
    from .api.errors import error_response

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            user = bearer_user()
            if user is None:
                return error_response(401, "a valid bearer token is required")
            if user.role != "admin" and user.role not in roles:
                return error_response(403, f"the {user.role} role cannot use this")
            return view(*args, **kwargs)

        return wrapper

    return decorator


@click.group("users")
def users_cli():
    """Accounts for auditors, agents and admins."""


@users_cli.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
def users_add(name, role):
    """Create an account and print its one-time secret, alone on the last line."""
    from .cli import with_app

    @with_app
    def run():
        s = session()
        try:
            with s.begin():
                user, secret = add_user(s, name, role)
        except AccountError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"Created {user.role} account {user.name!r} (id {user.id}). "
                   "Its secret is shown once; it works as password and bearer token:")
        click.echo(secret)

    run()


LOCAL = ZoneInfo("Europe/Istanbul")
BY = click.option("--by", default=None, help="Who does this (recorded in the audit log).")


def _account_command(change):
    """Run `change(s, user, now)` on the named account in one transaction; errors exit 1."""
    from .cli import with_app

    @with_app
    def run(name):
        s = session()
        try:
            with s.begin():
                user = find_user(s, name)
                result = change(s, user, utcnow())
        except AccountError as e:
            raise click.ClickException(str(e)) from None
        return user, result

    return run


def _ended(n: int) -> str:
    return f"{n} web session{'' if n == 1 else 's'} ended"


@users_cli.command("list")
@BY
def users_list(by):
    """Every account: id, name, role, status, live web sessions and when it was created."""
    from .cli import with_app

    @with_app
    def run():
        s, cfg = session(), current_app.config
        with s.begin():
            rows = list_users(s, utcnow(), cfg["PERMANENT_SESSION_LIFETIME"],
                              cfg["AUDITOR_SESSION_MAX_AGE"], by)
        if not rows:
            click.echo("No accounts yet. Create one: python -m ivr users add NAME --role auditor")
            return
        width = max(4, *(len(u.name) for u, _ in rows))
        click.echo(f"{'ID':>4}  {'NAME':<{width}}  {'ROLE':<7}  {'STATUS':<8}  SESSIONS  "
                   "CREATED (Europe/Istanbul)")
        for u, live in rows:
            created = u.created_at.astimezone(LOCAL).strftime("%d.%m.%Y %H:%M")
            status = "active" if u.active else "disabled"
            click.echo(f"{u.id:>4}  {u.name:<{width}}  {u.role:<7}  {status:<8}  "
                       f"{live:>8}  {created}")

    run()


@users_cli.command("disable")
@click.argument("name")
@BY
def users_disable(name, by):
    """Disable an account: its web sessions and its bearer token stop working at once."""
    user, ended = _account_command(lambda s, u, now: set_active(s, u, False, now, by))(name)
    click.echo(f"Disabled {user.role} account {user.name!r} (id {user.id}); {_ended(ended)}.")


@users_cli.command("enable")
@click.argument("name")
@BY
def users_enable(name, by):
    """Enable a disabled account again (with the secret it had)."""
    user, _ = _account_command(lambda s, u, now: set_active(s, u, True, now, by))(name)
    click.echo(f"Enabled {user.role} account {user.name!r} (id {user.id}).")


@users_cli.command("rotate")
@click.argument("name")
@BY
def users_rotate(name, by):
    """Give an account a new secret, printed alone on the last line; the old one stops
    working and every web session of the account ends."""
    user, (secret, ended) = _account_command(lambda s, u, now: rotate_secret(s, u, now, by))(name)
    note = "" if user.active else " The account stays disabled until `users enable`."
    click.echo(f"New secret for {user.role} account {user.name!r} (id {user.id}); "
               f"the old one no longer works, {_ended(ended)}.{note} "
               "It is shown once; it works as password and bearer token:")
    click.echo(secret)


def init_app(app: Flask) -> None:
    """Nothing to attach yet; the model is registered by importing this module."""
