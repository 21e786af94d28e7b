"""The centre's MQTT client: paho driven from the asyncio loop, manual acknowledgements, awaitable publishes.

A copy of the gateway's pattern (gateway/uplink/mqtt.py, client.py), because the centre
may import ``core`` only; the two belong together in ``core/`` (see docs/centre.md).
"""
