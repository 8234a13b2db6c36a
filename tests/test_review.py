"""The reviewer's findings: where the landed features meet — secrets, untrusted model output,
bad input, no data lost — each defect a test against the loopback server, the in-process shell
or a real kernel. A defect not fixed yet is ``xfail(strict=True)`` with what the user sees; the
fix drops the mark."""

from __future__ import annotations

import base64
import json
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from amigo_magic.errors import AmigoError, ConfigError
from amigo_magic.usage import BudgetExceededError
from tests.amigo_server import AmigoServer, Reply
from tests.kernel import Kernel
from tests.shell import Recorder, TestingShell

KEY = "sk-review-5b7e1c9d3a2f4e60"


@pytest.fixture
def home() -> Path:
    return Path(os.environ["AMIGO_HOME"])


def stored(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def shown(ip: TestingShell) -> str:
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    return "\n".join(repr(d.data) for d in pub.displays)


def chat_requests(server: AmigoServer) -> list[Any]:
    return [r for r in server.requests if r.path == "/v1/chat/completions"]


def failure(ip: TestingShell, cell: str) -> BaseException:
    result = ip.run_cell_quietly(cell)
    error = result.error_in_exec or result.error_before_exec
    assert error is not None, "the cell should have failed"
    return error  # type: ignore[no-any-return]


def tool_call_stream(name: str, arguments: str) -> Reply:
    """An SSE answer that calls one tool, as OpenAI streams it."""
    head = {"index": 0, "id": "call_0_x", "type": "function",
            "function": {"name": name, "arguments": arguments}}  # fmt: skip
    events: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [head]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return Reply.raw(body.encode(), content_type="text/event-stream")


# -- secrets ----------------------------------------------------------------------------------

TOOLS = '''
import os

def settings() -> str:
    """The notebook's settings."""
    return "AMIGO_API_KEY=" + os.environ["AMIGO_API_KEY"]

def connect() -> str:
    """Connect to the service."""
    raise RuntimeError("refused with key " + os.environ["AMIGO_API_KEY"])
'''


def test_a_tools_result_holding_the_key_is_never_sent_shown_or_stored(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("AMIGO_API_KEY", KEY)
    ip.run_cell(TOOLS)
    ip.run_cell("%config AmigoMagics.approve_tools = 'always'")
    server.enqueue(tool_call_stream("settings", "{}"), Reply.stream("Done."))
    ip.run_cell("%%amigo -T settings\nWhat are my settings?")
    first, second = chat_requests(server)
    assert KEY not in first.body.decode()  # the prompt side is scrubbed already
    assert "AMIGO_API_KEY=" in second.body.decode()  # the result went back …
    assert KEY not in second.body.decode()  # … without the key
    assert KEY not in shown(ip)
    assert KEY.encode() not in stored(home)


def test_a_tools_error_naming_the_key_is_never_sent_shown_or_stored(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("AMIGO_API_KEY", KEY)
    ip.run_cell(TOOLS)
    ip.run_cell("%config AmigoMagics.approve_tools = 'always'")
    server.enqueue(tool_call_stream("connect", "{}"), Reply.stream("It failed."))
    ip.run_cell("%%amigo -T connect\nConnect, please.")
    second = chat_requests(server)[1]
    assert "RuntimeError: refused with key" in second.body.decode()
    assert KEY not in second.body.decode()
    assert KEY not in shown(ip)
    assert KEY.encode() not in stored(home)


# -- bad input: one readable line ---------------------------------------------------------------


def test_attaching_a_device_is_one_line_not_a_hang(ip: TestingShell, server: AmigoServer) -> None:
    """``--attach /dev/zero`` (or a FIFO) read forever and filled memory."""
    outcome: dict[str, BaseException] = {}

    def attach() -> None:
        outcome["error"] = failure(ip, "%%amigo --attach /dev/zero --dry-run\nWhat is this?")

    worker = threading.Thread(target=attach, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "--attach /dev/zero still reading after 10 s"
    error = outcome["error"]
    assert isinstance(error, ConfigError)
    assert "--attach /dev/zero" in str(error)
    assert "\n" not in str(error)
    assert chat_requests(server) == []


def recording_line(created: Any = 1764633000.0, messages: Any = None) -> str:
    if messages is None:
        messages = [{"role": "user", "content": "old"}]
    request = {"kind": "chat", "target": "amigo", "model": "gpt-4o-mini", "params": {},
               "format": "markdown", "messages": messages}  # fmt: skip
    return json.dumps(
        {
            "v": 1,
            "key": "0" * 64,
            "created": created,
            "notebook": "",
            "request": request,
            "answer": {"text": "old answer"},
        }
    )


@pytest.mark.parametrize(
    "line",
    [recording_line(created=1e300), recording_line(messages=5)],
    ids=["date", "messages"],
)
def test_a_damaged_recording_that_parses_is_still_a_one_line_miss(
    ip: TestingShell, server: AmigoServer, tmp_path: Path, line: str
) -> None:
    cassette = tmp_path / "answers.jsonl"
    cassette.write_text(line + "\n")
    ip.run_cell(f"%config AmigoMagics.cache_file = {str(cassette)!r}")
    ip.run_cell("%config AmigoMagics.cache = 'replay'")
    error = failure(ip, "%%amigo --no-history\nnew")
    assert isinstance(error, AmigoError), repr(error)
    assert "nothing sent" in str(error)
    assert "holds no recordings (1 damaged line skipped)" in str(error)  # the line is skipped
    assert chat_requests(server) == []


# -- the budget ------------------------------------------------------------------------------


def test_a_maps_tokens_count_toward_the_budget(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("import amigo_magic")
    ip.run_cell("%config AmigoMagics.budget_tokens = 12")  # 5 tokens an item: c starts under it
    ip.run_cell("answers = amigo_magic.map('Say {item}', ['a', 'b', 'c'], concurrency=1)")
    assert ip.user_ns["answers"] == ["Echo: Say a", "Echo: Say b", "Echo: Say c"]
    assert len(chat_requests(server)) == 3
    error = failure(ip, "%%amigo\nand now?")
    assert isinstance(error, BudgetExceededError), repr(error)
    assert len(chat_requests(server)) == 3  # nothing sent


# -- parameters ------------------------------------------------------------------------------


def test_a_parameter_json_cannot_hold_is_one_line_and_writes_nothing(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("%config AmigoMagics.params = {'stop': {'\\n\\n'}}")
    error = failure(ip, "%%amigo\nhello")
    ip.run_cell("%config AmigoMagics.params = {}")
    assert isinstance(error, ConfigError), repr(error)
    assert "stop" in str(error)
    assert chat_requests(server) == []
    ip.run_cell("_h = get_ipython().find_line_magic('amigo').__self__.session.history()")
    assert ip.user_ns["_h"] == []  # no prompt turn left without its answer


# -- replay ----------------------------------------------------------------------------------


def test_a_typed_answer_is_recorded_and_replayed(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    server.enqueue(Reply.stream('{"name": "Ann", "age": 3}'))
    ip.run_cell("%%amigo --no-history --schema 'name, age int' -o first\nA person")
    assert len(chat_requests(server)) == 1
    ip.run_cell("%config AmigoMagics.cache = 'replay'")
    ip.run_cell("%%amigo --no-history --schema 'name, age int' -o second\nA person")
    assert len(chat_requests(server)) == 1  # replayed: nothing sent
    assert ip.user_ns["second"] == ip.user_ns["first"] == {"name": "Ann", "age": 3}


def test_a_recorded_picture_of_an_unshown_type_is_a_damaged_line(
    ip: TestingShell, server: AmigoServer, tmp_path: Path
) -> None:
    cassette = tmp_path / "answers.jsonl"
    ip.run_cell(f"%config AmigoMagics.cache_file = {str(cassette)!r}")
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    ip.run_cell("%amigo_image a fox")
    sent = len(server.requests)
    recording = json.loads(cassette.read_text())
    recording["answer"]["images"][0]["mime"] = "image/svg+xml"
    cassette.write_text(json.dumps(recording) + "\n")
    ip.run_cell("%config AmigoMagics.cache = 'replay'")
    error = failure(ip, "%amigo_image a fox")
    assert isinstance(error, AmigoError), repr(error)
    assert "\n" not in str(error)
    assert "image/svg+xml" not in shown(ip)
    assert len(server.requests) == sent


def test_a_key_echoed_in_tool_arguments_is_never_shown_or_stored(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("AMIGO_API_KEY", KEY)
    ip.run_cell("def echo(text: str) -> str:\n    '''Echo the text.'''\n    return 'ok'")
    ip.run_cell("%config AmigoMagics.approve_tools = 'always'")
    arguments = json.dumps({"text": "the key is " + KEY})
    server.enqueue(tool_call_stream("echo", arguments), Reply.stream("Done."))
    ip.run_cell("%%amigo -T echo\nEcho something.")
    assert len(chat_requests(server)) == 2
    assert "echo(" in shown(ip)
    assert KEY not in shown(ip)
    assert KEY.encode() not in stored(home)


# -- typed views ------------------------------------------------------------------------------


def test_an_arrays_range_is_not_hidden_by_one_nan(ip: TestingShell, server: AmigoServer) -> None:
    """``{a}`` for readings with a gap said "range nan … nan" (ndarray.min/max propagate NaN)."""
    ip.run_cell("import numpy as np\nreadings = np.array([[1.5, np.nan], [-2.0, 7.25]])")
    ip.run_cell("flags = np.array([True, False])")
    preview = ip.run_cell("%%amigo --dry-run\nSum up {readings} and {flags}").result
    sent = str(preview)
    assert "shape (2, 2), dtype float64, range -2 … 7.25" in sent
    assert "shape (2,), dtype bool, range False … True" in sent
    assert chat_requests(server) == []


def test_amigo_fix_never_sends_or_stores_a_key_in_the_failed_cell(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("AMIGO_API_KEY", KEY)
    ip.run_cell_quietly(f"import os\nos.environ['AMIGO_API_KEY'] = {KEY!r}\n1/0")
    fixed = "```python\nimport os\nos.environ['AMIGO_API_KEY'] = '***'\n1/1\n```"
    server.enqueue(Reply.stream(f"Division by zero.\n\n{fixed}"))
    ip.run_cell("%amigo fix --apply")
    (request,) = chat_requests(server)
    assert "ZeroDivisionError" in request.body.decode()
    assert KEY not in request.body.decode()
    assert KEY.encode() not in stored(home)


def choices_stream(*pieces: tuple[int, str]) -> Reply:
    """An SSE answer with ``n`` > 1: each chunk one choice's delta, as OpenAI and vLLM send."""
    events = [{"choices": [{"index": i, "delta": {"content": t}}]} for i, t in pieces]
    events += [{"choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]} for i in (0, 1)]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return Reply.raw(body.encode(), content_type="text/event-stream")


def test_a_second_choice_is_not_mixed_into_the_answer(ip: TestingShell) -> None:
    with AmigoServer(strict_headers=False, success_status=200) as lab:
        ip.run_cell(f"%config AmigoMagics.endpoints = {{'lab': {{'url': {lab.base_url!r}}}}}")
        try:
            lab.enqueue(
                choices_stream((0, "Paris "), (1, "It is "), (0, "is the capital."), (1, "Paris."))
            )
            ip.run_cell("%%amigo -m lab:m -p n=2 -o said\nWhat is the capital of France?")
            assert lab.requests[0].json["n"] == 2
        finally:
            ip.run_cell("%config AmigoMagics.endpoints = {}")
    assert ip.user_ns["said"] == "Paris is the capital."


# -- recent cells ----------------------------------------------------------------------------


def test_cells_sends_a_picture_shown_as_a_cells_result(kernel: Kernel, server: AmigoServer) -> None:
    """A cell ending in a picture (``img``, ``Image.open(…)``) shows it as its result (Out [n]),
    which IPython's display hook writes — not the display publisher --cells listened to: the
    picture was left out, and the result's text was its repr, not what the notebook showed."""
    image = "from PIL import Image\nImage.new('RGB', (30, 20), (200, 0, 0))"
    assert kernel.execute(image).status == "ok"
    assert kernel.execute("%%amigo --cells 1 --dry-run\nWhat colour?").status == "ok"
    assert (
        kernel.execute("%%amigo --cells 2\nWhat colour, and what did the dry run say?").status
        == "ok"
    )
    (request,) = chat_requests(server)
    text, *pictures = request.json["messages"][-1]["content"]
    assert "Image.new('RGB', (30, 20), (200, 0, 0))" in text["text"]
    assert "[picture 1: shown by In [" in text["text"]
    assert "result: Dry run, nothing sent: gpt-4o-mini would get 1 message" in text["text"]
    assert "Preview(" not in text["text"]  # the dry run's result as shown, not its repr
    (picture,) = pictures
    data = base64.b64decode(picture["image_url"]["url"].partition(",")[2])
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", data[16:24]) == (30, 20)


# -- side by side ----------------------------------------------------------------------------

MATH = "The integral $\\int_0^1 x^2\\,dx$, the set $\\{1, 2\\}$ and\n\n$$\n" \
    "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}\n$$\n"  # fmt: skip


def test_side_by_side_columns_keep_math_as_written(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(Reply.stream(MATH), Reply.stream(MATH))
    ip.run_cell("%%amigo -m gpt-4o-mini,claude\nShow some math.")
    assert len(chat_requests(server)) == 2
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    final = pub.displays[-1].data["text/html"]
    assert "Keep one as the turn" in final
    assert final.count("x^2\\,dx") == 2
    assert final.count("\\{1, 2\\}") == 2
    assert final.count("2 \\\\ 3") == 2  # the pmatrix's row break


# -- background cells ------------------------------------------------------------------------


def test_a_background_answer_is_listed_under_its_own_question(
    kernel: Kernel, server: AmigoServer, tmp_path: Path
) -> None:
    server.enqueue(
        Reply.stream("the background answer", delay=0.3), Reply.stream("the foreground answer")
    )
    assert kernel.execute("%%amigo --bg\nfirst question").status == "ok"
    assert kernel.execute("%%amigo\nsecond question").status == "ok"
    assert kernel.execute("%amigo wait").status == "ok"
    assert kernel.execute(f"%amigo export {tmp_path}/chat.md").status == "ok"
    exported = (tmp_path / "chat.md").read_text()
    order = ["first question", "the background answer", "second question", "the foreground answer"]
    assert sorted(order, key=exported.index) == order


# -- endpoints that last ---------------------------------------------------------------------


def test_a_key_given_as_key_env_is_refused_and_never_saved_or_shown(
    ip: TestingShell, server: AmigoServer, home: Path
) -> None:
    error = failure(ip, f"%amigo endpoint add lab {server.base_url} --key-env {KEY}")
    listing = ip.run_cell("%amigo endpoint list").result
    assert isinstance(error, ConfigError), repr(error)
    assert "--key-env" in str(error)
    assert KEY not in str(error)
    assert KEY not in repr(getattr(listing, "data", listing))
    assert KEY.encode() not in stored(home)


def test_a_key_in_an_endpoint_urls_query_is_refused_and_never_saved(
    ip: TestingShell, server: AmigoServer, home: Path
) -> None:
    error = failure(ip, f"%amigo endpoint add lab {server.base_url}?key={KEY}")
    assert isinstance(error, ConfigError), repr(error)
    assert "--key-env" in str(error)
    assert KEY not in str(error)
    assert KEY.encode() not in stored(home)


# -- a history file another program holds ------------------------------------------------------


def test_a_held_lock_neither_stalls_a_recorded_answer_nor_loses_its_recording(
    ip: TestingShell, server: AmigoServer, home: Path
) -> None:
    from tests.test_durability import lock_held_elsewhere

    ip.run_cell("%%amigo --no-history\nwarm up")  # the history file exists
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    with lock_held_elsewhere(home / "history.db"):
        start = time.monotonic()
        ip.run_cell("%%amigo --no-history\nWhat is recorded?")
        waited = time.monotonic() - start
    assert waited < 2.0, f"the cell took {waited:.1f} s"
    ip.run_cell("%%amigo --no-history\nWhat is recorded?")
    assert len(chat_requests(server)) == 2  # the second ask was answered from the recording


# -- map ---------------------------------------------------------------------------------------


def test_maps_params_take_any_parameter_as_p_does(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("import amigo_magic")
    ip.run_cell("r = amigo_magic.map('Say {item}', ['a'], params={'seed': 7, 'temperature': 0.2})")
    assert ip.user_ns["r"] == ["Echo: Say a"]
    (request,) = chat_requests(server)
    assert request.json["seed"] == 7
    assert request.json["temperature"] == 0.2


def test_a_dry_run_of_a_side_by_side_cell_is_not_an_unknown_model(
    ip: TestingShell, server: AmigoServer
) -> None:
    result = ip.run_cell_quietly("%%amigo -m gpt-4o-mini,claude --dry-run\nCompare these.")
    error = result.error_in_exec or result.error_before_exec
    assert chat_requests(server) == []
    assert error is None or "dry" in str(error).lower(), str(error)


# -- usage of answers that take more than one request ------------------------------------------


def counted(text: str, prompt: int, completion: int, *, tool: str | None = None) -> Reply:
    """An SSE answer (or, with ``tool``, a call to it) and the usage the server reports."""
    delta: dict[str, Any] = {"content": text}
    if tool is not None:
        call = {"index": 0, "id": "call_0_x", "type": "function",
                "function": {"name": tool, "arguments": "{}"}}  # fmt: skip
        delta = {"content": None, "tool_calls": [call]}
    events: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": delta}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if tool else "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                  "total_tokens": prompt + completion}},
    ]  # fmt: skip
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return Reply.raw(body.encode(), content_type="text/event-stream")


@pytest.mark.parametrize("how", ["repair", "tool"])
def test_every_request_of_an_answer_counts_in_usage(
    ip: TestingShell, server: AmigoServer, how: str
) -> None:
    if how == "repair":
        server.enqueue(counted("not json", 100, 10), counted('{"name": "Ann", "age": 3}', 130, 12))
        ip.run_cell("%%amigo --schema 'name, age int'\nA person")
    else:
        ip.run_cell("def today() -> str:\n    '''The date.'''\n    return '2026-12-02'")
        ip.run_cell("%config AmigoMagics.approve_tools = 'always'")
        server.enqueue(counted("", 100, 10, tool="today"), counted("It is 2 December.", 130, 12))
        ip.run_cell("%%amigo -T today\nWhat is the date?")
    assert len(chat_requests(server)) == 2
    report = str(getattr(ip.run_cell("%amigo usage").result, "data", {}).get("text/plain"))
    assert " 252 tokens" in report, report  # 110 + 142, as the server reported them


def test_a_refused_request_costs_nothing(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(Reply.error(401, "bad key"), Reply.error(401, "bad key"))
    failure(ip, "%%amigo\n" + "A long question. " * 50)
    ip.run_cell("import amigo_magic")
    ip.run_cell("r = amigo_magic.map('A long question about {item}. ' * 20, ['a'])")
    assert not ip.user_ns["r"][0]  # a Failed value
    report = str(getattr(ip.run_cell("%amigo usage").result, "data", {}).get("text/plain"))
    assert "This notebook: 0 requests" in report, report


def test_a_budget_reached_mid_map_stops_sending(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("import amigo_magic")
    ip.run_cell("%config AmigoMagics.budget_tokens = 60")
    ip.run_cell("r = amigo_magic.map('Say {item}', list(range(20)), concurrency=1)")
    results = ip.user_ns["r"]
    assert results[0] == "Echo: Say 0"
    assert len(chat_requests(server)) < 20
    refused = [r for r in results if not r]
    assert refused
    assert all("Budget reached" in str(r) for r in refused if r is not None)


# -- recent cells and replay -----------------------------------------------------------------


def run_notebook(folder: Path, cells: tuple[str, ...]) -> list[Any]:
    """``cells`` in a fresh kernel (cwd ``folder``); each cell's outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in ("%load_ext amigo_magic", *cells)]
    NotebookClient(nb, timeout=90, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(folder)}}).execute()  # fmt: skip
    return [cell.outputs for cell in nb.cells[1:]]


def test_cells_after_an_answer_replay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--cells 1`` after a ``%%amigo`` cell sent that answer's status line too — its timings
    ("9.4 tok/s · 0.4 s") differ on every run, so such a cell never replayed in CI."""
    cells = ("%%amigo\nName a colour.", "%%amigo --cells 1\nWhy that one?")
    monkeypatch.setenv("AMIGO_CACHE_FILE", str(tmp_path / "answers.jsonl"))
    with AmigoServer() as server:
        monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
        monkeypatch.setenv("AMIGO_CACHE", "auto")
        server.enqueue(Reply.stream("Blue is a colour.", delay=0.05))
        run_notebook(tmp_path, cells)
        sent = chat_requests(server)
    assert len(sent) == 2
    context = sent[1].json["messages"][-1]["content"]
    assert "Out [2]:\nBlue is a colour.\n\n---" in context  # the answer, not its status
    assert "tok/s" not in context
    monkeypatch.setenv("AMIGO_CACHE", "replay")  # the server is gone
    second = run_notebook(tmp_path, cells)
    errors = [o for outputs in second for o in outputs if o.output_type == "error"]
    assert errors == []
    assert second[1][-1].data["text/plain"].startswith("Echo: The notebook's last cell")


def test_a_replay_miss_quotes_where_two_long_prompts_differ(
    ip: TestingShell, server: AmigoServer, tmp_path: Path
) -> None:
    common = "Here is a long introduction that every prompt of this notebook shares. "
    ip.run_cell(f"%config AmigoMagics.cache_file = {str(tmp_path / 'answers.jsonl')!r}")
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    ip.run_cell(f"%%amigo --no-history\n{common}Then: apples.")
    ip.run_cell("%config AmigoMagics.cache = 'replay'")
    error = failure(ip, f"%%amigo --no-history\n{common}Then: pears.")
    assert "the prompt differs" in str(error)
    assert "apples" in str(error)
    assert "pears" in str(error)


# -- tools -----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_async_tool_is_awaited(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell('async def double(x: int) -> int:\n    "Double x."\n    return 2 * x')
    ip.run_cell("%config AmigoMagics.approve_tools = 'always'")
    server.enqueue(tool_call_stream("double", '{"x": 21}'), Reply.stream("It is 42."))
    result = ip.run_cell_quietly("%%amigo -T double\nDouble 21 with the tool.")
    error = result.error_in_exec or result.error_before_exec
    if error is not None:  # refused when offered: one line, nothing sent
        assert isinstance(error, ConfigError)
        assert chat_requests(server) == []
        return
    second = chat_requests(server)[1]
    (message,) = [m for m in second.json["messages"] if m["role"] == "tool"]
    assert message["content"] == "42"


# -- usage -----------------------------------------------------------------------------------


def test_usage_all_reads_a_history_whose_path_has_a_hash(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``%amigo usage --all`` opened the file as ``file:{path}?mode=ro``: a ``#`` (or ``?``,
    ``%``) in the path cut the URI, and every notebook's usage read as 0 requests."""
    monkeypatch.setenv("AMIGO_HOME", str(tmp_path / "My #1 notebooks?"))
    ip.run_cell("%unload_ext amigo_magic")
    ip.run_cell("%load_ext amigo_magic")
    ip.run_cell("%%amigo\nhello")
    one = ip.run_cell("%amigo usage").result.data["text/plain"]
    everything = ip.run_cell("%amigo usage --all").result.data["text/plain"]
    assert one.startswith("This notebook: 1 request, ")
    assert everything.startswith("Every notebook: 1 request, ")


def test_a_pictures_estimated_tokens_are_its_picture_tokens(
    ip: TestingShell, server: AmigoServer, tmp_path: Path
) -> None:
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).random((600, 800, 3)) * 255
    Image.fromarray(noise.astype("uint8")).save(tmp_path / "noise.png")
    server.enqueue(Reply.stream("A noisy picture.", usage=False))
    ip.run_cell(f"%%amigo -m gpt-4o --attach {tmp_path}/noise.png\nWhat is this?")
    assert len(chat_requests(server)[0].body) > 1_000_000  # the picture went
    report = str(ip.run_cell("%amigo usage").result.data["text/plain"])
    tokens = int(report.split("~", 1)[1].split(" tokens")[0].replace(",", ""))
    assert tokens < 2_000, report  # the picture's ~765, the text's few


@pytest.mark.parametrize(
    "before",
    [
        "import amigo_magic\nr = amigo_magic.map('Say {item}', ['a', 'b'])",
        "%%amigo -m gpt-4o-mini,claude\nCompare.",
    ],
    ids=["map", "side-by-side"],
)
def test_cells_after_a_batch_or_a_comparison_replay(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, before: str
) -> None:
    cells = (before, "%%amigo --no-history --cells 1\nSum that up.")
    monkeypatch.setenv("AMIGO_CACHE_FILE", str(tmp_path / "answers.jsonl"))
    with AmigoServer() as server:
        monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
        monkeypatch.setenv("AMIGO_CACHE", "auto")
        first = run_notebook(tmp_path, cells)
    assert not [o for outputs in first for o in outputs if o.output_type == "error"]
    monkeypatch.setenv("AMIGO_CACHE", "replay")  # the server is gone
    second = run_notebook(tmp_path, cells)
    errors = [o.evalue for outputs in second for o in outputs if o.output_type == "error"]
    assert errors == []


def test_a_background_answer_is_not_another_cells_output(
    kernel: Kernel, server: AmigoServer
) -> None:
    """A --bg answer streams into its own cell while a later cell runs; --cells noted those
    updates as the later cell's output ("Out [3]: bgword0 bgword1 … B done")."""
    server.enqueue(Reply.stream(" ".join(f"bgword{i}" for i in range(30)), delay=0.03))
    assert kernel.execute("%%amigo --bg\nA long one, please.").status == "ok"
    assert kernel.execute("import time\ntime.sleep(1.5)\nprint('B done')").status == "ok"
    assert kernel.execute("%amigo wait").status == "ok"
    assert kernel.execute("%%amigo --no-history --cells 2\nWhat did B print?").status == "ok"
    context = chat_requests(server)[-1].json["messages"][-1]["content"]
    assert "print('B done')\nOut [" in context
    assert "B done" in context.split("print('B done')", 1)[1]
    assert "bgword" not in context


def test_cells_after_a_failed_cell_replay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A failed cell's traceback named ipykernel's per-kernel file (``/tmp/ipykernel_25531/…``),
    and an amigo_magic one-line error went as IPython's and amigo_magic's whole traceback with
    this machine's paths: what --cells (and ``%amigo fix``) sent differed on every run, so they
    never replayed — and was not what the notebook showed."""
    cells = (
        "1/0",
        "%%amigo --no-history --cells 1\nWhy?",
        "%%amigo -m nosuchmodel\nhi",
        "%%amigo --no-history --cells 1\nAnd that?",
    )
    monkeypatch.setenv("AMIGO_CACHE_FILE", str(tmp_path / "answers.jsonl"))
    with AmigoServer() as server:
        monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
        monkeypatch.setenv("AMIGO_CACHE", "auto")
        run_notebook(tmp_path, cells)
        first, second = (r.json["messages"][-1]["content"] for r in chat_requests(server))
    assert 'File "<cell>", line 1, in <module>\n    1/0' in first
    assert "ipykernel_" not in first
    assert "Out [4]:\nUnknownModelError: Unknown model 'nosuchmodel'" in second
    assert "Traceback" not in second  # the one line the notebook showed
    monkeypatch.setenv("AMIGO_CACHE", "replay")  # the server is gone
    again = run_notebook(tmp_path, cells)
    errors = [o.ename for outputs in again for o in outputs if o.output_type == "error"]
    assert errors == ["ZeroDivisionError", "UnknownModelError"]  # the cells' own, no miss


def test_a_rerun_background_cell_binds_its_latest_answer(
    kernel: Kernel, server: AmigoServer
) -> None:
    server.enqueue(
        Reply.stream("the first, slow answer", delay=0.4), Reply.stream("the second answer")
    )
    assert kernel.execute("%%amigo --bg -o x\nFirst question", cell_id="c1").status == "ok"
    assert kernel.execute("%%amigo --bg -o x\nSecond question", cell_id="c1").status == "ok"
    assert kernel.execute("%amigo wait").status == "ok"
    assert kernel.execute("print(repr(x))").stream_text.strip() == "'the second answer'"
