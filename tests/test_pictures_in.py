"""Pictures in: ``{fig}`` for a figure, a PIL image, an ``IPython.display.Image`` or anything
with ``_repr_png_``, ``--attach PATH``, and the pictures ``--cells N`` captured — as image parts
of the user message, downscaled, refused for a text-only model, kept with the turn."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib
import pytest
from PIL import Image as PILImage

from amigo_magic import attach
from amigo_magic.attach import Picture, from_bytes, picture_of, read_attachment, size_of
from amigo_magic.context import Preview, Prompt, summary
from amigo_magic.errors import ConfigError
from amigo_magic.interpolate import fill
from tests.amigo_server import AmigoServer, Reply
from tests.shell import TestingShell

matplotlib.use("agg")
import matplotlib.pyplot as plt


def png(size: tuple[int, int], colour: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (10, 20, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def image_parts(message: dict[str, Any]) -> list[bytes]:
    """The pictures of one message, decoded from their data URLs."""
    found = []
    for part in message["content"]:
        if part["type"] == "image_url":
            head, _, data = part["image_url"]["url"].partition(",")
            assert head.startswith("data:image/")
            assert head.endswith(";base64")
            found.append(base64.b64decode(data))
    return found


def text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else content[0]["text"]


def chats(server: AmigoServer) -> list[Any]:
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


@pytest.fixture
def fig() -> Any:
    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    axes.plot([1, 2, 3], [3, 1, 2])
    axes.set_title("sales by month")
    yield figure
    plt.close(figure)


# -- recognising and scaling ----------------------------------------------------------------


def test_a_figure_is_a_png_drawn_within_the_longest_side(fig: Any) -> None:
    picture = picture_of(fig, "{fig}", 2000)
    assert picture is not None
    assert picture.mime == "image/png"
    with PILImage.open(io.BytesIO(picture.data)) as image:
        image.verify()  # a valid PNG
    assert (picture.width, picture.height) == size_of(picture.data)[1:]  # type: ignore[index]
    assert max(picture.width, picture.height) <= attach.MAX_SIDE
    big = plt.figure(figsize=(20, 10), dpi=200)  # 4000x2000 as drawn by default
    try:
        scaled = picture_of(big, "{big}", 2000)
        assert scaled is not None
        assert max(scaled.width, scaled.height) <= attach.MAX_SIDE
    finally:
        plt.close(big)
    axes = fig.axes[0]
    assert picture_of(axes, "{ax}", 2000) is not None  # an Axes goes as its figure


def test_a_pil_image_is_downscaled_and_a_small_one_kept() -> None:
    large = PILImage.new("RGB", (3000, 2000), (1, 2, 3))
    picture = picture_of(large, "{photo}", 2000)
    assert picture is not None
    assert (picture.width, picture.height) == (1024, 683)
    small = picture_of(PILImage.new("RGBA", (40, 30)), "{icon}", 2000)
    assert small is not None
    assert (small.width, small.height, small.mime) == (40, 30, "image/png")


def test_ipython_images_and_repr_png_objects_are_pictures() -> None:
    from IPython.display import Image

    data = png((200, 100))
    embedded = picture_of(Image(data=data), "{img}", 2000)
    assert embedded is not None
    assert embedded.data == data
    with pytest.raises(ConfigError, match=r"\{img\} is a picture at a link, not in the notebook"):
        picture_of(Image(url="https://example.com/x.png"), "{img}", 2000)

    class Chart:
        def _repr_png_(self) -> str:  # base64 text, as some libraries return it
            return base64.b64encode(data).decode()

    class Described(Chart):
        def _repr_llm_(self) -> str:
            return "a chart, described"

    class Jpeg:
        def _repr_jpeg_(self) -> bytes:
            return encoded((64, 48), "JPEG")

    assert picture_of(Chart(), "{c}", 2000) == Picture("image/png", data, "{c}", 200, 100)
    assert picture_of(Described(), "{d}", 2000) is None  # it says how to describe itself

    class Formula(Chart):
        def _repr_latex_(self) -> str:
            return "$x^2$"

    assert picture_of(Formula(), "{f}", 2000) is None  # its text reads better
    jpeg = picture_of(Jpeg(), "{j}", 2000)
    assert jpeg is not None
    assert jpeg.mime == "image/jpeg"
    for value in ("a string", b"bytes", Chart, 42, [1, 2]):
        assert picture_of(value, "{x}", 2000) is None


def test_sizes_are_read_from_the_headers() -> None:
    assert size_of(encoded((33, 21), "PNG")) == ("image/png", 33, 21)
    assert size_of(encoded((33, 21), "JPEG")) == ("image/jpeg", 33, 21)
    assert size_of(encoded((33, 21), "GIF")) == ("image/gif", 33, 21)
    assert size_of(encoded((33, 21), "WEBP")) == ("image/webp", 33, 21)
    assert size_of(b"\x89PNG\r\n\x1a\n") is None  # a signature is not a picture
    assert size_of(b"hello") is None


def test_the_token_estimate_and_a_budget_too_small() -> None:
    assert attach.picture_tokens(512, 512) == 255
    assert attach.picture_tokens(1024, 768) == 765
    assert attach.picture_tokens(4000, 3000) == 765  # the server scales it down first
    picture = from_bytes(png((1024, 1024)), "{p}", 300)  # fits at 512 px: scaled down
    assert (picture.width, picture.height, picture.tokens) == (512, 512, 255)
    with pytest.raises(ConfigError, match=r"\{p\} needs ~255 tokens as a picture"):
        from_bytes(png((100, 100)), "{p}", 100)


def test_nothing_is_imported_for_a_picture() -> None:
    code = (
        "import sys, base64\n"
        "from amigo_magic.attach import picture_of\n"
        f"data = base64.b64decode({base64.b64encode(png((3000, 20))).decode()!r})\n"
        "class P:\n    def _repr_png_(self): return data\n"
        "p = picture_of(P(), '{p}', 2000)\n"
        "assert (p.width, p.height) == (3000, 20), (p.width, p.height)  # no PIL: as it is\n"
        "assert picture_of(object(), '{o}', 2000) is None\n"
        "try:\n    picture_of(P(), '{p}', 300)\nexcept Exception as e:\n    print(e)\n"
        "print(sorted(m for m in ('PIL', 'matplotlib', 'IPython', 'numpy') if m in sys.modules))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert shown.splitlines() == [
        "{p} (3000x20) costs ~765 tokens, over the budget of 300: import PIL first to have "
        "it scaled down.",
        "[]",
    ]


def test_attach_reads_a_picture_or_text_and_says_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "chart.bin").write_bytes(png((80, 60)))  # a picture by its bytes, not its name
    (tmp_path / "notes.md").write_text("# Notes\nsk-secret-42 is the key\n")
    (tmp_path / "blob.dat").write_bytes(b"\x00\x01\x02" * 100)
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    picture = read_attachment(str(tmp_path / "chart.bin"), 2000)
    assert isinstance(picture, Picture)
    assert picture.label == "chart.bin"
    assert read_attachment(str(tmp_path / "notes.md"), 2000).startswith("# Notes")  # type: ignore[union-attr]
    for name, why in [
        ("blob.dat", "is neither a picture (PNG, JPEG, GIF, WebP) nor text"),
        ("latin.txt", "is not UTF-8 text"),
        ("missing.png", "no such file"),
        ("", "is a folder"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(why)):
            read_attachment(str(tmp_path / name), 2000)
    prompt = fill(
        "What is shown? {df}",
        {"df": "a frame"},
        ["sk-secret-42"],
        2000,
        attach=[str(tmp_path / "notes.md"), str(tmp_path / "chart.bin")],
    )
    assert prompt.text.startswith("The file notes.md:\n```\n# Notes\n*** is the key\n```\n\n")
    assert "[picture 1: the file chart.bin, attached]" in prompt.text
    assert prompt.text.endswith("What is shown? a frame")
    assert [p.label for p in prompt.pictures] == ["chart.bin"]
    assert prompt.context is not None
    assert "2 objects, 1 picture" in prompt.context


def test_fields_become_numbered_pictures_after_the_text(fig: Any) -> None:
    photo = PILImage.new("RGB", (300, 200))
    prompt = fill("Compare {fig} with {photo}; {n} points", {"fig": fig, "photo": photo, "n": 3},
                  [], 2000)  # fmt: skip
    assert prompt.text == (
        "Compare [picture 1: {fig}, attached] with [picture 2: {photo}, attached]; 3 points"
    )
    assert [p.label for p in prompt.pictures] == ["{fig}", "{photo}"]
    tokens = sum(p.tokens for p in prompt.pictures) + 1
    assert prompt.context == f"context: 1 object, 2 pictures · ~{tokens} tokens"
    assert summary([]) is None


def test_a_preview_describes_its_pictures() -> None:
    picture = from_bytes(png((640, 480)), "{fig}", 2000)
    messages = ({"role": "user", "content": [{"type": "text", "text": "Look"}, picture.part()]},)
    shown = str(Preview("gpt-4o-mini", messages, "context: 1 picture", (picture,)))
    assert "~430 tokens (estimated) · context: 1 picture" in shown.splitlines()[0]
    assert (
        f"── user · ~{1 + picture.tokens} tokens ──\nLook\n[image part 1: {{fig}}: PNG 640x480,"
        in shown
    )
    assert "base64" not in shown


# -- the magics, on the wire ------------------------------------------------------------------


def test_fig_goes_as_one_image_part_and_is_kept_with_the_turn(
    ip: TestingShell, server: AmigoServer, fig: Any, tmp_path: Path
) -> None:
    ip.user_ns["fig"] = fig
    server.enqueue(Reply.stream(chunks=["A line going down, then up."]))
    ip.run_cell("%%amigo\nWhat does {fig} show?")
    (chat,) = chats(server)
    user = chat["messages"][-1]
    assert text_of(user) == "What does [picture 1: {fig}, attached] show?"
    (data,) = image_parts(user)
    with PILImage.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
    final = ip.display_pub.final()["text/plain"]  # type: ignore[attr-defined]
    assert "context: 1 picture · ~" in final.splitlines()[-1]
    magics = ip.magics_manager.registry["AmigoMagics"]
    asked, answered = magics.session.history()
    assert [i.data for i in asked.images] == [data]  # stored once, with the prompt
    assert answered.images == ()
    # the next question sends the earlier prompt as text: the picture went once
    server.enqueue(Reply.stream(chunks=["Yes."]))
    ip.run_cell("%%amigo\nIs it rising at the end?")
    later = chats(server)[-1]["messages"]
    assert later[-3] == {"role": "user", "content": "What does [picture 1: {fig}, attached] show?"}
    # exports keep it
    ip.run_cell(f"%amigo export {tmp_path / 'chat.md'}")
    assert (tmp_path / "chat_files" / "turn1-1.png").read_bytes() == data
    assert "![{fig}](chat_files/turn1-1.png)" in (tmp_path / "chat.md").read_text()


def test_a_text_only_model_with_a_picture_fails_in_one_line_with_nothing_sent(
    ip: TestingShell, server: AmigoServer, fig: Any
) -> None:
    ip.user_ns["fig"] = fig
    for model in ("qwen", "local"):
        result = ip.run_cell_quietly(f"%%amigo -m {model}\nWhat does {{fig}} show?")
        error = result.error_in_exec
        assert isinstance(error, ConfigError)
        assert "reads text only, and this prompt has 1 picture ({fig})" in str(error)
        assert "\n" not in str(error)
    dry = ip.run_cell_quietly("%%amigo -m qwen --dry-run\n{fig}")
    assert isinstance(dry.error_in_exec, ConfigError)
    image = ip.run_cell_quietly("%amigo_image a poster like {fig}")
    assert "takes a text prompt only" in str(image.error_in_exec)
    assert chats(server) == []
    assert ip.magics_manager.registry["AmigoMagics"].session.history() == []


def test_dry_run_shows_the_pictures_and_sends_nothing(
    ip: TestingShell, server: AmigoServer, fig: Any, tmp_path: Path
) -> None:
    (tmp_path / "photo.png").write_bytes(png((2400, 1600)))
    ip.user_ns["fig"] = fig
    preview = ip.run_cell(
        f"%%amigo --dry-run --attach {tmp_path / 'photo.png'}\nCompare it with {{fig}}"
    ).result
    assert isinstance(preview, Preview)
    assert chats(server) == []
    assert [p.label for p in preview.pictures] == ["photo.png", "{fig}"]
    assert (preview.pictures[0].width, preview.pictures[0].height) == (1024, 683)  # PIL is loaded
    assert len(image_parts(preview.messages[-1])) == 2  # type: ignore[arg-type]
    shown = str(preview)
    assert "[image part 1: photo.png: PNG 1024x683," in shown
    assert "[image part 2: {fig}: PNG " in shown
    assert "context: 2 pictures · ~" in shown.splitlines()[0]


def test_cells_sends_the_pictures_the_cells_showed(ip: TestingShell, server: AmigoServer) -> None:
    picture = png((320, 240))
    ip.user_ns["chart_png"] = picture
    ip.run_cell(
        "from IPython.display import Image, display\ndisplay(Image(chart_png))\nprint('drawn')"
    )
    ip.run_cell("print('no picture here')")
    preview = ip.run_cell("%%amigo --cells 2 --dry-run\nWhat did the chart show?").result
    text = text_of(preview.messages[-1])
    assert "display(Image(chart_png))\nprint('drawn')" in text
    assert "drawn\n" in text
    assert "no picture here" in text
    assert "[picture 1: shown by In [" in text
    assert image_parts(preview.messages[-1]) == [picture]  # type: ignore[arg-type]
    assert "context: 2 cells, 1 picture · ~" in str(preview).splitlines()[0]


def test_cell_pictures_are_bounded_in_memory() -> None:
    from amigo_magic.cells import CellLog

    class Publisher:
        def publish(self, data: Any = None, **kwargs: Any) -> None:
            pass

    class Shell:
        display_pub = Publisher()

    class Info:
        raw_cell = "show()"

    class Result:
        info, result, error_in_exec, error_before_exec, execution_count = (
            Info(),
            None,
            None,
            None,
            1,
        )

    log = CellLog(Shell(), pictures=2, picture_limit=5000, memory=12_000)
    shown = base64.b64encode(b"p" * 4000).decode()
    for _ in range(3):
        log.pre_run_cell(Info())
        for _ in range(3):  # three shown, two kept
            Shell.display_pub.publish({"image/png": shown, "text/plain": "<Figure>"})
        Shell.display_pub.publish({"image/png": base64.b64encode(b"x" * 6000).decode()})  # too big
        log.post_run_cell(Result())
    assert [len(cell[3]) for cell in log.cells] == [0, 0, 2]  # 8,000 bytes a cell: one fits
    assert all("[a picture was shown: image/png] <Figure>" in "".join(c[2]) for c in log.cells)


def test_prompt_is_a_value_not_a_stash(ip: TestingShell, server: AmigoServer) -> None:
    magics = ip.magics_manager.registry["AmigoMagics"]
    session = magics.session
    first = session.prompt("{n} rows", {"n": [1] * 50})
    session.prompt("something else entirely")  # a second prompt does not change the first
    assert isinstance(first, Prompt)
    assert first.context is not None
    assert session.preview(first, session.options()).context == first.context
    server.enqueue(Reply.stream(chunks=["ok"]))
    answer = session.ask(first, session.options())
    assert answer.wait(10)
    assert answer.snapshot().context == first.context


def test_an_openai_compatible_endpoint_gets_the_same_image_parts(
    ip: TestingShell, fig: Any
) -> None:
    with AmigoServer(strict_headers=False, success_status=200) as lab:
        lab.enqueue(Reply.stream(chunks=["A llava answer."]))
        ip.user_ns["fig"] = fig
        ip.run_cell(f"%config AmigoMagics.endpoints = {{'lab': {{'url': '{lab.base_url}'}}}}")
        try:
            ip.run_cell("%%amigo -m lab:llava --no-history\nWhat does {fig} show?")
        finally:
            ip.config.AmigoMagics.pop("endpoints", None)
            ip.run_cell("%config AmigoMagics.endpoints = {}")
            ip.config.AmigoMagics.pop("endpoints", None)
        (chat,) = [r.json for r in lab.requests if r.path.endswith("/chat/completions")]
    assert chat["model"] == "llava"
    (user,) = chat["messages"]
    assert text_of(user) == "What does [picture 1: {fig}, attached] show?"
    (data,) = image_parts(user)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")


def test_the_panel_shows_the_pictures_a_prompt_sent(
    ip: TestingShell, server: AmigoServer, fig: Any
) -> None:
    import ipywidgets as widgets

    from amigo_magic import ChatPanel

    ip.user_ns["fig"] = fig
    server.enqueue(Reply.stream(chunks=["It rises."]))
    ip.run_cell("%%amigo\nWhat does {fig} show?")
    session = ip.magics_manager.registry["AmigoMagics"].session
    panel = ChatPanel(session=session)
    asked, answered = panel.turn_boxes
    (picture,) = asked.children[2:]  # after the head and the text
    assert isinstance(picture, widgets.Image)
    assert picture.format == "png"
    assert picture.value == session.history()[0].images[0].data
    assert answered.children[2:] == ()
    panel.close()


def test_the_model_list_says_which_models_see_pictures(ip: TestingShell) -> None:
    ip.run_cell("%amigo models")
    shown = "\n".join(
        d.data.get("text/plain", "")
        for d in ip.display_pub.displays  # type: ignore[attr-defined]
    )
    rows = [line for line in shown.splitlines() if line.startswith(("* ", "  "))]
    lines = {line[2:].split()[0]: line for line in rows}
    assert "sees pictures" in lines["gpt-4o-mini"]
    assert "sees pictures" in lines["meta-llama/Llama-3.2-90B-Vision-Instruct-Turbo"]
    assert "sees pictures" not in lines["Qwen/Qwen2.5-72B-Instruct-Turbo"]
