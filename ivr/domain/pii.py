"""Personal data at rest: phone numbers are encrypted, and found again through a keyed HMAC."""

from __future__ import annotations

import functools
import hashlib
import hmac

import phonenumbers
from cryptography.fernet import Fernet, InvalidToken


class DataKeyError(Exception):
    """The data key cannot decrypt what is stored: it is wrong or was lost."""


def normalise_phone(raw: str | None, region: str = "TR") -> str | None:
    """E.164 form of a phone number; other caller ids (client:, sip:, anonymous) as given."""
    if raw is None:
        return None
    raw = raw.strip()
    if not raw:
        return None
    if len(raw) > 64:
        return _normalise(raw, region)
    # Each webhook of a call names the same two numbers: parsed once per worker (kept in
    # memory only, as the request that brought them; the oldest go first).
    return _normalise_cached(raw, region)


def _normalise(raw: str, region: str) -> str:
    try:
        num = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return raw[:64]
    if not phonenumbers.is_possible_number(num):
        return raw[:64]
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


_normalise_cached = functools.lru_cache(maxsize=4096)(_normalise)


class PersonalData:
    """Encrypts and fingerprints phone numbers with keys from the environment."""

    def __init__(self, encryption_key: bytes, hmac_key: bytes):
        self._fernet = Fernet(encryption_key)
        self._hmac_key = hmac_key

    def fingerprint(self, phone: str | None) -> str | None:
        """Keyed HMAC-SHA256 of a normalised phone number: how calls are found again."""
        if phone is None:
            return None
        return hmac.new(self._hmac_key, phone.encode(), hashlib.sha256).hexdigest()

    def encrypt(self, value: str | None) -> str | None:
        """Encrypt a value for storage."""
        if value is None:
            return None
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str | None) -> str | None:
        """Decrypt a stored value, or fail loudly if the key does not fit."""
        if token is None:
            return None
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise DataKeyError(
                "IVR_PII_KEY cannot decrypt stored personal data: the key is wrong or was "
                "lost. Restore the key that encrypted this database."
            ) from None
