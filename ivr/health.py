"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .db import database

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready to take calls: database reachable, flows loaded, audio present."""
    checks = {}
    try:
        with database().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as e:
        checks["database"] = f"unreachable: {type(e).__name__}"
    registry = current_app.extensions.get("ivr_flows")
    checks["flows"] = f"ok ({len(registry.by_id)})" if registry else "not loaded"
    lib = current_app.extensions.get("ivr_audio")
    missing = _missing_audio(registry, lib) if registry and lib else ["?"]
    checks["audio"] = "ok" if not missing else f"missing {len(missing)} prompt files"
    ready = all(v.startswith("ok") for v in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), (200 if ready else 503)


def _missing_audio(registry, lib) -> list[str]:
    out = []
    for flow in registry.by_id.values():
        for pid, texts in flow.prompts.items():
            for lang, words in texts.items():
                if lib.lookup(pid, lang, words) is None:
                    out.append(f"{flow.id}/{pid}/{lang}")
    return out


def init_app(app):
    """Register /healthz and /readyz."""
    app.register_blueprint(bp)
