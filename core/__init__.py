"""Shared basics: clock, tasks, backoff, record types, the strict model base, YAML with lines, and the protocol.

Imports nothing of ours: drivers, inference, gateway and centre all build on it.
"""
