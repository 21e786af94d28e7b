"""Record bodies: what a receiver gets for odd values."""

import orjson

from gateway.records import Reading, reading_body


def test_nan_and_infinity_are_marked_invalid_not_silently_null():
    for value, tag in ((float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")):
        body = orjson.loads(reading_body(Reading(1.0, "d", "p", value, "degC")))
        assert body["value"] is None and body["invalid"] == tag


def test_unit_is_omitted_when_empty():
    assert "unit" not in orjson.loads(reading_body(Reading(1.0, "d", "p", 3)))
