"""The KVKK and İYS part of the app: its settings (retention policy, holidays, İYS token
and timeout), the data-key guard at first database use, and the answer to a wrong key.

The lifecycle itself (withdrawals, status, subject requests, retention, İYS export) is in
ivr/services/kvkk/; its rules are in ivr/domain/kvkk/.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask, request
from sqlalchemy import event

from ivr.domain.config import ROOT
from ivr.domain.pii import DataKeyError
from ivr.storage import kvkk_models as models  # noqa: F401 - register the tables
from ivr.storage.keycheck import KeyGuard
from ivr.web.current import database

from .api.errors import error_response

log = logging.getLogger("ivr.kvkk")

# (environment variable, config key, default)
ENVIRONMENT = [
    ("IVR_RETENTION_FILE", "RETENTION_FILE", str(ROOT / "config" / "retention.yaml")),
    ("IVR_HOLIDAYS_FILE", "HOLIDAYS_FILE", str(ROOT / "config" / "holidays.yaml")),
    ("IVR_IYS_TOKEN", "IYS_TOKEN", None),
    ("IVR_IYS_TIMEOUT", "IYS_TIMEOUT", "30"),
]


def _data_key_error(exc: DataKeyError):
    log.error("data key error on %s: %s", request.path, exc)

    return error_response(503, str(exc))


def init_app(app: Flask) -> None:
    """Register the lifecycle tables, the key check at first database use, and the error
    answer for a wrong data key."""

    for var, key, default in ENVIRONMENT:
        if key not in app.config:
            value = os.environ.get(var)
            app.config[key] = value if value not in (None, "") else default
    app.config.setdefault("IYS_OUT_DIR", str(Path(app.config["INSTANCE_DIR"]) / "iys"))
    guard = KeyGuard(app.extensions["ivr_pii"], app.config["PII_KEY"].encode(),
                     app.config["HMAC_KEY"].encode())
    event.listen(database(app).sessionmaker, "after_begin", guard.after_begin)
    app.extensions["ivr_keyguard"] = guard
    app.register_error_handler(DataKeyError, _data_key_error)
