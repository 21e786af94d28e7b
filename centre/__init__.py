"""Canopy Centre: the central service that turns gateway traffic into people's work (docs/centre.md).

It talks to gateways only through the broker and docs/protocol.md, so it imports ``core``
and never ``gateway``.
"""
