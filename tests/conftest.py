"""Shared fixtures: an isolated environment and home for every test, the loopback server, and
the extension loaded in the in-process shell (``ip``) or in a real kernel (``kernel``) against it.
A test module that needs more of either defines its own fixture of that name."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.amigo_server import AmigoServer
from tests.kernel import Kernel, running_kernel
from tests.shell import Recorder, TestingShell

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


@pytest.fixture
def ip(server: AmigoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestingShell]:
    """The shared in-process shell with the extension loaded against the loopback server; the
    variables a test made and the ``%config AmigoMagics`` settings it changed are gone after it
    (the shell is shared by the whole run)."""
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    shell = TestingShell.instance()
    shell.display_pub = Recorder()
    before = set(shell.user_ns)
    settings = copy.deepcopy(shell.config["AmigoMagics"])
    shell.run_cell("%load_ext amigo_magic")
    try:
        yield shell
    finally:
        shell.run_cell("%unload_ext amigo_magic")
        shell.config["AmigoMagics"] = settings  # the next load starts from these
        for name in set(shell.user_ns) - before:
            if not name.startswith("_"):  # IPython's own history names stay IPython's
                shell.user_ns.pop(name, None)


@pytest.fixture
def kernel(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Kernel]:
    """A real ipykernel with the extension loaded against the loopback server."""
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    with running_kernel(str(tmp_path)) as k:
        assert k.execute("%load_ext amigo_magic").status == "ok"
        yield k
