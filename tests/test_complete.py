"""Tab completion in a real kernel: Jupyter's ``complete_request``, as JupyterLab sends it."""

from __future__ import annotations

import time
from typing import Any

from tests.amigo_server import AmigoServer
from tests.kernel import Kernel


def complete(kernel: Kernel, code: str, cursor: int | None = None) -> dict[str, Any]:
    """The kernel's ``complete_reply`` for ``code`` with the cursor at ``cursor`` (the end)."""
    msg_id = kernel.kc.complete(code, len(code) if cursor is None else cursor)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = kernel.kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            content: dict[str, Any] = reply["content"]
            assert content["status"] == "ok", content
            return content
    raise AssertionError(f"no complete_reply for {code!r}")


def texts(reply: dict[str, Any], code: str) -> list[str]:
    """What the completions would make of the text they replace."""
    start, end = reply["cursor_start"], reply["cursor_end"]
    assert code[end:] == "" or end <= len(code)
    return [code[:start] + match for match in reply["matches"]]


def test_amigo_verbs_complete_and_nothing_else(kernel: Kernel) -> None:
    code = "%amigo mo"
    reply = complete(kernel, code)
    assert texts(reply, code) == ["%amigo models"]  # not %more, not a Python name


def test_model_names_complete_after_model(kernel: Kernel) -> None:
    code = "%%amigo --model cla"
    reply = complete(kernel, code + "\nexplain this", len(code))  # the cursor on the first line
    made = texts(reply, code)
    assert made[0] == "%%amigo --model claude", made  # the short alias first
    assert all(m.startswith("%%amigo --model cla") for m in made), made
    assert "%%amigo --model claude-3-5-sonnet-20241022" in made
    short = complete(kernel, "%%amigo -m gpt-4o-m")
    assert texts(short, "%%amigo -m gpt-4o-m") == ["%%amigo -m gpt-4o-mini"]


def test_an_endpoints_live_models_complete_after_its_name(
    kernel: Kernel, server: AmigoServer
) -> None:
    added = kernel.execute(f"%amigo endpoint add ollama {server.base_url}")
    assert added.status == "ok", added.messages[-3:]
    names = complete(kernel, "%%amigo -m oll")
    assert texts(names, "%%amigo -m oll") == ["%%amigo -m ollama:"]
    code = "%%amigo -m ollama:"
    reply = complete(kernel, code)
    made = texts(reply, code)
    assert "%%amigo -m ollama:gpt-4o-mini" in made, made  # what the server's /models lists
    assert all(m.startswith(code) for m in made), made
    assert any(r.path == "/v1/models" for r in server.requests)
    narrowed = texts(complete(kernel, code + "gpt-4o-m"), code + "gpt-4o-m")
    assert narrowed == ["%%amigo -m ollama:gpt-4o-mini"], narrowed


def test_options_formats_and_chats_complete(kernel: Kernel, server: AmigoServer) -> None:
    assert texts(complete(kernel, "%%amigo --mo"), "%%amigo --mo") == ["%%amigo --model"]
    formats = texts(complete(kernel, "%%amigo -f j"), "%%amigo -f j")
    assert formats == ["%%amigo -f json"]
    assert kernel.execute("%%amigo --chat review\nhello").status == "ok"
    chats = texts(complete(kernel, "%%amigo --chat re"), "%%amigo --chat re")
    assert chats == ["%%amigo --chat review"]
    # the prompt below the first line is the user's text: no amigo completions there
    body = complete(kernel, "%%amigo\nwrite mo")
    assert "models" not in body["matches"]
