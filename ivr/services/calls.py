"""What every call verb shares: the app's Context, who a webhook says the caller is, and the
rules for ordering a call's times and callbacks. The verbs themselves are the webhooks'
(ivr/services/webhooks.py), each one statement of its database function."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from flask import Flask
from sqlalchemy.engine import Engine

from ivr.adapters.audio.catalog import AudioLibrary
from ivr.domain.flow.engine import Action, State
from ivr.domain.flow.model import HIDDEN_CALLER
from ivr.domain.pii import PersonalData, caller_number, normalise_phone
from ivr.storage.db import database
from ivr.storage.flowstore import FlowRegistry, flows_of

from .personal_data_keys import personal_data_of

# Twilio's call statuses before the end, in the order they come (ties by sequence number).
RANK = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3, "answered": 3}
# A recording's statuses: a later callback of a lower rank never undoes a higher one.
RECORDING_ORDER = {"in-progress": 1, "completed": 2, "absent": 2, "failed": 2}


class RenderedTurn(Protocol):
    """A turn's TwiML (NEXT_URL where the next gather's URL goes), what it plays and its audio."""

    twiml: str
    played: list[dict]
    audio: dict[str, str | None]


class TurnRenderer(Protocol):
    """What the webhook verbs need of the TwiML renderer (ivr/web/voice/twiml.py)."""

    NEXT_URL: str
    audio: AudioLibrary

    def turn(self, actions: Sequence[Action]) -> RenderedTurn:
        """The turn's TwiML, rendered once per distinct turn and loaded audio set."""
        ...

    def next_url(self, run_id: str, step: int, flow_version: str, state: State,
                 memory: dict | None = None) -> str:
        """Where Twilio posts the result of the next gather."""
        ...

    def finish(self, turn: RenderedTurn, next_url: str) -> str:
        """The turn's TwiML with the next gather's URL in its place."""
        ...


@dataclass
class Context:
    """What a verb needs from the app: flows, personal-data keys, a TwiML renderer (which
    also names the URL of the next gather) and the database engine."""

    flows: FlowRegistry
    pii: PersonalData
    renderer: TurnRenderer
    engine: Engine


def context_of(app: Flask) -> Context:
    """The app's Context: its flows, keys, renderer and engine."""
    return Context(flows=flows_of(app), pii=personal_data_of(app),
                   renderer=app.extensions["ivr_renderer"], engine=database(app).engine)


def clip(value: str | None, n: int = 64) -> str | None:
    """A value cut to its column's width (None for empty)."""
    return value[:n] if value else None


@dataclass(frozen=True)
class Parties:
    """Who a webhook says the caller is (encrypted and fingerprinted) and our number. A
    caller id that names no real phone number (a hidden number, `Anonymous`, a SIP
    address: ivr.domain.pii.caller_number) is nobody: no fingerprint, nothing encrypted."""

    phone_hmac: str | None
    phone_enc: str | None
    to_number: str | None
    direction: str | None

    @property
    def hidden(self) -> bool:
        """The caller cannot be identified by a phone number: no consent can be theirs."""
        return self.phone_hmac is None


def _ends(fields) -> tuple[str | None, str | None, str | None]:
    """(direction, the caller's id, our number) as the webhook gives them."""
    direction = (fields.direction or "").lower()[:32] or None
    outbound = bool(direction and direction.startswith("outbound"))
    if outbound:
        return direction, fields.to_number, fields.from_number
    return direction, fields.from_number, fields.to_number


def start_context(fields) -> dict:
    """What a run knows of its caller when it starts: `hidden_caller` when no phone number
    names them (ivr.domain.pii.caller_number), so the flow never asks them for a choice.
    The live webhooks and the outage answers (ivr/services/offline.py) start from it."""
    _direction, caller, _ours = _ends(fields)
    return {HIDDEN_CALLER: True} if caller_number(caller) is None else {}


def parties(ctx: Context, fields, encrypt: bool = True) -> Parties:
    """The caller and our number from a webhook's fields (the caller's number encrypted
    only when `encrypt`)."""
    direction, caller, ours = _ends(fields)
    phone = caller_number(caller)
    return Parties(phone_hmac=ctx.pii.fingerprint(phone) if phone else None,
                   phone_enc=ctx.pii.encrypt(phone) if phone and encrypt else None,
                   to_number=clip(normalise_phone(ours), 32), direction=direction)


def ordered_times(started, answered, ended):
    """Start, answer and end so that none is before the one it follows.

    Twilio's Timestamp has whole seconds while our own times have milliseconds, so an end
    stamped 07:39:51 can sort before a start we received at 07:39:51.367; the later
    moment is then the one we saw. (The webhooks' functions apply the same rule:
    ivr_ordered_times in ivr/storage/sql/webhook_functions.sql.)
    """
    if answered is not None and started is not None and answered < started:
        answered = started
    floor = answered or started
    if ended is not None and floor is not None and ended < floor:
        ended = floor
    return started, answered, ended
