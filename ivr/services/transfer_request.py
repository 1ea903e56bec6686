"""What an agent may ask for: the transfer request, checked strictly before anything happens."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import asdict, dataclass

from ivr.audit.leaves import canonical
from ivr.domain.inputs import InvalidInput, is_unicode, label
from ivr.domain.pii import normalise_phone

FIELDS = ("call_sid", "return_to", "language", "flow", "force")
CALL_SID = re.compile(r"CA[0-9a-f]{32}")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
CLIENT = re.compile(r"[A-Za-z0-9_.@-]{1,100}")
QUEUE_MAX = 64  # Twilio's limit on a queue's friendly name
KEY_MAX = 200


class InvalidRequest(Exception):
    """The request is malformed; `field` names the culprit."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class TransferRequest:
    """A checked transfer request."""

    call_sid: str
    return_to: dict
    language: str | None
    flow_id: str
    force: bool

    def fingerprint(self) -> str:
        """SHA-256 of the request, to tell a retry from a reuse of its Idempotency-Key."""
        return hashlib.sha256(canonical(asdict(self))).hexdigest()


def idempotency_key(header: str | None) -> str:
    """The Idempotency-Key header's value (a bare token or a quoted string), checked.

    Without the header (or with a blank one) the request gets a key of its own, so it is
    simply not idempotent: a client that retries must send one. A second redirect of the
    same call is still refused while the first transfer is live (409 transfer_in_progress).
    """
    key = (header or "").strip(" \t")
    if not key:
        return f"auto:{uuid.uuid4().hex}"
    if len(key) > KEY_MAX or any(not (" " <= ch <= "~") for ch in key):
        raise InvalidRequest(f"the Idempotency-Key must be 1 to {KEY_MAX} printable ASCII "
                             "characters", "Idempotency-Key")
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise InvalidRequest(f"the Idempotency-Key must be 1 to {KEY_MAX} printable ASCII "
                             "characters; a quoted one must not be empty", "Idempotency-Key")
    return key


def _text(value, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string", field)
    if not is_unicode(value):
        raise InvalidRequest(f"{field} is not valid Unicode text (a lone surrogate?)", field)
    return value


def _names(obj: dict, field: str | None) -> None:
    # An unknown name is echoed in the error: it must be text a client can read back.
    if not all(is_unicode(name) for name in obj):
        raise InvalidRequest(f"the field names of {field or 'the body'} must be valid "
                             "Unicode text", field)


def _return_to(value) -> dict:  # noqa: C901 - one rule per return type, each with its error
    if not isinstance(value, dict):
        raise InvalidRequest('return_to must be an object such as {"type": "queue", '
                             '"name": "sales"}', "return_to")
    _names(value, "return_to")
    kind = value.get("type")
    allowed = {"queue": {"type", "name"}, "dial": {"type", "number", "client"},
               "hangup": {"type"}}
    if not isinstance(kind, str) or kind not in allowed:
        raise InvalidRequest("return_to.type must be one of queue, dial, hangup",
                             "return_to.type")
    extra = sorted(set(value) - allowed[kind])
    if extra:
        raise InvalidRequest(f"return_to of type {kind} takes no {', '.join(extra)}",
                             f"return_to.{extra[0]}")
    if kind == "queue":
        try:
            name = label(_text(value.get("name"), "return_to.name"), "return_to.name",
                         max_length=QUEUE_MAX)
        except InvalidInput as e:
            raise InvalidRequest(f"return_to.name must be a queue name: {e.message}",
                                 "return_to.name") from None
        return {"type": "queue", "name": name}
    if kind == "dial":
        if ("number" in value) == ("client" in value):
            raise InvalidRequest("return_to of type dial needs exactly one of number or client",
                                 "return_to")
        if "number" in value:
            number = normalise_phone(_text(value["number"], "return_to.number"))
            if not number or not E164.fullmatch(number):
                raise InvalidRequest("return_to.number must be a phone number, for example "
                                     "+902122223344", "return_to.number")
            return {"type": "dial", "number": number}
        client = _text(value["client"], "return_to.client")
        if not CLIENT.fullmatch(client):
            raise InvalidRequest("return_to.client must be 1 to 100 letters, digits or _ . @ -",
                                 "return_to.client")
        return {"type": "dial", "client": client}
    return {"type": "hangup"}


def parse(body, flows) -> TransferRequest:
    """Check a JSON request body against the flows this app serves."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    _names(body, None)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}; the fields are "
                             f"{', '.join(FIELDS)}", unknown[0])
    if "call_sid" not in body:
        raise InvalidRequest("call_sid is required", "call_sid")
    call_sid = _text(body["call_sid"], "call_sid")
    if not CALL_SID.fullmatch(call_sid):
        raise InvalidRequest("call_sid must be a Twilio call SID: CA and 32 lowercase hex "
                             "digits", "call_sid")
    if "return_to" not in body:
        raise InvalidRequest("return_to is required", "return_to")
    return_to = _return_to(body["return_to"])
    flow_id = body.get("flow")
    if flow_id is None:
        flow = flows.default
    else:
        flow = flows.get(_text(flow_id, "flow")) if flow_id else None
        if flow is None:
            raise InvalidRequest(f"unknown flow {flow_id!r}; this server has "
                                 f"{', '.join(sorted(flows.by_id))}", "flow")
    language = body.get("language")
    if language is not None and (not isinstance(language, str)
                                 or language not in flow.languages):
        raise InvalidRequest(f"language must be one of {', '.join(flow.languages)}",
                             "language")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidRequest("force must be true or false", "force")
    return TransferRequest(call_sid=call_sid, return_to=return_to, language=language,
                           flow_id=flow.id, force=force)
