"""What an authentic replay envelope may ask for: actions and params, each refusal with a reason and a detail."""

from __future__ import annotations

import pytest

from core.protocol.envelope import parse
from gateway.replay.request import MAX_SPAN, Refused, RecordsAsk, read
from tests.gateway.replay.site import records, request

EPOCH = "0123456789abcdef"


def ask_of(payload: bytes):
    return read(parse(payload, kind="replay"))


def test_records_names_a_lane_an_epoch_and_an_inclusive_range():
    ask = ask_of(records("alarm", EPOCH, 3, 9))
    assert ask.action == "records" and ask.records == RecordsAsk("alarm", EPOCH, 3, 9)


@pytest.mark.parametrize("action", ["state", "meta"])
def test_state_and_meta_take_no_params(action):
    assert ask_of(request(action)).records is None
    with pytest.raises(Refused) as exc:
        ask_of(request(action, lane="alarm"))
    assert exc.value.reason == "invalid_params"


@pytest.mark.parametrize("params, words", [
    ({"lane": "logs", "epoch": EPOCH, "from_seq": 1, "to_seq": 2}, "lane must be one of"),
    ({"lane": "alarm", "epoch": "XYZ", "from_seq": 1, "to_seq": 2}, "epoch must be 16"),
    ({"lane": "alarm", "epoch": EPOCH, "from_seq": 0, "to_seq": 2}, ">= 1"),
    ({"lane": "alarm", "epoch": EPOCH, "from_seq": True, "to_seq": 2}, "whole numbers"),
    ({"lane": "alarm", "epoch": EPOCH, "from_seq": 1.5, "to_seq": 2}, "whole numbers"),
    ({"lane": "alarm", "epoch": EPOCH, "from_seq": 5, "to_seq": 2}, "is after to_seq"),
    ({"lane": "alarm", "epoch": EPOCH, "from_seq": 1, "to_seq": MAX_SPAN + 1}, "at most"),
    ({"lane": "alarm", "epoch": EPOCH, "from_seq": 1}, "missing to_seq"),
    ({"lane": "alarm", "epoch": EPOCH, "from_seq": 1, "to_seq": 2, "rate": 9}, "unknown rate"),
])
def test_bad_params_are_refused_with_what_is_wrong(params, words):
    with pytest.raises(Refused) as exc:
        ask_of(request("records", **params))
    assert exc.value.reason == "invalid_params" and words in exc.value.detail


def test_an_unknown_action_or_a_target_other_than_star_is_refused():
    with pytest.raises(Refused) as exc:
        ask_of(request("everything"))
    assert exc.value.reason == "unknown_action"
    with pytest.raises(Refused) as exc:
        ask_of(request("state", target="soil-1"))
    assert exc.value.reason == "invalid_params"
