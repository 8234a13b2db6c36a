"""Cells with more than one answer in play: ``%%amigo --bg`` in a real kernel (the cell ends
first, other cells run meanwhile, the answer lands in the first cell's output, ``-o`` after
``%amigo wait``), and ``%%amigo -m a,b`` side by side with ``%amigo keep N``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.amigo_server import AmigoServer, Reply
from tests.shell import TestingShell

ANSWER = "one two three four five six seven eight"


def run_notebook(tmp_path: Path, *cells: str) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in ("%load_ext amigo_magic", *cells)]
    NotebookClient(nb, timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    return nb


def chat_requests(server: AmigoServer) -> list[Any]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def text_of(output: Any) -> str:
    data = output.get("data", {})
    return str(data.get("text/plain", "")) + str(output.get("text", ""))


def test_a_background_cell_ends_first_and_its_output_ends_with_the_whole_answer(
    server: AmigoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    server.enqueue(Reply.stream(ANSWER, delay=0.3))  # eight words, ~2.4 s
    nb = run_notebook(
        tmp_path,
        "%%amigo --bg -o ans\nCount to eight, slowly.",
        "print('meanwhile', 6 * 7, 'ans' in globals())",
        "%amigo wait",
        "print(repr(ans))",
    )
    asked, meanwhile, waited, printed = nb.cells[1:]
    # The second cell ran while the answer was still coming: -o was not bound yet.
    assert text_of(meanwhile.outputs[0]) == "meanwhile 42 False\n"
    assert "1 background answer done; bound ans." in text_of(waited.outputs[0])
    assert text_of(printed.outputs[0]) == f"{ANSWER!r}\n"
    # The first cell's own output (updated by display id while later cells ran) ends whole.
    final = text_of(asked.outputs[-1])
    assert ANSWER in final
    assert len(asked.outputs) == 1
    assert len(chat_requests(server)) == 1


def test_interrupting_wait_stops_the_background_answers(
    server: AmigoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.kernel import running_kernel

    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    server.enqueue(Reply.stream(" ".join(["word"] * 200), delay=0.05))  # ~10 s
    with running_kernel(str(tmp_path)) as kernel:
        assert kernel.execute("%load_ext amigo_magic").status == "ok"
        assert kernel.execute("%%amigo --bg -o long\nTalk at length.").status == "ok"
        waiting = kernel.submit("%amigo wait")
        import time

        time.sleep(1.0)
        kernel.interrupt()
        stopped = kernel.wait(waiting, timeout=20)
        assert stopped.status == "error"
        assert stopped.reply["content"]["ename"] == "AnswerStopped"
        check = kernel.execute("print('long' in globals())")
        assert check.stream_text == "False\n"  # a stopped answer binds nothing
    assert server.active_streams == 0


def test_side_by_side_sends_one_request_per_model_and_keeps_none_until_keep(
    ip: TestingShell, server: AmigoServer
) -> None:
    from amigo_magic.cells import session_for

    session = session_for(ip)
    assert session is not None
    server.enqueue(Reply.stream("Answer from the first"), Reply.stream("Answer from the second"))
    ip.run_cell("%%amigo -m claude,gpt-4o\nWhich is better?")
    requests = chat_requests(server)
    models = [r.json["model"] for r in requests]
    assert len(models) == 2
    assert {m.split("-")[0] for m in models} == {"claude", "gpt"}
    gpt_said = "Answer from the first" if models[0].startswith("gpt") else "Answer from the second"
    html = ip.display_pub.final()["text/html"]
    assert "grid-template-columns:repeat(2" in html
    assert "<b>1 · claude" in html
    assert "<b>2 · gpt" in html
    assert "Answer from the first" in html
    assert "Answer from the second" in html
    assert "%amigo keep N" in html
    assert session.history() == []  # nothing enters the conversation until keep
    kept = ip.run_cell("%amigo keep 2")
    assert "Kept answer 2 (gpt" in repr(kept.result)
    assert [(t.role, t.content) for t in session.history()] == [
        ("user", "Which is better?"),
        ("assistant", gpt_said),
    ]
    # The next cell continues from the kept answer, and only from it.
    server.reset()
    ip.run_cell("%%amigo\nWhy?")
    sent = [m["content"] for m in chat_requests(server)[0].json["messages"]]
    assert sent[-3:] == ["Which is better?", gpt_said, "Why?"]
    again = ip.run_cell_quietly("%amigo keep 1")
    assert "already kept" in str(again.error_in_exec)


def test_side_by_side_and_background_refuse_what_they_cannot_do(
    ip: TestingShell, server: AmigoServer
) -> None:
    failed = ip.run_cell_quietly("%%amigo -m claude,gpt-4o -o both\nHi")
    assert "%amigo keep N" in str(failed.error_in_exec)
    failed = ip.run_cell_quietly("%%amigo -m claude,no-such-model\nHi")
    assert "no-such-model" in str(failed.error_in_exec)
    failed = ip.run_cell_quietly("%amigo keep 1")
    assert "Nothing to keep" in str(failed.error_in_exec)
    assert chat_requests(server) == []
    assert "No background answers" in repr(ip.run_cell("%amigo wait").result)


def test_a_side_by_side_dry_run_shows_what_each_model_would_be_sent(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("%%amigo -m claude,gpt-4o --dry-run\nWhich is better?")
    shown = [str(d.data.get("text/plain", "")) for d in ip.display_pub.displays]
    said = [s for s in shown if s.startswith("Dry run, nothing sent:")]
    assert [s.split(": ", 1)[1].split(" would", 1)[0].split("-")[0] for s in said] == [
        "claude",
        "gpt",
    ]
    assert all("Which is better?" in s for s in said)
    failed = ip.run_cell_quietly("%%amigo -m claude,no-such-model --dry-run\nHi")
    assert "no-such-model" in str(failed.error_in_exec)
    assert chat_requests(server) == []


def test_cells_notes_a_comparisons_answers_without_their_timings(
    ip: TestingShell, server: AmigoServer
) -> None:
    server.enqueue(Reply.stream("Answer from the first"), Reply.stream("Answer from the second"))
    ip.run_cell("%%amigo -m claude,gpt-4o\nWhich is better?")
    preview = ip.run_cell("%%amigo --cells 1 --dry-run\nSum that up.").result
    sent = str(preview)
    assert "── 1 · claude" in sent
    assert "Answer from the first" in sent
    assert "Answer from the second" in sent
    assert "tok/s" not in sent
    assert "%amigo keep N" not in sent


def test_interrupting_map_in_a_kernel_returns_what_finished(
    server: AmigoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.kernel import running_kernel

    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    server.enqueue(*(Reply.stream(stall_before=0.1) for _ in range(200)))
    with running_kernel(str(tmp_path)) as kernel:
        assert kernel.execute("import amigo_magic").status == "ok"
        running = kernel.submit("r = amigo_magic.map('Say {item}', range(200), concurrency=4)")
        import time

        time.sleep(2.0)
        kernel.interrupt()
        done = kernel.wait(running, timeout=30)
        assert done.status == "ok"  # the call returns what finished
        progress = [m for m in done.displays if "text/html" in m["content"]["data"]]
        assert "<progress" in progress[0]["content"]["data"]["text/html"]
        assert "■ stopped" in progress[-1]["content"]["data"]["text/plain"]
        check = kernel.execute(
            "answered = [i for i, x in enumerate(r) if x is not None]\n"
            "print(len(r), len(answered) > 4, all(r[i] == f'Echo: Say {i}' for i in answered),"
            " r.summary.stopped)"
        )
        assert check.stream_text == "200 True True True\n"
    assert len(chat_requests(server)) < 200


def test_amigo_map_verb_binds_its_results(ip: TestingShell, server: AmigoServer) -> None:
    ip.user_ns["names"] = ["Ada", "Alan"]
    ip.run_cell('%amigo map names "Greet {item}" -j 2 -o greetings')
    assert ip.user_ns["greetings"] == ["Echo: Greet Ada", "Echo: Greet Alan"]
    failed = ip.run_cell_quietly('%amigo map nothing "Greet {item}"')
    assert "no such variable" in str(failed.error_in_exec)


def test_map_raises_what_the_items_iterator_raised(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell(
        "import amigo_magic\n"
        "def items():\n    yield 'a'\n    yield 'b'\n"
        "    raise ValueError('the third row is broken')\n"
    )
    failed = ip.run_cell_quietly("amigo_magic.map('Say {item}', items(), concurrency=1)")
    assert isinstance(failed.error_in_exec, ValueError)
    assert "the third row is broken" in str(failed.error_in_exec)
    assert len(chat_requests(server)) == 2  # what came before it was asked
