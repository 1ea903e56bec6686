"""The current app's parts, for views and CLI commands: its database and this request's
session, its flows, personal-data keys and spool, and the Context the webhook verbs take.

Flask's `current_app` and `g` are read here (and in views), never in ivr/services/ or
ivr/storage/: those take what they need as arguments, so a page, a command and a test call
the same function with the same parts."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from ivr.domain.pii import PersonalData
from ivr.services import spool_replay
from ivr.services.calls import Context, context_of
from ivr.services.personal_data_keys import personal_data_of
from ivr.storage import db
from ivr.storage.flowstore import FlowRegistry, flows_of
from ivr.storage.spool import DrainReport, Spool, spool_of


def app() -> Flask:
    """The current app itself (not Flask's proxy to it), to hand to a service."""
    return current_app._get_current_object()  # type: ignore[attr-defined]  # the proxy's own


def database(app: Flask | None = None) -> db.Database:
    """The Database of the given or current app."""
    return db.database(app or current_app._get_current_object())  # type: ignore[attr-defined]


def session() -> Session:
    """The session for this request or CLI command, closed at teardown."""
    if "db_session" not in g:
        g.db_session = database().sessionmaker()
    return g.db_session


def _close_session(_exc: BaseException | None = None) -> None:
    s = g.pop("db_session", None)
    if s is not None:
        s.close()


def flows() -> FlowRegistry:
    """The current app's flows."""
    return flows_of(app())


def personal_data() -> PersonalData:
    """The current app's PersonalData."""
    return personal_data_of(app())


def spool() -> Spool:
    """The current app's spool."""
    return spool_of(app())


def current_context() -> Context:
    """The Context of the current app: its flows, keys, renderer and engine."""
    return context_of(app())


def apply_record(record: dict) -> None:
    """Replay one spooled webhook in the current app (services/spool_replay.apply_record)."""
    spool_replay.apply_record(current_context(), record)


def drain_if_pending(wait: float = 0.2, budget: float = 0.5) -> DrainReport | None:
    """Replay the current app's waiting spool records (services/spool_replay.drain_if_pending)."""
    sp = spool()
    if not sp.pending():  # the common case costs no Context
        return None
    return spool_replay.drain_if_pending(sp, current_context(), wait, budget)


def init_app(app: Flask) -> None:
    """Close this request's session at teardown."""
    app.teardown_appcontext(_close_session)
