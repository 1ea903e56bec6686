"""The shared vocabulary: stored strings unchanged, and the transfer transition table."""

import json

import pytest

from ivr.domain.vocabulary import (
    DECISIONS,
    DECISIVE,
    TERMINAL,
    TRANSFER_MOVES,
    CallStatus,
    Decision,
    IllegalTransferMove,
    TransferStatus,
    transfer_move,
)


def test_the_stored_strings_are_the_ones_always_written():
    assert DECISIONS == ("granted", "declined", "no_input", "withdrawn")
    assert DECISIVE == ("granted", "declined", "withdrawn")
    assert TERMINAL == {"completed", "busy", "failed", "no-answer", "canceled"}
    assert [s.value for s in TransferStatus] == [
        "requested", "in_flow", "decided", "returned", "failed"]
    assert json.dumps({"d": Decision.NO_INPUT, "s": CallStatus.NO_ANSWER}) == \
        '{"d": "no_input", "s": "no-answer"}'


ALLOWED = [(a, b) for a, targets in TRANSFER_MOVES.items() for b in sorted(targets)]
REFUSED = [(a, b) for a in TransferStatus for b in TransferStatus if (a, b) not in ALLOWED]


@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_an_allowed_move_returns_the_plain_string(current, target):
    out = transfer_move(current.value, target)
    assert out == target.value and type(out) is str


@pytest.mark.parametrize(("current", "target"), REFUSED)
def test_an_illegal_move_raises_the_named_error(current, target):
    with pytest.raises(IllegalTransferMove, match=f"from '{current.value}' to '{target.value}'"):
        transfer_move(current.value, target)


@pytest.mark.parametrize("target", list(TransferStatus))
def test_an_unknown_current_status_is_an_illegal_move(target):
    with pytest.raises(IllegalTransferMove):
        transfer_move("lost", target)


def test_the_table_names_the_life_of_a_transfer():
    assert TRANSFER_MOVES[TransferStatus.RETURNED] == frozenset()
    assert (TransferStatus.REQUESTED, TransferStatus.DECIDED) in REFUSED
    assert (TransferStatus.FAILED, TransferStatus.IN_FLOW) in ALLOWED
