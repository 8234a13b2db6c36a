"""The chat panel at widget level: no kernel (comms are dummies), a real session, store and
loop thread, against the loopback server."""

from __future__ import annotations

import html
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ipywidgets as widgets
import pytest
from PIL import Image as PILImage

from amigo_magic import ChatPanel
from amigo_magic.config import Settings
from amigo_magic.export import turns_from_json
from amigo_magic.history import StoredImage, Turn
from amigo_magic.runner import close_runner, get_runner
from amigo_magic.session import ChatSession
from amigo_magic.store import SQLiteStore
from tests.amigo_server import AmigoServer, Reply
from tests.shell import Recorder, TestingShell, wait_until

NOTEBOOK = "panel.ipynb"


@pytest.fixture
def session(tmp_path: Path) -> Iterator[ChatSession]:
    store = SQLiteStore(tmp_path / "h.db")
    yield ChatSession(store=store, notebook=NOTEBOOK, runner=get_runner())
    close_runner()  # the loop thread ends with the test (and its pooled clients close)
    store.close()


@pytest.fixture
def make_panel(session: ChatSession, server: AmigoServer) -> Callable[..., ChatPanel]:
    def make(
        chat: str = "default", model: str | None = None, settings_model: str = ""
    ) -> ChatPanel:
        settings = Settings(base_url=server.base_url, model=settings_model)
        return ChatPanel(session=session, settings=lambda: settings, chat=chat, model=model)

    return make


def idle(panel: ChatPanel) -> bool:
    return not panel.send_button.disabled


def send(panel: ChatPanel, prompt: str) -> float:
    """Type ``prompt`` and click Send; the seconds the click took."""
    panel.prompt.value = prompt
    start = time.monotonic()
    panel.send_button.click()
    return time.monotonic() - start


def rendered(panel: ChatPanel, index: int) -> str:
    """A turn as a front end that trusts it renders it: its header, then its markdown."""
    from markdown_it import MarkdownIt

    head, _, markdown = turn_html(panel, index).partition("\n")
    return head + MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


def turn_html(panel: ChatPanel, index: int) -> str:
    """A turn's header HTML, then the markdown its Output widget shows (the cell's bundle)."""
    box = panel.turn_boxes[index]
    shown = [o["data"].get("text/markdown", "") for o in box.children[1].outputs]
    live = " amigo-live" if "amigo-live" in box._dom_classes else ""
    return f"{box.children[0].value}{live}\n" + "".join(shown)


def status(panel: ChatPanel) -> str:
    """The status line's text."""
    return html.unescape(re.sub(r"<[^>]+>", "", panel.status_line.value))


def status_is_error(panel: ChatPanel) -> bool:
    return 'class="amigo-error"' in panel.status_line.value


