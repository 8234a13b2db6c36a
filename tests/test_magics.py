"""The magics in an in-process shell against the loopback server."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from amigo_magic.errors import (
    AnswerFormatError,
    AnswerStopped,
    AuthenticationError,
    ConfigError,
    RateLimitError,
    ServerError,
    StreamError,
    UnknownModelError,
)
from tests.amigo_server import AmigoServer, Reply
from tests.shell import Recorder, TestingShell


@pytest.fixture
def ip(ip: TestingShell) -> TestingShell:
    """The shared shell (conftest), with the throttle these tests time against."""
    ip.run_cell("%config AmigoMagics.throttle = 0.05")
    return ip


@contextmanager
def shell_with_home(
    home: Path, server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestingShell]:
    """A shell whose extension opens its history at ``home`` (the ``ip`` fixture's is fixed)."""
    monkeypatch.setenv("AMIGO_HOME", str(home))
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    shell = TestingShell.instance()
    shell.display_pub = Recorder()
    shell.run_cell("%load_ext amigo_magic")
    try:
        yield shell
    finally:
        shell.run_cell("%unload_ext amigo_magic")


def recorder(ip: TestingShell) -> Recorder:
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    return pub


def chat_requests(server: AmigoServer) -> list[dict]:  # type: ignore[type-arg]
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


def test_answer_streams_into_one_display(ip: TestingShell, server: AmigoServer) -> None:
    words = [f"word{i} " for i in range(40)]
    server.enqueue(Reply.stream(chunks=words, delay=0.01))
    ip.run_cell("%%amigo\nSay forty words")
    pub = recorder(ip)
    ids = {d.display_id for d in pub.displays}
    assert len(ids) == 1  # one output, updated in place
    first = pub.displays[0]
    assert not first.update
    assert "thinking" in first.data["text/plain"]
    final = pub.final()
    assert final["text/markdown"].startswith("".join(words).strip())
    assert set(final) == {"text/markdown", "text/plain"}  # the answer twice, not three times
    assert final["text/plain"].startswith("".join(words))
    meta = pub.displays[-1].metadata["amigo"]
    assert meta["model"] == "gpt-4o-mini"
    assert meta["phase"] == "done"
    # a streaming update showed part of the answer before the end
    partial = [d for d in pub.displays[1:-1] if "word0" in d.data.get("text/plain", "")]
    assert partial
    # while streaming, the words of a paragraph not yet finished show as plain code
    assert all(d.data["text/markdown"].startswith("```\nword0") for d in partial)


def test_updates_are_bounded_by_the_throttle_not_the_tokens(
    ip: TestingShell, server: AmigoServer
) -> None:
    server.enqueue(Reply.stream(chunks=["x"] * 3000, delay=0.0002))
    ip.run_cell("%config AmigoMagics.throttle = 0.1")
    start = time.monotonic()
    ip.run_cell("%%amigo\nmany tokens")
    seconds = time.monotonic() - start
    updates = len(recorder(ip).displays)
    assert recorder(ip).final()["text/plain"].startswith("x" * 3000)
    assert updates <= seconds / 0.1 + 4  # thinking + first token + throttled + final
    assert updates < 100


def test_conversation_continues_from_cell_to_cell(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("%%amigo\nfirst question")
    ip.run_cell("%%amigo\nsecond question")
    first, second = chat_requests(server)
    assert first["messages"] == [{"role": "user", "content": "first question"}]
    assert second["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "Echo: first question"},
        {"role": "user", "content": "second question"},
    ]


def test_model_alias_sends_id_and_persona(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("%%amigo --model claude\nhello")
    (body,) = chat_requests(server)
    assert body["model"] == "claude-3-5-sonnet-20241022"
    assert body["personaId"] == "clude-claude-3-5-sonnet-20241022"


def test_chats_are_kept_apart(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("%%amigo --chat a\nabout a")
    ip.run_cell("%%amigo -c b\nabout b")
    ip.run_cell("%%amigo --chat a\nmore a")
    third = chat_requests(server)[2]
    assert [m["content"] for m in third["messages"]] == ["about a", "Echo: about a", "more a"]


def test_options_reach_the_wire(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell('%%amigo -t 0.2 --top-p 0.5 --max-tokens 99 -s "Be terse." --no-history\nhi')
    (body,) = chat_requests(server)
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.5, 99)
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}


def test_out_stores_the_answer(ip: TestingShell) -> None:
    ip.run_cell("%%amigo -o answer\nkeep this")
    assert ip.user_ns["answer"] == "Echo: keep this"


def test_braces_in_code_reach_the_server_unchanged(ip: TestingShell, server: AmigoServer) -> None:
    code = 'Fix this:\nd = {"a": {1, 2}}\nprint(f"{d}")\nx = {{not_a_var}}'
    ip.run_cell(f"%%amigo\n{code}")
    assert chat_requests(server)[0]["messages"][-1]["content"] == code


def test_interpolation_and_err(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("name = 'Ada'\nxs = [1, 2, 3]")
    result = ip.run_cell_quietly("1 / 0")
    failed = result.execution_count
    ip.run_cell(f"%%amigo\nHi {{name}} {{xs[1]}}: {{Err[{failed}]}}")
    sent = chat_requests(server)[0]["messages"][-1]["content"]
    assert sent.startswith("Hi Ada 2: Traceback (most recent call last)")
    assert "interactiveshell.py" not in sent  # starts at the user's cell
    assert "ZeroDivisionError: division by zero" in sent


def test_no_interpolate(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("name = 'Ada'")
    ip.run_cell("%%amigo --no-interpolate\n{name}")
    assert chat_requests(server)[0]["messages"][-1]["content"] == "{name}"


def test_format_code_creates_the_next_cell(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(Reply.stream("Here:\n```python\nprint('hi')\n```\n"))
    ip.run_cell("%%amigo -f code\nwrite code")
    assert ip.rl_next_input == "print('hi')"  # a kernel sends it as a set_next_input payload
    assert "new cell below" in recorder(ip).displays[-1].data["text/plain"]
    system = chat_requests(server)[0]["messages"][0]
    assert system["role"] == "system"
    assert "fenced code block" in system["content"]


def test_format_json(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(Reply.stream('{"a": [1, 2]}'))
    ip.run_cell("%%amigo -f json\njson please")
    assert recorder(ip).final()["application/json"] == {"a": [1, 2]}


def test_format_json_that_does_not_parse(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(Reply.stream('{"a": 1,, }'))
    with pytest.raises(AnswerFormatError, match="not valid JSON"):  # its own class, not a setting
        ip.run_cell("%%amigo -f json\njson please")
    assert recorder(ip).final()["text/plain"].startswith('{"a": 1,, }')  # the text is kept


def test_interrupt_keeps_partial_text_and_kernel_usable(
    ip: TestingShell, server: AmigoServer
) -> None:
    server.enqueue(Reply.stream(chunks=[f"w{i} " for i in range(400)], delay=0.01))
    main = threading.main_thread().ident
    assert main is not None

    def interrupt_soon() -> None:
        import ctypes

        time.sleep(0.6)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(main), ctypes.py_object(KeyboardInterrupt)
        )

    threading.Thread(target=interrupt_soon).start()
    start = time.monotonic()
    with pytest.raises(AnswerStopped, match="partial answer is kept"):
        ip.run_cell("%%amigo\nlong answer please")
    assert time.monotonic() - start < 2.0  # stopped well before the 4 s answer ended
    final = recorder(ip).final()
    assert final["text/plain"].startswith("w0 w1 ")
    assert "w399" not in final["text/plain"]
    assert "stopped" in final["text/plain"]
    assert recorder(ip).displays[-1].metadata["amigo"]["phase"] == "stopped"
    magics = ip.magics_manager.registry["AmigoMagics"]
    (_, stopped) = magics.session.store.load(magics.session.notebook, "default")
    assert stopped.status == "stopped"
    assert stopped.content.startswith("w0 w1 ")
    ip.run_cell("%%amigo\nnext one")  # the kernel is still usable
    assert recorder(ip).final()["text/plain"].startswith("Echo: next one")


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (Reply.error(401, "Unauthorized"), AuthenticationError, "AMIGO_API_KEY"),
        (Reply.error(429, "slow", retry_after="90"), RateLimitError, "wait 90 s"),
        (
            Reply.error(402, "Amigo, your balance is not enough to make the request"),
            Exception,
            "quota is used up",
        ),
    ],
)
def test_errors_render_as_one_line(
    ip: TestingShell, server: AmigoServer, reply: Reply, error: type[Exception], words: str
) -> None:
    server.enqueue(reply)
    result = ip.run_cell_quietly("%%amigo\nhello")
    assert isinstance(result.error_in_exec, error)
    assert words in str(result.error_in_exec)
    assert result.error_in_exec._render_traceback_()[0].count("\n") == 0
    assert "clear" in recorder(ip).calls  # no empty "thinking" output left behind


def test_server_down_after_retries(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(*[Reply.error(503, "down") for _ in range(3)])
    with pytest.raises(ServerError, match="3 attempts"):
        ip.run_cell("%%amigo\nhello")


def test_stream_cut_keeps_partial(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(Reply.stream(chunks=["kept ", "text ", "lost"], fail_after=2))
    with pytest.raises(StreamError):
        ip.run_cell("%%amigo\nhello")
    final = recorder(ip).final()["text/plain"]
    assert final.startswith("kept text")
    assert "✖" in final


def test_unknown_model_and_bad_option(ip: TestingShell, server: AmigoServer) -> None:
    with pytest.raises(UnknownModelError, match="did you mean 'claude'"):
        ip.run_cell("%%amigo -m claud\nhi")
    with pytest.raises(UsageError, match=r"unrecognized arguments: --bogus\nusage: %%amigo"):
        ip.run_cell("%%amigo --bogus\nhi")
    with pytest.raises(ConfigError, match="--temperature must be between 0 and 2"):
        ip.run_cell("%%amigo -t 5\nhi")
    assert chat_requests(server) == []


def test_image_is_shown_as_the_served_bytes(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("%amigo_image a lighthouse at dusk")
    final = recorder(ip).displays[-1]
    png = base64.b64decode(final.data["image/png"])
    (fetched,) = [r.path for r in server.requests if r.path.startswith("/files/")]
    assert png == server.images[fetched]
    assert "a lighthouse at dusk" in final.data["text/plain"]
    image_request = next(r for r in server.requests if r.path == "/v1/images/generations")
    assert image_request.json["prompt"] == "a lighthouse at dusk"


def test_image_with_b64(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(Reply.image(b64=True))
    ip.run_cell("%amigo_image -m dalle a fox")
    assert base64.b64decode(recorder(ip).final()["image/png"]).startswith(b"\x89PNG")


def test_image_url_404_is_a_clear_error(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(Reply.image(image_status=404))
    with pytest.raises(Exception, match=r"Could not download the picture \(404"):
        ip.run_cell("%amigo_image a fox")


def test_subcommands(ip: TestingShell, server: AmigoServer) -> None:
    live = ip.run_cell("%amigo models").result._repr_mimebundle_()[0]["text/plain"]
    catalogue = recorder(ip).displays[-1].data["text/plain"]
    assert "claude-3-5-sonnet-20241022" in catalogue
    assert "* gpt-4o-mini" in catalogue
    assert "  local " in live  # the embedded model's row, installed or not
    ip.run_cell("%amigo use claude")
    ip.run_cell("%%amigo\nhello")
    assert chat_requests(server)[0]["model"] == "claude-3-5-sonnet-20241022"
    history = ip.run_cell("%amigo history").result._repr_mimebundle_()[0]["text/plain"]
    assert "hello" in history
    assert "Echo: hello" in history
    chats = ip.run_cell("%amigo chats").result._repr_mimebundle_()[0]["text/plain"]
    assert "default" in chats
    reset = ip.run_cell("%amigo reset").result._repr_mimebundle_()[0]["text/plain"]
    assert "Removed 2 turns from chat 'default'" in reset
    with pytest.raises(UsageError, match="Unknown %amigo command 'frobnicate'"):
        ip.run_cell("%amigo frobnicate")


def test_config_masks_the_key(ip: TestingShell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMIGO_API_KEY", "sk-very-secret-1234")
    bundle = ip.run_cell("%amigo config").result._repr_mimebundle_()[0]
    assert "sk-very-secret-1234" not in str(bundle)
    assert "from AMIGO_API_KEY" in bundle["text/plain"]


def test_fix_explains_the_last_error(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell_quietly("undefined_name + 1")
    ip.run_cell("%amigo fix")
    prompt = chat_requests(server)[0]["messages"][-1]["content"]
    assert "undefined_name + 1" in prompt
    assert "NameError" in prompt


def test_unload_undoes_everything(ip: TestingShell) -> None:
    ip.run_cell("%unload_ext amigo_magic")
    assert "amigo" not in ip.magics_manager.magics["cell"]
    assert "amigo_image" not in ip.magics_manager.magics["line"]
    assert "Err" not in ip.user_ns
    assert not any(type(c).__name__ == "AmigoMagics" for c in ip.configurables)
    ip.run_cell("%load_ext amigo_magic")  # and it loads again
    assert "amigo" in ip.magics_manager.magics["cell"]


def test_unwritable_history_still_shows_the_answer_with_a_warning(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with shell_with_home(blocker / "amigo", server, monkeypatch) as shell:  # cannot be created
        shell.run_cell("%%amigo\nstill answered?")
        texts = [d.data["text/plain"] for d in recorder(shell).displays]
    assert any(t.startswith("⚠ History cannot be saved") and "AMIGO_HOME" in t for t in texts)
    assert texts[-1].startswith("Echo: still answered?")


def test_session_export_and_reattach(ip: TestingShell, tmp_path: Path) -> None:
    ip.run_cell("%%amigo\nremember me")
    ip.run_cell("%amigo_image a fox")
    target = tmp_path / "chat.json"
    out = ip.run_cell(f"%amigo export {target}").result._repr_mimebundle_()[0]["text/plain"]
    assert out == f"Exported 4 turns of chat 'default' to {target} with 1 picture."
    with pytest.raises(ConfigError, match="already exists; add --force"):
        ip.run_cell(f"%amigo export {target}")
    ip.run_cell(f"%amigo export {target} --force")
    from amigo_magic.export import turns_from_json

    turns = turns_from_json(target.read_text())
    assert [t.content for t in turns][:2] == ["remember me", "Echo: remember me"]
    assert turns[3].images[0].data.startswith(b"\x89PNG")
    magics = ip.magics_manager.registry["AmigoMagics"]
    old = magics.session.notebook
    ip.run_cell("%amigo session renamed.ipynb")
    assert magics.session.store.load("renamed.ipynb", "default") == []
    said = ip.run_cell(f"%amigo session {old}").result._repr_mimebundle_()[0]["text/plain"]
    assert said == f"This notebook's history is now '{old}' (1 chat)."


def test_token_limit_is_said(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(Reply.stream("a long answer that was", finish_reason="length"))
    ip.run_cell("%%amigo --max-tokens 5\ngo on")
    assert chat_requests(server)[0]["max_tokens"] == 5
    assert "cut at the token limit: raise --max-tokens" in recorder(ip).final()["text/plain"]


def test_full_disk_still_shows_the_answer_with_a_warning(
    ip: TestingShell, server: AmigoServer
) -> None:
    magics = ip.magics_manager.registry["AmigoMagics"]
    ip.run_cell("%%amigo\nfirst, while there is room")
    db = magics.session.store._db
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from now on
    server.enqueue(Reply.stream("word " * 3000))  # an answer that needs new pages
    ip.run_cell("%%amigo\nthis answer cannot be saved")
    final = recorder(ip).final()["text/plain"]
    assert final.startswith("word word")
    assert "not saved to history" in final
    assert "full" in final


def test_corrupt_history_is_moved_aside_with_a_notice(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "history.db").write_bytes(b"garbage, not SQLite " * 200)
    with shell_with_home(home, server, monkeypatch) as shell:
        shell.run_cell("%%amigo\nhello again")
        texts = [d.data["text/plain"] for d in recorder(shell).displays]
    assert any("history database was damaged" in t and "moved aside" in t for t in texts)
    assert texts[-1].startswith("Echo: hello again")
    (aside,) = home.glob("history.db.corrupt-*")
    assert aside.read_bytes().startswith(b"garbage, not SQLite")
