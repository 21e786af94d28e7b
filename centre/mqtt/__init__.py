"""The centre's MQTT policy on top of ``core.mqtt``: its endpoint from centre.yaml, acknowledgements after commit.

The client itself (paho on the asyncio loop, typed errors, MQTT 5 / 3.1.1) is the
one the gateway uses, in ``core/mqtt/``.
"""
