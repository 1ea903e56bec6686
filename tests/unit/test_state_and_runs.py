"""Pure rules the webhooks and the offline path share: the state token a gather URL carries,
run ids, the engine input for a gather's keys, and notice versions."""

from __future__ import annotations

import hashlib

import pytest
import rfc8785

from ivr.domain.flow import engine as e
from ivr.domain.notice_version import notice_version
from ivr.domain.runs import MAX_DIGITS, digits_input, run_id_for
from ivr.domain.state_token import StateTokenError, read_token, state_token
from ivr.services import run_memory


def test_a_state_token_reads_back_as_the_same_version_and_state():
    state = e.State(language="tr", node="consent", step=3, invalid=1, digits=("1",),
                    context={"has_consent": True})
    token = state_token("v" * 64, state)
    assert "=" not in token and "/" not in token and "+" not in token
    assert read_token(token) == ("v" * 64, state, None)


class _Library:
    """Two loaded files, found by their SHA-256's first hex digits."""

    files = ("a" * 64, "b" * 63 + "c")

    def full_sha(self, short):
        return next((f for f in self.files if f.startswith(short) and len(short) == 16), None)


def test_a_token_carries_the_runs_memory_and_an_older_token_reads_without_it():
    state = e.State(language="tr", node="consent", step=1)
    heard = {"greeting": "a" * 64, "notice_intro": "b" * 63 + "c", "question": None}
    notice = {"tr": [{"prompt": "notice_intro", "audio": "b" * 63 + "c"}]}
    memory = run_memory.pack(heard, notice)
    token = state_token("v" * 64, state, memory)
    version, back, carried = read_token(token)
    assert (version, back) == ("v" * 64, state)
    assert run_memory.unpack(carried, _Library()) == (heard, notice)
    assert len(token) < 400  # the URL stays short: 16 hex digits a file
    assert read_token(state_token("v" * 64, state))[2] is None


def test_memory_naming_a_file_that_is_not_loaded_is_not_used():
    memory = run_memory.pack({"greeting": "d" * 64}, {})
    assert run_memory.unpack(memory, _Library()) is None
    assert run_memory.unpack(None, _Library()) is None
    assert run_memory.unpack({"h": "not a map"}, _Library()) is None


@pytest.mark.parametrize("token", ["", "not-base64!", "eJzLSM3JyQcABiwCFQ", "A" * 40])
def test_an_unreadable_state_token_is_a_named_error(token):
    with pytest.raises(StateTokenError, match="unreadable state token"):
        read_token(token)


def test_a_run_id_is_the_same_for_every_retry_and_differs_per_origin():
    sid = "CA" + "1" * 32
    assert run_id_for(sid, "incoming") == run_id_for(sid, "incoming")
    assert run_id_for(sid, "incoming") != run_id_for(sid, "transfer:t1")
    assert len(run_id_for(sid, "incoming")) == 32


@pytest.mark.parametrize(("digits", "expected"), [
    (None, e.Timeout()), ("", e.Timeout()), ("1", e.Digits("1")),
    ("9" * (MAX_DIGITS + 5), e.Digits("9" * MAX_DIGITS)),
])
def test_digits_input(digits, expected):
    assert digits_input(digits) == expected


def test_a_notice_version_is_the_hash_of_the_canonical_document():
    prompts = [("notice", "Aydınlatma metni", "ab" * 32), ("question", "Onay?", None)]
    doc = {"language": "tr", "prompts": [{"id": p, "text": t, "audio": a} for p, t, a in prompts]}
    assert notice_version("tr", prompts) == hashlib.sha256(rfc8785.dumps(doc)).hexdigest()
    assert notice_version("tr", prompts) != notice_version("en", prompts)
