"""Inputs that used to break the kernel or give a raw traceback (issue 11: items 12, 13, 16, 18).

Each test runs the magic in an in-process shell against the loopback server and asserts what
the user sees: one readable line before any request, the answer, what history keeps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError

from amigo_magic.errors import AmigoError, ConfigError
from tests.amigo_server import AmigoServer, Reply
from tests.shell import Recorder, TestingShell


def recorder(ip: TestingShell) -> Recorder:
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    return pub


def texts(ip: TestingShell) -> list[str]:
    return [d.data.get("text/plain", "") for d in recorder(ip).displays]


def chat_requests(server: AmigoServer) -> list[dict]:  # type: ignore[type-arg]
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


def history(ip: TestingShell, chat: str = "default") -> list[str]:
    magics = ip.magics_manager.registry["AmigoMagics"]
    return [t.content for t in magics.session.store.load(magics.session.notebook, chat)]


def one_line(error: BaseException) -> str:
    """What IPython shows for a UsageError or an AmigoError: one line, no traceback."""
    rendered = error._render_traceback_() if isinstance(error, AmigoError) else [str(error)]
    assert len(rendered) == 1
    assert "\n" not in rendered[0]
    assert "Traceback" not in rendered[0]
    return str(error)


# -- 12: -o accepts only the user's own variable names ----------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("get_ipython", "IPython's own names"),
        ("__builtins__", "IPython's own names"),
        ("In", "IPython's own names"),
        ("Out", "IPython's own names"),
        ("Err", "IPython's own names"),
        ("_", "IPython's own names"),
        ("_i3", "IPython's own names"),
        ("_12", "IPython's own names"),
        ("exit", "IPython's own names"),
        ("1x", "not a Python variable name"),
        ("a-b", "not a Python variable name"),
        ("class", "Python keyword"),
        ("print", "built-in print"),
        ("len", "built-in len"),
    ],
)
def test_out_refuses_names_that_are_not_the_users_own(
    ip: TestingShell, server: AmigoServer, name: str, why: str
) -> None:
    get_ipython, builtins_ns, in_list = (
        ip.user_ns["get_ipython"],
        ip.user_ns["__builtins__"],
        ip.user_ns["In"],
    )
    result = ip.run_cell_quietly(f"%%amigo -o {name}\nhello")
    error = result.error_in_exec
    assert isinstance(error, UsageError)
    line = one_line(error)
    assert why in line
    assert "-o answer" in line
    assert chat_requests(server) == []  # refused before any request
    assert history(ip) == []
    assert ip.user_ns["get_ipython"] is get_ipython
    assert ip.user_ns["__builtins__"] is builtins_ns
    assert ip.user_ns["In"] is in_list
    ip.run_cell("%%amigo -o snippet\nstill works")  # the kernel is fine afterwards
    assert ip.user_ns["snippet"] == "Echo: still works"


def test_out_stores_the_answer_in_a_normal_name(ip: TestingShell) -> None:
    ip.run_cell("%%amigo -f code -o snippet\nWrite code")
    assert ip.user_ns["snippet"] == "Echo: Write code"
    ip.run_cell("print(len('ok'))")  # builtins untouched


# -- 13a: a lone surrogate in the prompt ------------------------------------------------------


def test_lone_surrogate_in_the_prompt_is_sent_as_a_replacement_character(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("s = 'before \\ud800 after'")
    ip.run_cell("%%amigo\nsay {s}")  # no traceback: the cell succeeds
    (body,) = chat_requests(server)
    assert body["messages"][-1]["content"] == "say before \ufffd after"
    shown = texts(ip)
    assert any("lone surrogate" in t and "U+FFFD" in t for t in shown)
    assert shown[-1].startswith("Echo: say before \ufffd after")
    assert history(ip) == ["say before \ufffd after", "Echo: say before \ufffd after"]


def test_a_surrogate_pair_becomes_its_character_without_a_notice(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("s = '\\ud83d\\ude00'")  # two halves of 😀, as JavaScript spells it
    ip.run_cell("%%amigo\nsmile {s}")
    assert chat_requests(server)[0]["messages"][-1]["content"] == "smile \U0001f600"
    assert not any("surrogate" in t for t in texts(ip))


def test_lone_surrogate_in_an_image_prompt(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("s = '\\udfff'")
    ip.run_cell("%amigo_image a fox {s}")
    image_request = next(r for r in server.requests if r.path == "/v1/images/generations")
    assert image_request.json["prompt"] == "a fox \ufffd"
    assert any("lone surrogate" in t for t in texts(ip))
    assert history(ip)[0] == "a fox \ufffd"


# -- 13b: export to a path that cannot be written ---------------------------------------------


@pytest.fixture
def chat_with_a_turn(ip: TestingShell) -> TestingShell:
    ip.run_cell("%%amigo\nremember me")
    return ip


def export_error(ip: TestingShell, line: str) -> str:
    result = ip.run_cell_quietly(line)
    error = result.error_in_exec
    assert isinstance(error, UsageError | ConfigError), repr(error)
    return one_line(error)


def test_export_onto_a_folder(chat_with_a_turn: TestingShell, tmp_path: Path) -> None:
    for force in ("", " --force"):
        line = export_error(chat_with_a_turn, f"%amigo export {tmp_path}{force}")
        assert line == f"{tmp_path} is a folder: give a file name, e.g. {tmp_path / 'chat.md'}"
    assert list(tmp_path.iterdir()) == [tmp_path / "amigo-home"]  # nothing written


def test_export_under_a_file_that_is_not_a_folder(
    chat_with_a_turn: TestingShell, tmp_path: Path
) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    line = export_error(chat_with_a_turn, f"%amigo export {blocker}/chat.md")
    assert line.startswith(f"Cannot export to {blocker}")
    assert "a file is in the way" in line
    assert "folder you can write to" in line
    assert blocker.read_text() == "a file"


def test_export_to_an_unwritable_place(chat_with_a_turn: TestingShell) -> None:
    line = export_error(chat_with_a_turn, "%amigo export /proc/amigo-chat.md")
    assert line.startswith("Cannot export to /proc/amigo-chat.md: ")
    assert "folder you can write to" in line


@pytest.mark.parametrize("argument", ["''", '"  "'])
def test_export_to_an_empty_name(chat_with_a_turn: TestingShell, argument: str) -> None:
    assert export_error(chat_with_a_turn, f"%amigo export {argument} --force") == (
        "Give a file to export to, e.g. %amigo export chat.md"
    )


def test_export_still_writes_a_normal_file(chat_with_a_turn: TestingShell, tmp_path: Path) -> None:
    target = tmp_path / "sub" / "chat.md"
    chat_with_a_turn.run_cell(f"%amigo export {target}")
    assert "Echo: remember me" in target.read_text()


# -- 16a: at most ten pictures per reply ------------------------------------------------------


def test_an_image_reply_with_a_thousand_urls_fetches_ten(
    ip: TestingShell, server: AmigoServer
) -> None:
    server.enqueue(Reply.image(n=1000, size=(4, 4)))
    ip.run_cell("%amigo_image many foxes")
    fetched = [r.path for r in server.requests if r.path.startswith("/files/")]
    assert len(fetched) == 10
    pictures = [d for d in recorder(ip).displays if "image/png" in d.data]
    assert len(pictures) == 10
    assert texts(ip)[-1] == (
        "⚠ The reply listed 1000 pictures: 990 skipped, at most 10 are fetched and kept per reply."
    )
    magics = ip.magics_manager.registry["AmigoMagics"]
    _, answer = magics.session.store.load(magics.session.notebook, "default")
    assert len(answer.images) == 10


def test_an_image_reply_with_ten_urls_says_nothing_was_skipped(
    ip: TestingShell, server: AmigoServer
) -> None:
    server.enqueue(Reply.image(n=10, size=(4, 4)))
    ip.run_cell("%amigo_image ten foxes")
    assert len([d for d in recorder(ip).displays if "image/png" in d.data]) == 10
    assert not any("skipped" in t for t in texts(ip))


# -- 18b: %amigo history -n must be positive --------------------------------------------------


@pytest.mark.parametrize("n", ["-5", "0"])
def test_history_with_a_count_below_one_is_a_usage_error(ip: TestingShell, n: str) -> None:
    ip.run_cell("%%amigo\nhello")
    result = ip.run_cell_quietly(f"%amigo history -n {n}")
    error = result.error_in_exec
    assert isinstance(error, UsageError)
    assert one_line(error) == (
        f"%amigo history -n counts the last turns to show: give 1 or more (got {n}), "
        "e.g. %amigo history -n 10."
    )
    shown = ip.run_cell("%amigo history -n 1").result._repr_mimebundle_()[0]["text/plain"]
    assert "Echo: hello" in shown
    assert "You:" not in shown
