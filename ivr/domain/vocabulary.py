"""The words the whole service shares: decisions, call statuses and transfer statuses.

Each is a `StrEnum`, so a member is stored, compared and written to JSON as the very
string it always was ("granted", "no-answer", "in_flow").
"""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    """What a caller's key press decided about marketing consent."""

    GRANTED = "granted"
    DECLINED = "declined"
    NO_INPUT = "no_input"
    WITHDRAWN = "withdrawn"


# Every decision a flow may record, in the order flow files and error messages list them.
DECISIONS: tuple[str, ...] = tuple(d.value for d in Decision)
# Silence (no_input) is never a decision, so it changes nobody's status.
DECISIVE: tuple[str, ...] = (Decision.GRANTED.value, Decision.DECLINED.value,
                             Decision.WITHDRAWN.value)
# The channels a marketing consent covers, as İYS names them, in the order every list shows.
CHANNELS: tuple[str, ...] = ("ARAMA", "MESAJ", "EPOSTA")
# A consent a transfer asked for is settled once the caller said yes or no.
SETTLED: tuple[str, ...] = (Decision.GRANTED.value, Decision.DECLINED.value)


class CallStatus(StrEnum):
    """Twilio's CallStatus values."""

    QUEUED = "queued"
    INITIATED = "initiated"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    ANSWERED = "answered"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"


# The statuses after which a call says nothing more.
TERMINAL: frozenset[str] = frozenset(s.value for s in (
    CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.FAILED, CallStatus.NO_ANSWER,
    CallStatus.CANCELED))


class TransferStatus(StrEnum):
    """Where a transfer of a live call into the consent flow stands."""

    REQUESTED = "requested"
    IN_FLOW = "in_flow"
    DECIDED = "decided"
    RETURNED = "returned"
    FAILED = "failed"


_T = TransferStatus
# Every move a transfer may make. A "failed" transfer may still enter the flow (Twilio
# acted although its answer to us was lost), and a turn replayed from the spool after the
# call's end still decides or returns; a returned transfer is done.
TRANSFER_MOVES: dict[TransferStatus, frozenset[TransferStatus]] = {
    _T.REQUESTED: frozenset({_T.IN_FLOW, _T.FAILED}),
    _T.IN_FLOW: frozenset({_T.DECIDED, _T.RETURNED, _T.FAILED}),
    _T.DECIDED: frozenset({_T.DECIDED, _T.RETURNED}),
    _T.RETURNED: frozenset(),
    _T.FAILED: frozenset({_T.IN_FLOW, _T.DECIDED, _T.RETURNED}),
}
# The statuses of a transfer still on its way.
TRANSFER_ACTIVE: tuple[str, ...] = (_T.REQUESTED.value, _T.IN_FLOW.value)


class IllegalTransferMove(ValueError):
    """A transfer was asked to move where its transition table does not allow."""

    def __init__(self, current: str, target: str):
        super().__init__(f"a transfer cannot move from {current!r} to {target!r}")
        self.current = current
        self.target = target


def transfer_move(current: str, target: TransferStatus) -> str:
    """The status string to store for a move from `current` to `target`, if allowed."""
    try:
        allowed = target in TRANSFER_MOVES[TransferStatus(current)]
    except ValueError:
        allowed = False
    if not allowed:
        raise IllegalTransferMove(current, target.value)
    return target.value
