"""Record bodies: what a receiver gets for odd values."""

import orjson

from core.records import Reading, reading_body


def test_nan_and_infinity_are_marked_invalid_not_silently_null():
    for value, tag in ((float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")):
        body = orjson.loads(reading_body(Reading(1.0, "d", "p", value, "degC")))
        assert body["value"] is None and body["invalid"] == tag


def test_unit_is_omitted_when_empty():
    assert "unit" not in orjson.loads(reading_body(Reading(1.0, "d", "p", 3)))


def test_bodies_are_exact_json_in_a_stable_field_order():
    for value in (29.8, 887, True, "WS-100", -0.5, 0):
        for unit in ("%", "", "°C"):
            raw = reading_body(Reading(1_700_000_000.1234, "soil-1", "moisture", value, unit))
            body = orjson.loads(raw)
            assert body == {"ts": 1_700_000_000.123, "device": "soil-1", "point": "moisture", "value": value,
                            **({"unit": unit} if unit else {})}
            assert type(body["value"]) is type(value)
            assert list(body)[:4] == ["ts", "device", "point", "value"]


def test_queued_bodies_stay_small():
    """orjson's output pins a ~4 KiB buffer (invisible to sys.getsizeof); bodies that wait in queues must not."""
    import tracemalloc

    from core.records import event_body

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        bodies = [reading_body(Reading(1.0, "d", f"p{i % 50}", i, "%")) for i in range(1000)]
        bodies += [event_body(1.0, "device.status", device=f"d{i}") for i in range(1000)]
        per_body = (tracemalloc.get_traced_memory()[0] - before) / len(bodies)
    finally:
        tracemalloc.stop()
    assert per_body < 400, f"{per_body:.0f} bytes held per queued body"
