"""The board fixtures of the remote-config tests (board.py)."""

from tests.gateway.remote_config.board import board, configure_permission  # noqa: F401 - fixtures
