"""The centre's HTTP side: the JSON API (FastAPI, OpenAPI at ``/api/openapi.json``), the live stream (SSE at
``/api/stream``), health and Prometheus metrics, the cross-instance change bridge, and the server component.

Everything but ``/health``, ``/metrics`` and ``POST /api/login`` needs a logged-in user; the
role/scope check for action endpoints is :func:`centre.web.auth.require`.
"""
