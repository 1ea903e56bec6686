"""Key check values: a lost or replaced data key fails loudly at the first database use.

On first use the database stores a check value of IVR_PII_KEY and of IVR_HMAC_KEY in
`settings`; every process compares its keys with them before its first transaction. A
wrong encryption key would otherwise only show on the first decryption, and a wrong HMAC
key never: phone-number lookups would silently find nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import threading

from sqlalchemy import inspect, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from ivr.domain.pii import DataKeyError, PersonalData

from .models import Call, Setting

PII_CHECK = "pii_key_check"
HMAC_CHECK = "hmac_key_check"
_LABEL = b"ivr key check v1"

PII_MISMATCH = ("IVR_PII_KEY is not the key this database's personal data was encrypted "
                "with (key check value differs): restore the original key (or instance/pii.key)"
                "; never start with a new key on an existing database.")
HMAC_MISMATCH = ("IVR_HMAC_KEY is not the key this database's phone fingerprints were made "
                 "with (key check value differs), so lookups by phone would find nothing: "
                 "restore the original key (or instance/hmac.key).")


def check_value(key: bytes) -> str:
    """A short keyed digest that identifies a key without revealing it."""
    return "v1:" + hmac.new(key, _LABEL, hashlib.sha256).hexdigest()[:32]


def _upsert_missing(conn: Connection, values: dict[str, str]) -> None:
    for name, value in values.items():
        conn.execute(insert(Setting).values(name=name, value=value)
                     .on_conflict_do_nothing(index_elements=["name"]))


def _check_existing_data(conn: Connection, pii: PersonalData) -> None:
    # A database from before key checks existed: prove the keys on one stored number.
    row = conn.execute(select(Call.phone_enc, Call.phone_hmac)
                       .where(Call.phone_enc.is_not(None)).limit(1)).first()
    if row is None:
        return
    try:
        phone = pii.decrypt(row.phone_enc)
    except DataKeyError:
        raise DataKeyError(PII_MISMATCH) from None
    if row.phone_hmac and pii.fingerprint(phone) != row.phone_hmac:
        raise DataKeyError(HMAC_MISMATCH)


def verify_keys(conn: Connection, pii: PersonalData, pii_key: bytes, hmac_key: bytes) -> bool:
    """Compare the keys with the stored check values (storing them on first use).

    Returns False when the database has no settings table yet (not set up).
    """
    if not inspect(conn).has_table(Setting.__tablename__):
        return False
    expected = {PII_CHECK: check_value(pii_key), HMAC_CHECK: check_value(hmac_key)}
    stored = dict(conn.execute(select(Setting.name, Setting.value)
                               .where(Setting.name.in_(list(expected)))).all())
    missing = {k: v for k, v in expected.items() if k not in stored}
    if missing:
        _check_existing_data(conn, pii)
        _upsert_missing(conn, missing)
        stored = dict(conn.execute(select(Setting.name, Setting.value)
                                   .where(Setting.name.in_(list(expected)))).all())
    if stored.get(PII_CHECK) != expected[PII_CHECK]:
        raise DataKeyError(PII_MISMATCH)
    if stored.get(HMAC_CHECK) != expected[HMAC_CHECK]:
        raise DataKeyError(HMAC_MISMATCH)
    return True


class KeyGuard:
    """Runs `verify_keys` before the first transaction of a process, until it passes."""

    def __init__(self, pii: PersonalData, pii_key: bytes, hmac_key: bytes):
        self.pii, self.pii_key, self.hmac_key = pii, pii_key, hmac_key
        self.verified = False
        self._lock = threading.Lock()

    def after_begin(self, _session, _transaction, connection: Connection) -> None:
        """SessionEvents.after_begin hook: check once, raise DataKeyError on a wrong key."""
        if self.verified:
            return
        with self._lock:
            if not self.verified:
                self.verified = verify_keys(connection, self.pii, self.pii_key, self.hmac_key)
