"""Shared fixtures: an isolated environment and home for every test, and the loopback server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.amigo_server import AmigoServer

_LEAKY = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's AMIGO_* settings, proxies or data directory."""
    for name in list(os.environ):
        if name.startswith(("AMIGO_", "JPY_SESSION")) or name in _LEAKY:
            monkeypatch.delenv(name)
    monkeypatch.setenv("AMIGO_HOME", str(tmp_path / "amigo-home"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def _shared_server() -> Iterator[AmigoServer]:
    with AmigoServer() as server:
        yield server


@pytest.fixture
def server(_shared_server: AmigoServer) -> Iterator[AmigoServer]:
    """The loopback AmigoChat server, with an empty queue and no recorded requests."""
    _shared_server.reset()
    yield _shared_server
    _shared_server.reset()
