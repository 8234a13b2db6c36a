"""Both front ends on one service layer: a panel turn is the request a cell would send, and the
settings they share are refused at ``%config`` time when they cannot work."""

from __future__ import annotations

import logging

import pytest

from amigo_magic import ChatPanel
from tests.amigo_server import AmigoServer
from tests.shell import TestingShell, wait_until

SHARED = {"max_tokens": "200", "max_history": "2", "system_prompt": "'Be terse.'"}


def chat_requests(server: AmigoServer) -> list[dict[str, object]]:
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


def test_a_panel_turn_sends_what_a_cell_with_the_same_settings_sends(
    ip: TestingShell, server: AmigoServer
) -> None:
    for name, value in SHARED.items():
        ip.run_cell(f"%config AmigoMagics.{name} = {value}")
    for n in range(3):  # enough history that max_history = 2 has to cut it
        ip.run_cell(f"%%amigo --chat shared\nquestion {n}")
    ip.run_cell("%%amigo --chat shared\nfrom a cell")
    ip.run_cell("panel = %amigo_panel --chat shared")
    panel = ip.user_ns["panel"]
    assert isinstance(panel, ChatPanel)
    panel.prompt.value = "from the panel"
    panel.send_button.click()
    wait_until(lambda: not panel.send_button.disabled, "the panel's answer")
    cell, from_panel = chat_requests(server)[-2:]
    for body in (cell, from_panel):
        assert body["max_tokens"] == 200
        messages = body["messages"]
        assert isinstance(messages, list)
        assert messages[0] == {"role": "system", "content": "Be terse."}
        assert len(messages) == 1 + 2 + 1  # the system prompt, two earlier messages, the prompt
    assert [m["content"] for m in from_panel["messages"]][1:] == [  # type: ignore[index]
        "from a cell",
        "Echo: from a cell",
        "from the panel",
    ]
    assert {k: v for k, v in cell.items() if k not in ("messages", "chatId")} == {
        k: v for k, v in from_panel.items() if k not in ("messages", "chatId")
    }


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("max_history = -1", "AmigoMagics.max_history must be 0 or more (got -1)"),
        ("max_tokens = 0", "AmigoMagics.max_tokens must be 1 or more (got 0)"),
        ("throttle = -0.5", "AmigoMagics.throttle is in seconds and must be 0 or more"),
        ("read_timeout = 0", "AmigoMagics.read_timeout is in seconds and must be more than 0"),
        ("default_format = 'yaml'", "expected any of ['markdown', 'text', 'code', 'html', 'json']"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_when_it_is_set(
    ip: TestingShell, setting: str, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    magics = ip.magics_manager.registry["AmigoMagics"]
    name = setting.split()[0]
    before = getattr(magics, name)
    try:
        with caplog.at_level(logging.ERROR):
            ip.run_cell(f"%config AmigoMagics.{setting}")
        (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert says in line
        assert "\n" not in line  # one line, no traceback
        assert getattr(magics, name) == before  # nothing changed
        # IPython keeps the refused value in the shell's own configuration: the extension still
        # loads again, on the default for it, and says so once.
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            ip.run_cell("%reload_ext amigo_magic")
        (warning,) = [r.getMessage() for r in caplog.records if r.name == "amigo_magic"]
        assert says in warning
        assert warning.endswith("Using the default.")
        assert getattr(ip.magics_manager.registry["AmigoMagics"], name) == before
    finally:
        ip.run_cell(f"%config AmigoMagics.{name} = {before!r}")


def test_zero_history_and_zero_throttle_are_allowed(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("%config AmigoMagics.max_history = 0")
    ip.run_cell("%config AmigoMagics.throttle = 0")
    try:
        ip.run_cell("%%amigo\nfirst")
        ip.run_cell("%%amigo\nsecond")
        assert [m["content"] for m in chat_requests(server)[-1]["messages"]] == ["second"]  # type: ignore[attr-defined]
    finally:
        ip.run_cell("%config AmigoMagics.throttle = 0.05")
