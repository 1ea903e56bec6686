"""What every command shares: the app it runs in, and times from the command line."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import click
from flask.cli import ScriptInfo
from sqlalchemy.exc import SQLAlchemyError

from ivr.domain.config import ConfigError
from ivr.domain.flow import InvalidFlow
from ivr.domain.pii import DataKeyError
from ivr.storage.embedded_pg import EmbeddedServerError
from ivr.web.app import create_app


def _app():
    ctx = click.get_current_context(silent=True)
    info = ctx.find_object(ScriptInfo) if ctx else None
    if info is not None and info.create_app is not None:
        return info.load_app()
    return create_app()


def with_app(f):
    """Run the command inside an app context; configuration problems exit with one line."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            app = _app()
            with app.app_context():
                return f(*args, **kwargs)
        except (InvalidFlow, ConfigError, DataKeyError, EmbeddedServerError) as e:
            raise click.ClickException(str(e)) from None
        except SQLAlchemyError as e:
            first = str(getattr(e, "orig", e)).splitlines()[0]
            raise click.ClickException(
                f"database error: {first}. Is the database reachable and set up "
                "(.venv/bin/python -m ivr db upgrade)?") from None

    return wrapper


def parse_when(value: str | None) -> datetime | None:
    """An ISO date or datetime from the command line, as UTC."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 date or time: {value}") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
