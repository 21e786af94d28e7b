"""The board of the remote-config tests (board.py), with the ``configure`` permission granted to ``admin``."""

import pytest

from tests.gateway.remote_config.board import Board, grant_configure


@pytest.fixture
def board(tmp_path, monkeypatch) -> Board:
    grant_configure(monkeypatch)
    return Board(tmp_path)
