"""The HTTP JSON API's endpoints, one module per subject; :mod:`centre.web.app` mounts them under ``/api``."""
