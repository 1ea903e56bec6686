"""The edge parser of Twilio's forms (ivr/domain/twilio_form.py): ranges, absence, refusal."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from ivr.domain import twilio_form as tf

SID = "CA" + "c" * 32
HUGE = ["2147483648", str(2**53), str(2**63), str(2**64 + 1), str(2**70), "9" * 400,
        "-1", str(-2**63), str(-10**30), "1e9", "0x10", "NaN", "", " "]


@pytest.mark.parametrize("name", ["SequenceNumber", "CallDuration", "RecordingDuration"])
@pytest.mark.parametrize("value,expected", [("0", 0), ("2147483647", 2**31 - 1), (" 7 ", 7)]
                         + [(v, None) for v in HUGE])
def test_counts_fit_a_postgresql_integer_or_are_absent(name, value, expected):
    assert tf.integer({name: value}, name, SID) == expected


@pytest.mark.parametrize("value,expected", [("1", 1), ("2", 2), ("0", None), ("3", None),
                                            (str(2**64), None)])
def test_recording_channels_are_one_or_two(value, expected):
    assert tf.integer({"RecordingChannels": value}, "RecordingChannels", SID) == expected


@pytest.mark.parametrize("text,expected", [
    ("Wed, 25 Nov 2026 20:00:00 +0000", datetime(2026, 11, 25, 20, tzinfo=UTC)),
    ("Wed, 25 Nov 2026 23:00:00 +0300", datetime(2026, 11, 25, 20, tzinfo=UTC)),
    ("Thu, 01 Jan 1970 00:00:00 +0000", datetime(1970, 1, 1, tzinfo=UTC)),
    ("Thu, 31 Dec 2099 23:59:59 +0000", datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("Fri, 31 Dec 9999 23:59:59 -0100", None),  # past datetime.max once in UTC
    ("Fri, 31 Dec 9999 23:59:59 +0000", None),
    ("Mon, 01 Jan 0001 00:00:00 +0100", None),  # before datetime.min once in UTC
    ("Mon, 01 Jan 0001 00:00:00 +0000", None),
    ("Fri, 01 Jan 2100 00:00:00 +0000", None),
    ("Wed, 31 Dec 1969 23:59:59 +0000", None),
    ("Wed, 25 Nov 2026 20:00:00 -0000", None),  # "-0000": no zone
    ("Wed, 25 Nov 2026 20:00:00", None),
    ("Wed, 25 Nov 26 20:00:00 +0000", None),  # a two-digit year
    ("yesterday", None), ("Wed, 25 Nov " + "9" * 400 + " 20:00:00 +0000", None),
])
def test_times_are_zoned_and_between_1970_and_2100(text, expected):
    when, given = tf.timestamp({"Timestamp": text}, "Timestamp", SID)
    assert when == expected
    assert given == (text if expected else None)


def test_an_ignored_value_is_logged_with_the_call_sid_not_the_value(caplog):
    caplog.set_level(logging.WARNING, logger="ivr.voice.twilio_form")
    cb = tf.status_callback({"CallSid": SID, "CallStatus": "completed",
                             "SequenceNumber": str(2**53), "CallDuration": "+905321234567",
                             "Timestamp": "Fri, 31 Dec 9999 23:59:59 -0100"})
    assert (cb.sequence_number, cb.call_duration, cb.timestamp, cb.timestamp_text) == (
        None, None, None, None)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 3
    for name in ("SequenceNumber", "CallDuration", "Timestamp"):
        assert f"webhook field {name} ignored" in logged
    assert logged.count(f"call_sid={SID}") == 3
    assert "905321234567" not in logged and str(2**53) not in logged


@pytest.mark.parametrize("sid,message", [
    ("", "CallSid parameter is required"), ("   ", "CallSid parameter is required"),
    ("CA" + "a" * 4998, "longer than 64"), ("CA\x01x", "control characters"),
    ("CA\nx", "control characters"),
])
def test_a_bad_call_sid_is_refused(sid, message):
    with pytest.raises(tf.BadWebhook, match=message):
        tf.call_fields({"CallSid": sid})


def test_the_spool_keeps_only_accepted_fields_and_they_parse_the_same_again():
    form = {"CallSid": f" {SID} ", "AccountSid": "AC" + "1" * 32, "From": "+905321234567",
            "To": "+902122223344", "Direction": "inbound", "CallStatus": "completed",
            "SequenceNumber": str(2**64), "Timestamp": "Wed, 25 Nov 2026 20:00:00 +0000",
            "CallDuration": "42", "CallbackSource": "call-progress-events",
            "Bogus": "x" * 5000, "RecordingStartTime": "Fri, 31 Dec 9999 23:59:59 -0100"}
    cb = tf.status_callback(form)
    kept = cb.form()
    assert "SequenceNumber" not in kept and "Bogus" not in kept
    assert kept["CallSid"] == SID and kept["CallDuration"] == "42"
    assert tf.status_callback(kept) == cb
    rec = tf.recording_callback({**form, "RecordingChannels": "2", "RecordingDuration": "-5"})
    assert (rec.channels, rec.duration, rec.start_time) == (2, None, None)
    assert tf.recording_callback(rec.form()) == rec


def test_digits_and_gather_target():
    assert tf.gather_input({"CallSid": SID, "Digits": "1" * 5000}).digits == "1" * 32
    assert tf.gather_input({"CallSid": SID, "Digits": ""}).digits is None
    target = tf.gather_target({"run": "r" * 40, "step": str(2**53), "s": "t"}, SID)
    assert (target.run, target.step, target.token) == ("r" * 32, None, "t")
    assert tf.gather_target({"run": "r", "step": "3"}, SID).step == 3
