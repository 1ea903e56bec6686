"""Configuration: defaults, the environment, and secrets kept under instance/."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]  # the checkout: ivr/domain/config.py


# The app's settings by config key, as Flask's config holds them: text read from the
# environment, and whatever a test's config sets (flags, numbers, objects).
Settings = dict[str, Any]


class ConfigError(Exception):
    """A setting is missing or wrong."""


# (environment variable, config key, default)
ENVIRONMENT: list[tuple[str, str, str | None]] = [
    ("IVR_DATABASE_URL", "DATABASE_URL", None),
    ("TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN", None),
    ("TWILIO_ACCOUNT_SID", "TWILIO_ACCOUNT_SID", None),
    ("IVR_TWILIO_API_URL", "TWILIO_API_URL", "https://api.twilio.com"),
    ("IVR_TWILIO_TIMEOUT", "TWILIO_TIMEOUT", "5"),
    ("IVR_PUBLIC_URL", "PUBLIC_URL", "http://127.0.0.1:5000"),
    ("IVR_FLOW", "FLOW", str(ROOT / "flows" / "consent.yaml")),
    ("IVR_FLOWS_DIR", "FLOWS_DIR", str(ROOT / "flows")),
    ("IVR_AUDIO_DIR", "AUDIO_DIR", str(ROOT / "audio")),
    ("IVR_INSTANCE_DIR", "INSTANCE_DIR", str(ROOT / "instance")),
    ("IVR_SECRET_KEY", "SECRET_KEY", None),
    ("IVR_PII_KEY", "PII_KEY", None),
    ("IVR_HMAC_KEY", "HMAC_KEY", None),
    ("IVR_LOG_LEVEL", "LOG_LEVEL", "INFO"),
    ("IVR_SPOOL_DIR", "SPOOL_DIR", None),
    ("IVR_GTTS_URL", "GTTS_URL", None),
    ("IVR_AUDIT_SIGNING_KEY", "AUDIT_SIGNING_KEY", None),
    ("IVR_DB_CONNECT_TIMEOUT", "DB_CONNECT_TIMEOUT", "1.2"),
    ("IVR_SPOOL_MAX_WAIT", "SPOOL_MAX_WAIT", None),
    ("IVR_TSA_URLS", "TSA_URLS", None),
    ("IVR_TSA_CA_FILE", "TSA_CA_FILE", None),
    ("IVR_AUDIT_TIMESTAMP_INTERVAL", "AUDIT_TIMESTAMP_INTERVAL", "3600"),
    ("IVR_WITNESSES", "WITNESSES", None),
    ("IVR_AUDIT_PUBLISHED_FILE", "AUDIT_PUBLISHED_FILE", None),
]


SQLITE_GONE = (
    "IVR_DATABASE_URL names an SQLite database ({url}), and this release runs on PostgreSQL "
    "only. Unset IVR_DATABASE_URL to use the embedded PostgreSQL server under instance/pg "
    "(or set it to your PostgreSQL server's URL), run `.venv/bin/python -m ivr db upgrade`, "
    "then move the old data with `.venv/bin/python -m ivr db import-sqlite PATH` (PATH: the "
    "SQLite file) and check it with `.venv/bin/python -m ivr audit verify` (docs/production.md, "
    "\"Moving an SQLite instance to PostgreSQL\").")


def from_env(environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings read from the environment, with defaults."""
    cfg: Settings = {}
    for var, key, default in ENVIRONMENT:
        value = environ.get(var)
        cfg[key] = value if value not in (None, "") else default
    return cfg


def instance_secret(instance_dir: Path | str, name: str, make: Callable[[], str]) -> str:
    """A secret kept in instance/NAME, created on first use (embedded default only)."""
    path = Path(instance_dir) / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def finalize(cfg: Settings) -> Settings:
    """Fill the settings that have instance/ fallbacks, and check the rest."""
    inst = Path(cfg["INSTANCE_DIR"])
    url = cfg.get("DATABASE_URL") or None  # None: the embedded server (ivr/storage/db.py)
    if url and url.startswith("sqlite"):
        raise ConfigError(SQLITE_GONE.format(url=url))
    if url and url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    cfg["DATABASE_URL"] = url
    if not cfg.get("TWILIO_AUTH_TOKEN"):
        cfg["TWILIO_AUTH_TOKEN"] = instance_secret(inst, "twilio_auth_token",
                                                   lambda: secrets.token_hex(16))
        cfg["TWILIO_AUTH_TOKEN_GENERATED"] = True
    if not cfg.get("TWILIO_ACCOUNT_SID"):
        cfg["TWILIO_ACCOUNT_SID"] = "AC" + "0" * 32
    for key, name, make in [
        ("SECRET_KEY", "secret_key", lambda: secrets.token_hex(32)),
        ("PII_KEY", "pii.key", lambda: Fernet.generate_key().decode()),
        ("HMAC_KEY", "hmac.key", lambda: secrets.token_hex(32)),
    ]:
        if not cfg.get(key):
            cfg[key] = instance_secret(inst, name, make)
    try:
        Fernet(cfg["PII_KEY"].encode())
    except ValueError:
        raise ConfigError(
            "IVR_PII_KEY must be a Fernet key (32 url-safe base64-encoded bytes)") from None
    cfg["PUBLIC_URL"] = cfg["PUBLIC_URL"].rstrip("/")
    return cfg
