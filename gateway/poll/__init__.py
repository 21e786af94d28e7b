"""Polling: the bus registry (registry.py) and bus types (buses/), one poller task per device (poller.py), device health (health.py)."""
