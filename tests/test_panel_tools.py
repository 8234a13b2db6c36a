"""The panel's tool approval at widget level: a real session, store and loop thread against the
loopback server; the model's streamed call waits for Approve or Deny in the panel."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amigo_magic import ChatPanel
from amigo_magic.config import Preferences, Settings
from amigo_magic.runner import close_runner, get_runner
from amigo_magic.session import ChatSession
from amigo_magic.store import SQLiteStore
from tests.amigo_server import AmigoServer, Reply
from tests.shell import wait_until
from tests.test_panel import turn_html
from tests.test_tools import tool_call_stream


@pytest.fixture
def session(tmp_path: Path) -> Iterator[ChatSession]:
    store = SQLiteStore(tmp_path / "h.db")
    yield ChatSession(store=store, notebook="tools.ipynb", runner=get_runner())
    close_runner()
    store.close()


def panel_with_add(session: ChatSession, server: AmigoServer) -> tuple[ChatPanel, list[Any]]:
    calls: list[Any] = []

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    settings = Settings(base_url=server.base_url)
    panel = ChatPanel(
        session=session, settings=lambda: settings, tools=["add"], namespace={"add": add}
    )
    return panel, calls


def question(panel: ChatPanel) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", panel.approvals.question.value))


def shown(panel: ChatPanel) -> bool:
    return panel.approvals.row.layout.display != "none"


def tool_message(server: AmigoServer) -> str:
    (message,) = [m for m in server.requests[1].json["messages"] if m["role"] == "tool"]
    return str(message["content"])


def test_approve_in_the_panel_runs_the_call_and_the_answer_goes_on(
    session: ChatSession, server: AmigoServer
) -> None:
    panel, calls = panel_with_add(session, server)
    assert panel.approvals.row in panel.children
    assert not shown(panel)
    server.enqueue(tool_call_stream(("add", '{"a": 2, "b": 3}')), Reply.stream("It is 5."))
    panel.prompt.value = "What is 2 + 3?"
    panel.send_button.click()
    wait_until(lambda: shown(panel), "the approval row")
    assert question(panel) == "Run add(a=2, b=3)?"
    assert calls == []
    assert len(server.requests) == 1
    panel.approvals.approve.click()
    wait_until(lambda: not panel.send_button.disabled, "the answer to end")
    assert calls == [(2, 3)]
    assert tool_message(server) == "5"
    assert "It is 5." in turn_html(panel, -1)
    calls = str(panel.turn_boxes[-1].children[-1].value)
    assert calls.startswith('<details class="amigo-tools"><summary>🔧 1 tool call</summary>')
    assert "<code>add(a=2, b=3)</code> → ok: <code>5</code>" in calls
    assert not shown(panel)


def test_deny_in_the_panel_tells_the_model_and_runs_nothing(
    session: ChatSession, server: AmigoServer
) -> None:
    panel, calls = panel_with_add(session, server)
    server.enqueue(tool_call_stream(("add", '{"a": 2, "b": 3}')), Reply.stream("Fine."))
    panel.prompt.value = "What is 2 + 3?"
    panel.send_button.click()
    wait_until(lambda: shown(panel), "the approval row")
    panel.approvals.deny.click()
    wait_until(lambda: not panel.send_button.disabled, "the answer to end")
    assert calls == []
    assert tool_message(server).startswith("The user did not allow this call (denied by the user)")


def test_stop_while_a_call_waits_drops_it(session: ChatSession, server: AmigoServer) -> None:
    panel, calls = panel_with_add(session, server)
    server.enqueue(tool_call_stream(("add", '{"a": 2, "b": 3}')))
    panel.prompt.value = "What is 2 + 3?"
    panel.send_button.click()
    wait_until(lambda: shown(panel), "the approval row")
    panel.stop_button.click()
    wait_until(lambda: not panel.send_button.disabled, "the answer to stop")
    assert not shown(panel)
    assert calls == []
    assert len(server.requests) == 1


def test_always_runs_without_asking(tmp_path: Path, server: AmigoServer) -> None:
    store = SQLiteStore(tmp_path / "h.db")
    session = ChatSession(
        store=store, notebook="t.ipynb", runner=get_runner(),
        preferences=lambda: Preferences(approve_tools="always"),
    )  # fmt: skip
    try:
        panel, calls = panel_with_add(session, server)
        server.enqueue(tool_call_stream(("add", '{"a": 1, "b": 1}')), Reply.stream("2."))
        panel.prompt.value = "1 + 1?"
        panel.send_button.click()
        wait_until(lambda: len(server.requests) == 2 and not panel.send_button.disabled, "the end")
        assert calls == [(1, 1)]
        assert tool_message(server) == "2"
    finally:
        close_runner()
        store.close()
