"""User accounts (auditor, agent, admin): one-time secrets stored hashed, bearer tokens."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from datetime import datetime

import click
from flask import Flask, g, request
from sqlalchemy import String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

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


def init_app(app: Flask) -> None:
    """Nothing to attach yet; the model is registered by importing this module."""
