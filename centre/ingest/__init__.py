"""Ingest: every gateway's traffic, from a shared MQTT subscription into the store, exactly once (docs/centre.md#ingest)."""
