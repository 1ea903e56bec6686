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


# What Twilio puts in `From` when the caller's number is withheld, restricted, unknown,
# unavailable or blocked: the words spelled on a phone keypad (ANONYMOUS, UNAVAILABLE,
# UNKNOWN, RESTRICTED, BLOCKED; help.twilio.com article 223179988, "Why am I getting calls
# from these strange numbers?"). Some of them parse as valid numbers of other countries
# (+8656696687 does, in China), so validity alone cannot catch them.
TWILIO_HIDDEN_CALLER_IDS = frozenset({
    "+266696687", "+86282452253", "+8656696", "+8656696687", "+7378742833", "+2562533",
})


def caller_number(raw: str | None, region: str = "TR") -> str | None:
    """The E.164 form of a caller id that names one real phone number; None for anything
    else: no value, Twilio's placeholders for a hidden number, `Anonymous`, a SIP or client
    address, a number that is possible in length but valid nowhere (phonenumbers'
    `is_valid_number`), or any other text. Only such a number can hold a consent."""
    if raw is None or not raw.strip() or len(raw) > 64:
        return None
    return _caller_number_cached(raw.strip(), region)


def _caller_number(raw: str, region: str) -> str | None:
    try:
        num = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(num):
        return None
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    return None if e164 in TWILIO_HIDDEN_CALLER_IDS else e164


_caller_number_cached = functools.lru_cache(maxsize=4096)(_caller_number)


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
