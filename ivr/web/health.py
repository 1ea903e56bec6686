"""Liveness and readiness probes for the load balancer and the process manager.

/healthz answers as long as the process serves requests: it touches nothing else, so a
database outage never gets healthy workers restarted. /readyz says whether this server
should get calls: the database answers within a short timeout and its schema is not behind
this code, the flows are loaded, every prompt has its audio, and the outage spool can be
written. Each check that fails names its reason; the answer is 503 then. Spooled webhooks
in quarantine do not fail readiness: the answer stays 200, with status "degraded",
`spool_quarantine` counting them and a line in `warnings`.

The checks name the database's host and driver error, the schema revision and the spool's
counts: they are shown to operators only, a request from this machine's loopback that no
proxy forwarded, one with the IVR_METRICS_TOKEN bearer token, or a signed-in admin. Anyone
else gets the status alone, with the same HTTP status code (all a load balancer reads).
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import os
from pathlib import Path

from alembic.script import ScriptDirectory
from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from ivr.services import anchoring, audit_sequencer
from ivr.storage.migrate import MIGRATIONS, head_revision, schema_state

from .auditor.login import current_user

bp = Blueprint("health", __name__)

DEFAULT_TIMEOUT = 2.0


@bp.get("/healthz")
def healthz():
    """The process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready to take calls: database reachable, flows loaded, audio present."""
    app = current_app._get_current_object()
    checks = {"database": check_database(app)}
    registry = app.extensions.get("ivr_flows")
    checks["flows"] = (f"ok ({len(registry.by_id)} loaded)" if registry and registry.default
                       else "not loaded")
    checks["audio"] = check_audio(registry, app.extensions.get("ivr_audio"))
    checks["spool"] = check_spool(app)
    checks["audit_queue"] = audit_sequencer.queue_check(app, probe_engine(app))
    checks["audit_anchors"], anchor_warnings = anchoring.readiness(app, probe_engine(app))
    ready = all(v.startswith("ok") for v in checks.values())
    # A quarantined record needs an operator, but this server still takes calls well:
    # failing readiness for it would take every server out of rotation over one record.
    sp = app.extensions.get("ivr_spool")
    held = sp.quarantine_depth() if sp is not None else 0
    warnings = [f"{held} spooled webhook(s) quarantined: run `python -m ivr spool "
                "quarantine list`"] if held else []
    # Anchoring never takes a server out of rotation: an authority or witness that is away,
    # or a sequencer that refuses to fork the log, is reported, and calls go on.
    warnings += anchor_warnings
    status = "not ready" if not ready else ("degraded" if warnings else "ready")
    if operator(app):
        response = jsonify(status=status, checks=checks, spool_quarantine=held,
                           warnings=warnings)
    else:
        response = jsonify(status=status)
    response.headers["Cache-Control"] = "no-store"
    return response, (200 if ready else 503)


_FORWARDING = ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host")


def operator(app: Flask) -> bool:
    """Whether this request may see the checks' details: from loopback and forwarded by no
    proxy, with the metrics bearer token, or from a signed-in admin."""
    peer = request.environ.get("ivr.peer_addr") or request.remote_addr or ""
    try:
        loopback = (ipaddress.ip_address(peer.split("%")[0]).is_loopback
                    and ipaddress.ip_address((request.remote_addr or "").split("%")[0])
                    .is_loopback)
    except ValueError:
        loopback = False
    if loopback and not any(h in request.headers for h in _FORWARDING):
        return True
    token = app.config.get("METRICS_TOKEN") or os.environ.get("IVR_METRICS_TOKEN")
    header = request.headers.get("Authorization", "")
    if token and header[:7].lower() == "bearer " and hmac.compare_digest(
            header[7:].strip().encode(), token.encode()):
        return True
    return _signed_in_admin()


def _signed_in_admin() -> bool:
    if not request.cookies:
        return False
    try:
        user = current_user()
    except SQLAlchemyError:  # the database is away: nobody can be known to be an admin
        return False
    return user is not None and user.role == "admin"


def _timeout(app: Flask) -> float:
    return float(app.config.get("READY_TIMEOUT") or os.environ.get("IVR_READY_TIMEOUT")
                 or DEFAULT_TIMEOUT)


def probe_engine(app: Flask) -> Engine:
    """A small engine of its own, so a probe never waits behind busy webhooks for a
    connection or a long connect timeout: a fresh connection per probe, since "reachable"
    means a new connection can be made."""
    engine = app.extensions.get("ivr_ready_engine")
    if engine is None:
        engine = create_engine(
            make_url(app.config["DATABASE_URL"]), poolclass=NullPool,
            connect_args={"connect_timeout": max(1, math.ceil(_timeout(app)))})
        app.extensions["ivr_ready_engine"] = engine
    return engine


def check_database(app: Flask) -> str:
    """'ok ...' when the database answers and its schema is not behind this code."""

    engine = probe_engine(app)
    try:
        revision, has_tables = schema_state(engine, _timeout(app))
    except SQLAlchemyError as e:
        first = str(getattr(e, "orig", None) or e).strip().splitlines()
        return f"unreachable: {type(e).__name__}: {first[0] if first else ''}"[:300]
    head = head_revision()
    if revision is None:
        return ("ok (schema made without migrations)" if has_tables
                else "no schema: run `.venv/bin/python -m ivr db upgrade`")
    if revision == head:
        return f"ok (schema {revision})"

    known = {r.revision for r in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    if revision in known:
        return f"schema {revision} is behind {head}: run `.venv/bin/python -m ivr db upgrade`"
    # Newer than this code (a deploy migrated first): revisions stay backward compatible.
    return f"ok (schema {revision}, newer than this code's {head})"


def check_audio(registry, library) -> str:
    """'ok ...' when every prompt of every loaded flow has its rendered file."""
    if registry is None or library is None:
        return "not loaded"
    missing = missing_audio(registry, library)
    if not missing:
        return f"ok ({len(library)} prompt files)"
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return (f"missing {len(missing)} prompt files ({', '.join(missing[:3])}{more}): "
            "run `.venv/bin/python -m ivr audio build`")


def missing_audio(registry, library) -> list[str]:
    """flow/prompt/language of every prompt without a rendered file."""
    out = []
    for flow in registry.by_id.values():
        for pid, texts in flow.prompts.items():
            for lang, words in texts.items():
                if library.lookup(pid, lang, words) is None:
                    out.append(f"{flow.id}/{pid}/{lang}")
    return out


def check_spool(app: Flask) -> str:
    """'ok ...' when consents taken during a database outage can be written to disk."""
    sp = app.extensions.get("ivr_spool")
    if sp is None:
        return "ok (no spool)"
    directory = Path(sp.directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create {directory}: {e.strerror}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"not writable: {directory}"
    return f"ok ({sp.depth()} waiting, {sp.quarantine_depth()} quarantined)"


def init_app(app: Flask) -> None:
    """Register /healthz and /readyz."""
    app.register_blueprint(bp)
