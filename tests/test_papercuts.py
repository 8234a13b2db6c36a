"""Issue 14's papercuts, as a user meets them in an in-process shell against the loopback server:
a kept endpoint, a dead endpoint's error, -f code without a fence, a mistyped option, the
config and models tables, the magic's own help."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from amigo_magic.errors import AmigoError
from amigo_magic.magics import AmigoMagics
from tests.amigo_server import AmigoServer, Reply
from tests.shell import TestingShell

KEY = "sk-endpoint-key-that-must-never-be-written-4711"


def plain(result: object) -> str:
    data = result.result._repr_mimebundle_()[0]  # type: ignore[attr-defined]
    return str(data["text/plain"])


def failure(ip: TestingShell, cell: str) -> str:
    result = ip.run_cell_quietly(cell)
    error = result.error_in_exec or result.error_before_exec
    assert isinstance(error, AmigoError | UsageError), error  # one readable line
    return str(error)


@pytest.fixture
def openai_server() -> Iterator[AmigoServer]:
    """A loopback server that takes OpenAI-style requests (no AmigoChat header checks)."""
    with AmigoServer(strict_headers=False) as running:
        yield running


def test_an_added_endpoint_lasts_holds_no_key_and_the_trait_wins(
    ip: TestingShell, openai_server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = openai_server
    monkeypatch.setenv("EP_KEY", KEY)
    added = plain(ip.run_cell(f"%amigo endpoint add ep {server.base_url} --key-env EP_KEY"))
    home = Path(os.environ["AMIGO_HOME"])
    saved = home / "endpoints.json"
    assert f"saved in {saved}" in added
    assert json.loads(saved.read_text()) == {"ep": {"url": server.base_url, "key_env": "EP_KEY"}}
    assert KEY not in saved.read_text()

    # A new kernel (the extension loaded again) still has it, and uses it.
    ip.run_cell("%unload_ext amigo_magic")
    ip.run_cell("%load_ext amigo_magic")
    listing = plain(ip.run_cell("%amigo endpoint list"))
    assert "ep" in listing
    assert "saved" in listing
    assert "$EP_KEY (set)" in listing
    assert KEY not in listing
    server.enqueue(Reply.stream("from the kept endpoint"))
    ip.run_cell("%%amigo -m ep:gpt-4o-mini\nhello")
    final = ip.display_pub.final()  # type: ignore[attr-defined]
    assert final["text/plain"].startswith("from the kept endpoint")
    assert any(r.headers.get("authorization") == f"Bearer {KEY}" for r in server.requests)

    # The trait wins over the file for the same name: here it points at a dead port.
    ip.run_cell("%config AmigoMagics.endpoints = {'ep': {'url': 'http://127.0.0.1:9/v1'}}")
    assert "127.0.0.1:9" in plain(ip.run_cell("%amigo endpoint list"))
    config = plain(ip.run_cell("%amigo config"))
    assert "endpoint ep" in config
    assert "127.0.0.1:9" in config
    dead = failure(ip, "%%amigo -m ep:m\nhello")
    assert "endpoint 'ep'" in dead
    assert "%amigo endpoint list" in dead
    assert "AMIGO_BASE_URL" not in dead

    # remove forgets it in the kernel and in the file
    assert "Removed endpoint 'ep'" in plain(ip.run_cell("%amigo endpoint remove ep"))
    assert json.loads(saved.read_text()) == {}
    assert "No endpoints yet" in plain(ip.run_cell("%amigo endpoint list"))
    assert "No endpoint named 'ep'" in failure(ip, "%amigo endpoint remove ep")


def test_format_code_without_a_code_block_says_so(ip: TestingShell, server: AmigoServer) -> None:
    server.enqueue(Reply.stream("I would rather explain it in words: loop over the rows."))
    ip.rl_next_input = None  # the shell is shared: an earlier test's next cell is not ours
    ip.run_cell("%%amigo -f code\nwrite code")
    last = ip.display_pub.displays[-1].data["text/plain"]  # type: ignore[attr-defined]
    assert "the answer has no code block, so no cell was added below" in last
    assert not getattr(ip, "rl_next_input", None)


def test_a_mistyped_option_names_the_close_match(ip: TestingShell) -> None:
    message = failure(ip, "%%amigo --modle claude\nhello")
    assert "unrecognized arguments: --modle" in message
    assert "(did you mean --model?)" in message
    two = failure(ip, "%%amigo --modle claude --chta x\nhello")
    assert "did you mean --model for --modle, --chat for --chta?" in two


def test_models_table_has_no_internal_persona_ids(ip: TestingShell) -> None:
    table = plain(ip.run_cell("%amigo models"))
    assert "persona" not in table.splitlines()[0]
    assert "clude-claude" not in table


def test_the_magics_help_is_plain_text_under_the_right_name(ip: TestingShell) -> None:
    doc = AmigoMagics.amigo.__doc__ or ""
    assert doc.startswith("Usage:\n\n  %%amigo [-m MODEL]")
    assert "``" not in doc
    assert "::" not in doc
    assert "%amigo_panel" in doc
    help_table = plain(ip.run_cell("%amigo help"))
    assert "%amigo_panel" in help_table


def test_a_stopped_cell_fails_quietly(ip: TestingShell, capsys: pytest.CaptureFixture[str]) -> None:
    from amigo_magic.errors import AnswerStopped

    capsys.readouterr()
    result = ip.run_cell_quietly(
        "from amigo_magic.errors import AnswerStopped\n"
        "stopped = AnswerStopped('Stopped after 1 s')\nstopped.shown = True\nraise stopped"
    )
    assert isinstance(result.error_in_exec, AnswerStopped)  # the cell failed: Run All stops
    out, err = capsys.readouterr()
    assert "AnswerStopped" not in out + err  # but no error box: the status line said it
    assert "Stopped after" not in out + err
    # a stop no status line reported (background answers waited for) is one plain line
    ip.run_cell_quietly("raise AnswerStopped('Stopped 2 background answers')")
    out, err = capsys.readouterr()
    assert out == "■ Stopped 2 background answers\n"
    assert "Traceback" not in err
    ip.run_cell("raise_later = 1")  # the shell runs on
    failed = ip.run_cell_quietly("1 / 0")  # and other errors still show as before
    assert isinstance(failed.error_in_exec, ZeroDivisionError)
    assert "ZeroDivisionError" in "".join(capsys.readouterr())


def test_side_panel_where_there_is_no_side_area_shows_inline_and_says_why(
    ip: TestingShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amigo_magic.panel import ChatPanel

    monkeypatch.setenv("VSCODE_PID", "4242")
    panel = ip.run_cell("%amigo_panel --side").result
    assert isinstance(panel, ChatPanel)  # shown in the cell
    said = ip.display_pub.displays[-1].data["text/plain"]  # type: ignore[attr-defined]
    assert said == "The panel is shown here, in the notebook: VS Code has no side area for widgets."
    panel.close()
