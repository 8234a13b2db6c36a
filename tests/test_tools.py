"""Notebook functions as tools (``%%amigo -T NAME``) against the loopback server: streamed
``tool_calls`` deltas, approval (always / no way to ask / a real kernel's input request), the
``tool`` message of the next request, and the failures docs/reliability.md lists."""

from __future__ import annotations

import json
from typing import Any

import pytest

from amigo_magic.tools import tool_of
from tests.amigo_server import AmigoServer, Reply
from tests.kernel import Kernel
from tests.shell import TestingShell

ADD = '''
calls = []

def add(a: int, b: int = 0) -> int:
    """Add two numbers.

    Args:
        a: the first number
        b: the second number
    """
    calls.append((a, b))
    return a + b
'''


def tool_call_stream(*calls: tuple[str, str], pieces: int = 3) -> Reply:
    """An SSE answer that calls tools: each ``(name, arguments)`` streamed as OpenAI does — the
    id and name first, the arguments in ``pieces`` parts."""
    events: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}
    ]
    for index, (name, arguments) in enumerate(calls):
        head = {"index": index, "id": f"call_{index}_x", "type": "function",
                "function": {"name": name, "arguments": ""}}  # fmt: skip
        events.append({"choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})
        size = max(1, -(-len(arguments) // pieces))
        for start in range(0, len(arguments), size):
            part = {"index": index, "function": {"arguments": arguments[start : start + size]}}
            events.append({"choices": [{"index": 0, "delta": {"tool_calls": [part]}}]})
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return Reply.raw(body.encode(), content_type="text/event-stream")


def magics(ip: TestingShell) -> Any:
    return ip.magics_manager.registry["AmigoMagics"]


def tool_messages(request: Any) -> list[dict[str, Any]]:
    return [m for m in request.json["messages"] if m["role"] == "tool"]


def test_a_function_becomes_a_tool_schema() -> None:
    namespace: dict[str, Any] = {}
    exec(ADD, namespace)
    tool = tool_of("add", namespace["add"])
    assert tool.spec() == {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers.",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "description": "the first number"},
                    "b": {"type": "integer", "description": "the second number", "default": 0},
                },
                "required": ["a"],
            },
        },
    }


def test_an_approved_streamed_call_runs_once_and_its_result_goes_back(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell(ADD)
    magics(ip).approve_tools = "always"
    server.enqueue(tool_call_stream(("add", '{"a": 2, "b": 3}')), Reply.stream("2 + 3 is 5."))
    ip.run_cell("%%amigo -T add -o said\nWhat is 2 + 3? Use the tool.")
    assert ip.user_ns["calls"] == [(2, 3)]  # once, with the streamed arguments
    first, second = server.requests
    assert first.json["tools"][0]["function"]["name"] == "add"
    assistant = second.json["messages"][-2]
    assert assistant["tool_calls"] == [
        {"id": "call_0_x", "type": "function",
         "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
    ]  # fmt: skip
    assert tool_messages(second) == [{"role": "tool", "tool_call_id": "call_0_x", "content": "5"}]
    assert ip.user_ns["said"] == "2 + 3 is 5."
    shown = [d.data for d in ip.display_pub.displays if "🔧" in d.data.get("text/plain", "")]
    assert shown[-1]["text/plain"] == "🔧 1 tool call\n  add(a=2, b=3) → ok: 5"
    assert "<details" in shown[-1]["text/html"]
    (turn,) = [t for t in ip.run_cell("%amigo history").result.data["text/plain"].split("\n")
               if "2 + 3 is 5." in t]  # fmt: skip
    assert turn


def test_an_openai_compatible_endpoint_gets_the_tools_and_the_tool_message(
    ip: TestingShell,
) -> None:
    ip.run_cell(ADD)
    magics(ip).approve_tools = "always"
    with AmigoServer(strict_headers=False, success_status=200) as lab:
        magics(ip).endpoints = {"lab": {"url": lab.base_url}}
        lab.enqueue(tool_call_stream(("add", '{"a": 4, "b": 5}')), Reply.stream("9."))
        ip.run_cell("%%amigo -m lab:llama3.2 -T add\nWhat is 4 + 5?")
        first, second = lab.requests
    assert first.path == second.path == "/v1/chat/completions"
    assert [t["function"]["name"] for t in first.json["tools"]] == ["add"]
    assert tool_messages(second) == [{"role": "tool", "tool_call_id": "call_0_x", "content": "9"}]
    assert ip.user_ns["calls"] == [(4, 5)]


def test_without_a_way_to_ask_the_call_is_denied(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell(ADD)  # approve_tools is "ask"; pytest's captured stdin cannot be asked
    server.enqueue(tool_call_stream(("add", '{"a": 2, "b": 3}')), Reply.stream("I may not."))
    ip.run_cell("%%amigo -T add\nWhat is 2 + 3?")
    assert ip.user_ns["calls"] == []
    (message,) = tool_messages(server.requests[1])
    assert message["content"].startswith("The user did not allow this call (denied: this front")
    assert "AmigoMagics.approve_tools = 'always'" in message["content"]


@pytest.mark.parametrize(
    ("name", "arguments", "said"),
    [
        ("add", '{"a": 2, "b": ', "Error: the arguments are not valid JSON (Expecting value"),
        ("add", "[2, 3]", "Error: the arguments must be a JSON object, got list."),
        ("add", '{"c": 1}', "Error: missing a required argument: 'a'; add takes a, b."),
        ("mul", '{"a": 2}', "Error: there is no tool named 'mul'; the tools are: add."),
    ],
)
def test_bad_calls_are_told_to_the_model_and_nothing_runs(
    ip: TestingShell, server: AmigoServer, name: str, arguments: str, said: str
) -> None:
    ip.run_cell(ADD)
    magics(ip).approve_tools = "always"
    server.enqueue(tool_call_stream((name, arguments)), Reply.stream("Sorry."))
    ip.run_cell("%%amigo -T add\nAdd them")
    assert ip.user_ns["calls"] == []
    (message,) = tool_messages(server.requests[1])
    assert message["content"].startswith(said)


def test_a_tool_that_raises_or_returns_10_mb(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell(
        "def boom() -> None:\n    raise ValueError('no such table: sales')\n"
        "def huge() -> str:\n    return 'x' * 10_000_000\n"
    )
    magics(ip).approve_tools = "always"
    server.enqueue(tool_call_stream(("boom", "{}"), ("huge", "")), Reply.stream("Done."))
    ip.run_cell("%%amigo -T boom -T huge\nTry both")
    boom, huge = tool_messages(server.requests[1])
    assert boom["content"] == "Error: ValueError: no such table: sales"
    budget = magics(ip).context_budget
    assert len(huge["content"]) <= budget * 4 + 64  # the context budget, with its note
    assert huge["content"].endswith("more characters left out")


def test_an_async_tools_result_and_error_go_back_awaited(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell(
        "import asyncio\n"
        "async def fetch(n: int) -> str:\n    await asyncio.sleep(0.01)\n"
        "    return 'got ' + str(n)\n"
        "async def fail() -> None:\n    await asyncio.sleep(0)\n    raise KeyError('gone')\n"
    )
    magics(ip).approve_tools = "always"
    server.enqueue(tool_call_stream(("fetch", '{"n": 3}'), ("fail", "{}")), Reply.stream("Done."))
    ip.run_cell("%%amigo -T fetch -T fail\nTry both")
    fetched, failed = tool_messages(server.requests[1])
    assert fetched["content"] == "got 3"
    assert failed["content"] == "Error: KeyError: 'gone'"


def test_a_model_that_calls_tools_forever_is_stopped(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell(ADD)
    magics(ip).approve_tools = "always"
    magics(ip).max_tool_rounds = 2
    server.enqueue(*[tool_call_stream(("add", '{"a": 1}')) for _ in range(3)])
    result = ip.run_cell_quietly("%%amigo -T add\nKeep adding")
    assert str(result.error_in_exec) == (
        "The model still called tools after 2 rounds, so it was stopped there; raise "
        "AmigoMagics.max_tool_rounds if it needs more."
    )
    assert len(server.requests) == 3
    assert ip.user_ns["calls"] == [(1, 0), (1, 0)]


def test_a_real_kernel_asks_through_input_and_runs_on_yes(
    kernel: Kernel, server: AmigoServer
) -> None:
    assert kernel.execute(ADD).status == "ok"
    server.enqueue(tool_call_stream(("add", '{"a": 2, "b": 3}')), Reply.stream("It is 5."))
    run = kernel.execute("%%amigo -T add\nWhat is 2 + 3?", answer="y")
    assert run.status == "ok"
    (asked,) = [m for m in run.messages if m["msg_type"] == "input_request"]
    assert (
        asked["content"]["prompt"] == "Run add(a=2, b=3)? [y]es / [n]o / [a]lways for this cell: "
    )
    assert tool_messages(server.requests[1])[0]["content"] == "5"
    assert kernel.execute("print(calls)").stream_text == "[(2, 3)]\n"


def test_a_real_kernel_without_stdin_denies(kernel: Kernel, server: AmigoServer) -> None:
    assert kernel.execute(ADD).status == "ok"
    server.enqueue(tool_call_stream(("add", '{"a": 2, "b": 3}')), Reply.stream("I may not."))
    assert kernel.execute("%%amigo -T add\nWhat is 2 + 3?").status == "ok"  # no stdin
    assert tool_messages(server.requests[1])[0]["content"].startswith("The user did not allow")
    assert kernel.execute("print(calls)").stream_text == "[]\n"


def test_the_calls_are_kept_with_the_turn_and_exported(
    ip: TestingShell, server: AmigoServer, tmp_path: Any
) -> None:
    ip.run_cell(ADD)
    magics(ip).approve_tools = "always"
    server.enqueue(tool_call_stream(("add", '{"a": 2, "b": 3}')), Reply.stream("5."))
    ip.run_cell("%%amigo -T add\nWhat is 2 + 3?")
    (answer,) = [t for t in magics(ip).session.history("default") if t.role == "assistant"]
    assert answer.meta["tools"] == [
        {"id": "call_0_x", "name": "add", "arguments": '{"a": 2, "b": 3}', "status": "ok",
         "result": "5"}
    ]  # fmt: skip
    assert answer.meta["tool_rounds"] == 1
    ip.run_cell(f"%amigo export {tmp_path / 'chat.json'}")
    exported = json.loads((tmp_path / "chat.json").read_text())
    assert exported["turns"][-1]["meta"]["tools"][0]["result"] == "5"
    ip.run_cell(f"%amigo export {tmp_path / 'chat.md'}")
    markdown = (tmp_path / "chat.md").read_text()
    assert '- tool call `add({"a": 2, "b": 3})` → ok: 5' in markdown


def test_an_interrupt_at_the_question_stops_the_answer_and_runs_nothing(
    kernel: Kernel, server: AmigoServer
) -> None:
    assert kernel.execute(ADD).status == "ok"
    server.enqueue(tool_call_stream(("add", '{"a": 2, "b": 3}')))
    msg_id = kernel.submit("%%amigo -T add\nWhat is 2 + 3?", stdin=True)
    asked = kernel.kc.get_stdin_msg(timeout=30)
    assert asked["content"]["prompt"].startswith("Run add(a=2, b=3)?")
    kernel.interrupt()  # the ■ button while the question waits
    run = kernel.wait(msg_id, timeout=30)
    assert run.reply["content"]["ename"] == "AnswerStopped"
    assert kernel.execute("print(calls)").stream_text == "[]\n"
    assert len(server.requests) == 1


def test_interleaved_pieces_of_two_calls_are_assembled_in_order() -> None:
    from amigo_magic.protocol import ToolCallDelta, parse_chunk, parse_completion
    from amigo_magic.tools import ToolCall, assemble

    def chunk(*calls: dict[str, Any]) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": list(calls)}}]}

    deltas = [
        *parse_chunk(chunk({"index": 1, "id": "b", "function": {"name": "mul", "arguments": ""}})),
        *parse_chunk(chunk({"index": 0, "id": "a", "function": {"name": "add", "arguments": "{"}})),
        *parse_chunk(chunk({"index": 1, "function": {"arguments": '{"x": 2}'}})),
        *parse_chunk(chunk({"index": 0, "function": {"arguments": '"a": 1}'}})),
    ]
    assert deltas[0] == ToolCallDelta(1, "b", "mul", "")
    assert assemble(deltas) == [ToolCall("a", "add", '{"a": 1}'), ToolCall("b", "mul", '{"x": 2}')]
    whole = {  # a server that does not stream: the calls in the message, content null
        "choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "add", "arguments": {"a": 3}}}
        ]}, "finish_reason": "tool_calls"}]
    }  # fmt: skip
    events = parse_completion(whole)
    assert assemble([e for e in events if isinstance(e, ToolCallDelta)]) == [
        ToolCall("c", "add", '{"a": 3}')
    ]


def test_a_key_in_a_tools_result_or_error_never_leaves(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-amigo-5f3c9e1d7b2a4c6e8f0a"
    monkeypatch.setenv("AMIGO_API_KEY", key)
    ip.run_cell(
        "import os\n"
        "def settings() -> dict:\n    return dict(os.environ)\n"
        "def connect() -> None:\n"
        "    raise RuntimeError('refused with ' + os.environ['AMIGO_API_KEY'])\n"
    )
    magics(ip).approve_tools = "always"
    server.enqueue(tool_call_stream(("settings", ""), ("connect", "")), Reply.stream("Done."))
    ip.run_cell("%%amigo -T settings -T connect\nLook around")
    second = server.requests[1]
    assert key not in second.body.decode()
    result, error = tool_messages(second)
    assert "'AMIGO_API_KEY': '***'" in result["content"]
    assert error["content"] == "Error: RuntimeError: refused with ***"
    (answer,) = [t for t in magics(ip).session.history("default") if t.role == "assistant"]
    assert key not in json.dumps(answer.meta)