def png(size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (200, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- the picker --------------------------------------------------------------------------------


def test_picker_lists_the_catalogue_grouped_with_the_default_selected(
    make_panel: Callable[..., ChatPanel],
) -> None:
    panel = make_panel()
    options = list(panel.model_picker.options)
    assert len(options) == 34  # the 37 models less the 3 retired ones
    groups = [label.split(" · ")[0] for label, _ in options]
    assert groups[-8:] == ["image"] * 8  # chat models by provider, then image models
    assert groups[:3] == ["OpenAI"] * 3
    assert [g for i, g in enumerate(groups) if g not in groups[:i]] == list(dict.fromkeys(groups))
    labels = dict((value, label) for label, value in options)
    assert labels["claude-3-5-sonnet-20241022"] == "Anthropic · claude-3.5-sonnet"  # short
    assert labels["flux-pro/v1.1"] == "image · flux-pro/v1.1"
    assert max(len(label) for label in labels.values()) <= 40
    assert "o1-preview-" not in labels  # retired: hidden unless asked for
    assert panel.model_picker.value == "gpt-4o-mini"
    assert panel.model_picker.tooltip == "gpt-4o-mini"  # the id, on hover
    assert not panel.temperature.disabled
    assert repr(panel) == "ChatPanel(chat='default', model='gpt-4o-mini')"


def test_picker_searches_and_shows_retired_models_on_request(
    make_panel: Callable[..., ChatPanel],
) -> None:
    panel = make_panel()
    panel.model_search.value = "anthropic"
    shown = [value for _, value in panel.model_picker.options]
    assert shown[0] == "gpt-4o-mini"  # the chosen model stays listed
    assert set(shown[1:]) == {
        "claude-3-5-sonnet-20240620",
        "claude-3-5-sonnet-20241022",
        "claude-3-5-haiku-latest",
    }
    panel.model_search.value = "flux ultra"  # every word, in the label or the id
    assert [v for _, v in panel.model_picker.options][1:] == [
        "flux-pro/v1.1-ultra",
        "flux-pro/v1.1-ultra-raw",
    ]
    panel.model_picker.value = "flux-pro/v1.1-ultra"
    assert panel.model_picker.tooltip == "flux-pro/v1.1-ultra"
    assert panel.temperature.disabled  # an image model: no temperature
    panel.model_search.value = "o1"
    assert [v for _, v in panel.model_picker.options] == ["flux-pro/v1.1-ultra"]
    panel.show_retired.value = True
    assert {"o1-preview-", "o1-mini-"} <= {v for _, v in panel.model_picker.options}
    panel.model_search.value = ""
    assert len(panel.model_picker.options) == 37


def test_picker_default_follows_settings_and_the_model_argument(
    make_panel: Callable[..., ChatPanel],
) -> None:
    assert make_panel(settings_model="claude").model_picker.value == "claude-3-5-sonnet-20241022"
    drawing = make_panel(model="flux")
    assert drawing.model_picker.value == "flux-pro/v1.1"
    assert drawing.temperature.disabled  # pictures take no temperature


def test_widgets_carry_stable_classes(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel()
    assert "amigo-panel" in panel._dom_classes
    for widget, name in [
        (panel.model_picker, "amigo-model"),
        (panel.chat_picker, "amigo-chat"),
        (panel.prompt, "amigo-prompt"),
        (panel.send_button, "amigo-send"),
        (panel.stop_button, "amigo-stop"),
        (panel.clear_button, "amigo-clear"),
        (panel.export_button, "amigo-export"),
        (panel.transcript, "amigo-transcript"),
        (panel.status_line, "amigo-status"),
    ]:
        assert name in widget._dom_classes
    assert isinstance(panel.children, tuple)


# -- Send, errors, Stop ------------------------------------------------------------------------


def test_send_streams_without_blocking_and_reenables(
    make_panel: Callable[..., ChatPanel], server: AmigoServer, session: ChatSession
) -> None:
    chunks = ["Here ", "is ", "**bold** ", "text ", "and ", "`code`"] + ["more "] * 14
    server.enqueue(Reply.stream(chunks=chunks, delay=0.05))
    panel = make_panel()
    seconds = send(panel, "Say something")
    assert seconds < 1.0  # the click returned (the answer takes 1 s); it runs on the loop thread
    assert panel.send_button.disabled
    assert not panel.stop_button.disabled
    assert panel.chat_picker.disabled
    assert panel.clear_button.disabled
    assert panel.prompt.value == ""
    panel.prompt.value = "a second click"
    panel.send_button.click()  # already on the wire when Send went off: ignored
    assert panel.prompt.value == "a second click"
    assert "Say something" in turn_html(panel, 0)
    assert "You" in turn_html(panel, 0)

    live: list[str] = []

    def streaming() -> bool:
        live.append(turn_html(panel, 1))
        return "amigo-live" in live[-1] and "Here is **bold**" in live[-1]

    wait_until(streaming, "streamed text")  # the unfinished paragraph as plain code
    assert "```\nHere is **bold**" in live[-1]
    wait_until(lambda: idle(panel), "the answer to end")

    final = turn_html(panel, 1)
    assert "amigo-live" not in final
    assert "Here is **bold** text and `code`" in final  # markdown the front end renders
    assert "```" not in final
    assert "gpt-4o-mini" in final
    assert "stopped" not in final
    assert "error" not in final
    assert panel.stop_button.disabled
    assert "gpt-4o-mini" in status(panel)
    assert "tokens" in status(panel)
    user, answer = session.store.load(NOTEBOOK, "default")
    assert (user.content, answer.content) == ("Say something", "".join(chunks))
    (request,) = [r.json for r in server.requests if r.path == "/v1/chat/completions"]
    assert request["model"] == "gpt-4o-mini"
    assert request["temperature"] == 0.5


def test_model_temperature_and_system_prompt_reach_the_wire(
    make_panel: Callable[..., ChatPanel], server: AmigoServer
) -> None:
    panel = make_panel()
    panel.model_picker.value = "claude-3-5-sonnet-20241022"
    panel.temperature.value = 1.2
    panel.system.value = "Be terse."
    send(panel, "hi")
    wait_until(lambda: idle(panel), "the answer")
    (body,) = [r.json for r in server.requests if r.path == "/v1/chat/completions"]
    assert body["model"] == "claude-3-5-sonnet-20241022"
    assert body["temperature"] == 1.2
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert "Echo: hi" in turn_html(panel, 1)


def test_an_error_is_one_line_in_the_status_and_send_comes_back(
    make_panel: Callable[..., ChatPanel], server: AmigoServer
) -> None:
    server.enqueue(Reply.error(401, "Unauthorized"))
    panel = make_panel()
    send(panel, "hello")
    wait_until(lambda: idle(panel), "the failed answer to end")
    line = status(panel)
    assert status_is_error(panel)
    assert "AMIGO_API_KEY" in line  # the AuthenticationError's own message says what to do
    assert "\n" not in line
    assert "✖ error" in turn_html(panel, 1)
    assert panel.stop_button.disabled
    send(panel, "again")  # usable again
    wait_until(lambda: "Echo: again" in turn_html(panel, 3), "the next answer")


def test_stop_keeps_the_partial_text_marked_stopped(
    make_panel: Callable[..., ChatPanel], server: AmigoServer, session: ChatSession
) -> None:
    server.enqueue(Reply.stream(chunks=[f"w{i} " for i in range(400)], delay=0.02))
    panel = make_panel()
    send(panel, "long answer please")
    wait_until(lambda: "w3 " in turn_html(panel, 1), "a few words")
    start = time.monotonic()
    panel.stop_button.click()
    wait_until(lambda: idle(panel), "Stop to take effect", timeout=5)
    assert time.monotonic() - start < 2.0  # well before the 8 s answer would end
    final = turn_html(panel, 1)
    assert "■ stopped" in final
    assert "w0 w1" in final
    assert "w399" not in final
    assert "stopped by you" in status(panel)
    assert panel.stop_button.disabled
    stopped = session.store.load(NOTEBOOK, "default")[-1]
    assert stopped.status == "stopped"
    assert stopped.content.startswith("w0 w1 ")


def test_callback_errors_are_shown_not_swallowed(
    make_panel: Callable[..., ChatPanel], session: ChatSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    panel = make_panel()
    panel.send_button.click()  # nothing typed
    assert "Write a prompt first" in status(panel)
    assert idle(panel)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("store went away")

    monkeypatch.setattr(session.store, "chats", broken)
    panel.refresh_button.click()
    assert "RuntimeError: store went away" in status(panel)
    assert status_is_error(panel)


# -- history -----------------------------------------------------------------------------------


def test_transcript_loads_from_history_sanitised_with_pictures(
    make_panel: Callable[..., ChatPanel], session: ChatSession
) -> None:
    picture = png()
    store = session.store
    store.add(NOTEBOOK, "default", Turn("user", "What is *this*?", model="gpt-4o-mini"))
    store.add(
        NOTEBOOK,
        "default",
        Turn("assistant", "It is <script>alert(1)</script> **fine**", model="gpt-4o-mini"),
    )
    store.add(NOTEBOOK, "default", Turn("user", "draw a fox", model="flux-pro/v1.1"))
    store.add(
        NOTEBOOK,
        "default",
        Turn(
            "assistant",
            "[1 picture of: draw a fox]",
            model="flux-pro/v1.1",
            images=(StoredImage("image/png", picture, "draw a fox"),),
        ),
    )
    store.add(NOTEBOOK, "default", Turn("user", "go on", model="claude-3-5-haiku-latest"))
    store.add(
        NOTEBOOK,
        "default",
        Turn("assistant", "partial", model="claude-3-5-haiku-latest", status="stopped"),
    )
    store.add(NOTEBOOK, "other", Turn("user", "elsewhere"))

    panel = make_panel()
    assert len(panel.turn_boxes) == 6
    assert "<em>this</em>" in rendered(panel, 0)
    answer = rendered(panel, 1)
    assert "<script>" not in answer
    assert "&lt;script&gt;" in answer
    assert "<strong>fine</strong>" in answer
    (image,) = panel.turn_boxes[3].children[2:]
    assert isinstance(image, widgets.Image)
    assert (image.value, image.format) == (picture, "png")
    assert "■ stopped" in turn_html(panel, 5)
    assert "partial" in turn_html(panel, 5)
    assert "elsewhere" not in "".join(turn_html(panel, i) for i in range(6))
    assert "6 turns in chat 'default'" in status(panel)
    # the transcript box lays its children out bottom-up: newest last on screen
    assert panel.transcript.children[0] is panel.turn_boxes[-1]


def test_a_cell_turn_shows_on_refresh_and_panel_turns_are_history(
    make_panel: Callable[..., ChatPanel], session: ChatSession, server: AmigoServer
) -> None:
    panel = make_panel(chat="shared")
    send(panel, "from the panel")
    wait_until(lambda: idle(panel), "the panel's answer")
    # what a `%%amigo --chat shared` cell does: the same session, the same chat
    from amigo_magic.session import AskOptions

    answer = session.ask(
        "from a cell", AskOptions(chat="shared"), Settings(base_url=server.base_url)
    )
    assert answer.wait(10)
    chats = [r.json for r in server.requests if r.path == "/v1/chat/completions"]
    assert [m["content"] for m in chats[-1]["messages"]] == [
        "from the panel",
        "Echo: from the panel",
        "from a cell",
    ]
    assert len(panel.turn_boxes) == 2
    before = panel.turn_boxes[0]
    panel.refresh_button.click()
    assert len(panel.turn_boxes) == 4
    assert before.comm is None  # the replaced turn widgets were closed, not leaked
    assert "Echo: from a cell" in turn_html(panel, 3)


def test_chat_selector_switches_and_starts_new_chats(
    make_panel: Callable[..., ChatPanel], session: ChatSession, server: AmigoServer
) -> None:
    session.store.add(NOTEBOOK, "review", Turn("user", "review me"))
    panel = make_panel()
    values = [value for _, value in panel.chat_picker.options]
    assert values[:2] == ["default", "review"] or values[:2] == ["review", "default"]
    assert dict(panel.chat_picker.options)["new chat…"] == ""
    panel.chat_picker.value = "review"
    assert panel.chat == "review"
    assert "review me" in turn_html(panel, 0)

    panel.chat_picker.value = ""  # "new chat…"
    assert panel.new_chat_row.layout.display is None  # the name box shows
    panel.new_chat_start.click()
    assert "Give the new chat a name" in status(panel)
    panel.new_chat_name.value = "ideas"
    panel.new_chat_start.click()
    assert panel.chat == "ideas"
    assert panel.chat_picker.value == "ideas"
    assert panel.new_chat_row.layout.display == "none"
    assert panel.turn_boxes == []
    send(panel, "first idea")
    wait_until(lambda: idle(panel), "the answer")
    assert [t.content for t in session.store.load(NOTEBOOK, "ideas")] == [
        "first idea",
        "Echo: first idea",
    ]


# -- Clear and Export --------------------------------------------------------------------------


def _two_turns(session: ChatSession, chat: str = "default") -> None:
    session.store.add(NOTEBOOK, chat, Turn("user", "question one"))
    session.store.add(NOTEBOOK, chat, Turn("assistant", "answer *one*", model="gpt-4o-mini"))


def test_clear_asks_first_and_cancel_keeps(
    make_panel: Callable[..., ChatPanel], session: ChatSession
) -> None:
    _two_turns(session)
    _two_turns(session, "other")
    panel = make_panel()
    panel.clear_button.click()
    assert panel.confirm_row.layout.display is None
    assert "Delete 2 turns of chat &#x27;default&#x27;?" in panel.confirm_text.value
    panel.confirm_cancel.click()
    assert panel.confirm_row.layout.display == "none"
    assert len(session.store.load(NOTEBOOK, "default")) == 2
    assert len(panel.turn_boxes) == 2

    panel.clear_button.click()
    panel.confirm_delete.click()
    assert session.store.load(NOTEBOOK, "default") == []
    assert len(session.store.load(NOTEBOOK, "other")) == 2  # only this chat
    assert panel.turn_boxes == []
    assert "Deleted 2 turns of chat" in status(panel)
    assert "No turns in chat" in panel.transcript.children[0].value
    panel.clear_button.click()
    assert "nothing to delete" in status(panel)
    assert panel.confirm_row.layout.display == "none"


@pytest.mark.parametrize("fmt", ["md", "json"])
def test_export_writes_the_chat_beside_the_notebook(
    make_panel: Callable[..., ChatPanel],
    session: ChatSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    _two_turns(session)
    session.store.add(
        NOTEBOOK,
        "default",
        Turn("assistant", "[1 picture]", images=(StoredImage("image/png", png(), "a fox"),)),
    )
    panel = make_panel()
    panel.export_format.value = fmt
    panel.export_button.click()
    (path,) = tmp_path.glob(f"default-*.{fmt}")
    assert re.fullmatch(rf"default-\d{{8}}-\d{{6}}\.{fmt}", path.name)
    assert str(path) in status(panel)
    assert "3 turns" in status(panel)
    if fmt == "md":
        text = path.read_text()
        assert "question one" in text
        assert "answer *one*" in text
        (picture,) = (tmp_path / f"{path.stem}_files").iterdir()
        assert picture.read_bytes().startswith(b"\x89PNG")
    else:
        turns = turns_from_json(path.read_text())
        assert [t.content for t in turns][:2] == ["question one", "answer *one*"]
        assert json.loads(path.read_text())["chat"] == "default"
    panel.export_button.click()  # a second export never overwrites the first
    assert len(list(tmp_path.glob(f"default-*.{fmt}"))) == 2


def test_export_of_an_empty_chat_says_so(
    make_panel: Callable[..., ChatPanel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    panel = make_panel(chat="empty")
    panel.export_button.click()
    assert "Chat 'empty' is empty: nothing to export." in status(panel)
    assert list(tmp_path.glob("empty-*")) == []


# -- pictures ----------------------------------------------------------------------------------


def test_an_image_model_draws_a_picture(
    make_panel: Callable[..., ChatPanel], server: AmigoServer, session: ChatSession
) -> None:
    panel = make_panel()
    panel.model_picker.value = "flux-pro/v1.1"
    send(panel, "a lighthouse at dusk")
    assert panel.send_button.disabled
    wait_until(lambda: idle(panel), "the picture")
    box = panel.turn_boxes[1]
    (image,) = box.children[2:]
    assert isinstance(image, widgets.Image)
    (fetched,) = [r.path for r in server.requests if r.path.startswith("/files/")]
    assert image.value == server.images[fetched]
    assert "1 picture of: a lighthouse at dusk" in turn_html(panel, 1)
    assert "1 picture" in status(panel)
    assert session.store.load(NOTEBOOK, "default")[-1].images[0].data == image.value


# -- through the magics ------------------------------------------------------------------------


def test_panel_from_the_magic_and_without_arguments(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    shell = TestingShell.instance()
    shell.display_pub = Recorder()
    shell.run_cell("%load_ext amigo_magic")
    try:
        shell.run_cell("opened = %amigo_panel --chat review -m claude")
        shell.run_cell("from amigo_magic import ChatPanel\nother = ChatPanel(chat='other')")
        magics = shell.magics_manager.registry["AmigoMagics"]
        opened, other = shell.user_ns["opened"], shell.user_ns["other"]
        assert isinstance(opened, ChatPanel)
        assert isinstance(other, ChatPanel)
        assert (opened.chat, opened.model_picker.value) == ("review", "claude-3-5-sonnet-20241022")
        assert opened.session is magics.session
        assert other.session is magics.session
        assert other.chat == "other"
        send(other, "hello")
        wait_until(lambda: idle(other), "the answer")
        shell.run_cell("%%amigo --chat other\nand then?")
        chats = [r.json for r in server.requests if r.path == "/v1/chat/completions"]
        assert [m["content"] for m in chats[-1]["messages"]] == [
            "hello",
            "Echo: hello",
            "and then?",
        ]
    finally:
        shell.run_cell("%unload_ext amigo_magic")
        for name in ("opened", "other", "ChatPanel"):
            shell.user_ns.pop(name, None)


# -- live model lists ----------------------------------------------------------------------------


def test_picker_gains_live_models_and_chats_through_an_endpoint(session: ChatSession) -> None:
    from amigo_magic.config import Endpoint, Settings

    with AmigoServer(strict_headers=False, success_status=200) as lab:
        endpoints = (Endpoint("lab", lab.base_url), Endpoint("dead", "http://127.0.0.1:9/v1"))
        settings = Settings(base_url=lab.base_url, endpoints=endpoints)
        panel = ChatPanel(session=session, settings=lambda: settings)
        values = lambda: {value for _, value in panel.model_picker.options}  # noqa: E731
        wait_until(lambda: "lab:gpt-4o-mini" in values(), "the endpoint's live models")
        assert len(values()) > 37  # the catalogue, and more
        wait_until(lambda: "'dead' unavailable" in status(panel), "the dead endpoint named")
        assert panel.model_picker.value == "gpt-4o-mini"  # the choice was not disturbed
        panel.model_picker.value = "lab:gpt-4o-mini"
        send(panel, "through the endpoint")
        wait_until(lambda: idle(panel), "the answer")
        assert "Echo: through the endpoint" in turn_html(panel, 1)
        (request,) = [r for r in lab.requests if r.path == "/v1/chat/completions"]
        assert request.json["model"] == "gpt-4o-mini"
        assert "personaId" not in request.json


def test_panel_opens_on_a_non_catalogue_default(session: ChatSession) -> None:
    from amigo_magic.config import Settings

    panel = ChatPanel(session=session, settings=lambda: Settings(model="local"))
    assert panel.model_picker.value == "local"
    assert not panel.temperature.disabled  # local is a chat model
