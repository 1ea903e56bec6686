"""The app's audit signing key: IVR_AUDIT_SIGNING_KEY, else instance/audit_signing_key.

The pure key handling (parsing, PEM, key ids) is in ivr/audit/checkpoint.py; this module is
the one place that reads the key from an app's settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ivr.audit.checkpoint import KEY_ENV, load_private_key, private_key_pem, public_keys
from ivr.domain.config import instance_secret

KEY_FILE = "audit_signing_key"


# An app's settings (app.config, a dict of any values): AUDIT_SIGNING_KEY and INSTANCE_DIR
# are read.
Settings = Mapping[str, Any]


def signing_key(settings: Settings, *, create: bool = True) -> Ed25519PrivateKey | None:
    """The app's signing key: its settings or the environment, else
    instance/audit_signing_key (made if asked)."""
    text = settings.get("AUDIT_SIGNING_KEY") or os.environ.get(KEY_ENV)
    if text:
        return load_private_key(text)
    path = os.path.join(settings["INSTANCE_DIR"], KEY_FILE)
    if not create and not os.path.exists(path):
        return None
    pem = instance_secret(settings["INSTANCE_DIR"], KEY_FILE,
                          lambda: private_key_pem(Ed25519PrivateKey.generate()).strip())
    return load_private_key(pem)


def app_public_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """The app's own public key by id (none if no key was ever made); never creates a key."""
    key = signing_key(settings, create=False)
    return public_keys(key) if key else {}
