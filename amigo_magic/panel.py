"""The chat panel: an ipywidgets conversation beside the code, on the magics' session and store.

:class:`ChatPanel` is composed from stock widgets and holds no business logic: Send calls
:meth:`ChatSession.ask` (or :meth:`ChatSession.image`) and returns at once; the request and a
small watcher coroutine run on the runner's loop thread, and the watcher pushes throttled
updates into the turn's widget. Widget trait updates from that thread are comm messages on
IOPub, which ipykernel sends safely from any thread. Model text reaches the page only as
escaped text while it streams and as sanitised markdown once done.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from . import catalog
from .errors import AmigoError, ConfigError
from .export import to_json, to_markdown
from .protocol import ChatParams
from .render import escape_stream_html, status_text
from .routing import resolve_target
from .runner import get_runner
from .sanitize import safe_html_from_markdown
from .session import AskOptions

if TYPE_CHECKING:
    from .config import Settings
    from .history import StoredImage, Turn
    from .session import Answer, ChatSession, ImageAnswer

__all__ = ["ChatPanel", "model_options"]

log = logging.getLogger("amigo_magic.panel")

POLL_SECONDS = 0.1  # how often the watcher looks at a live answer (and the least update interval)
FIRST_POLL_SECONDS = 0.005  # how often it looks before the first text
STOP_GRACE = 5.0  # seconds a stopped request may take to record itself before we stop waiting
MAX_SHOWN = 200  # turns the transcript shows; Export has them all
_NEW_CHAT = ""  # the chat selector's "new chat…" entry (no chat can be named "")
_LIVE_NOTES = {"thinking": "thinking…", "loading": "loading model…", "streaming": "streaming…"}
_FINAL_NOTES = {"stopped": "■ stopped", "error": "✖ error"}

# Our own static stylesheet, scoped to the panel: chat bubbles and readable markdown. (Model text
# never gets here; it only ever fills .amigo-body after sanitising.)
_CSS = """
.amigo-panel { max-width: 980px; gap: 6px; }
.amigo-panel .amigo-toolbar, .amigo-panel .amigo-buttons { align-items: center; gap: 8px; }
.amigo-panel .amigo-transcript {
  border: 1px solid var(--jp-border-color2, #e0e0e0); border-radius: 8px; padding: 8px 10px;
  background: var(--jp-layout-color0, #fff); gap: 6px;
}
.amigo-panel .amigo-turn { padding: 4px 12px 6px; border-radius: 10px; max-width: 88%; }
.amigo-panel .amigo-turn-user {
  background: var(--jp-brand-color3, #dbeafe); align-self: flex-end; min-width: 30%;
}
.amigo-panel .amigo-turn-assistant {
  background: var(--jp-layout-color2, #f1f3f5); align-self: flex-start; min-width: 50%;
}
.amigo-panel .amigo-turn .widget-html, .amigo-panel .amigo-turn .widget-html-content {
  width: 100%; line-height: 1.45; white-space: normal; overflow-wrap: anywhere;
}
.amigo-panel .amigo-who { font-size: 0.8em; font-weight: 600; opacity: 0.7; margin-top: 2px; }
.amigo-panel .amigo-note { font-weight: normal; }
.amigo-panel .amigo-body > :first-child { margin-top: 0.2em; }
.amigo-panel .amigo-body > :last-child { margin-bottom: 0.1em; }
.amigo-panel .amigo-body p, .amigo-panel .amigo-body ul, .amigo-panel .amigo-body ol {
  margin: 0.35em 0;
}
.amigo-panel .amigo-body h1, .amigo-panel .amigo-body h2, .amigo-panel .amigo-body h3 {
  font-size: 1.05em; margin: 0.5em 0 0.25em;
}
.amigo-panel .amigo-body pre {
  background: var(--jp-cell-editor-background, #f7f7f7); padding: 6px 10px; border-radius: 6px;
  overflow-x: auto; line-height: 1.35;
}
.amigo-panel .amigo-body code { font-family: var(--jp-code-font-family, monospace); }
.amigo-panel .amigo-empty { opacity: 0.6; font-style: italic; padding: 4px; }
.amigo-panel .amigo-error { color: var(--jp-error-color1, #c62828); }
.amigo-panel .amigo-status .widget-html-content { line-height: 1.4; }
.amigo-panel .amigo-status { font-size: 0.9em; color: var(--jp-ui-font-color2, #666); }
.amigo-panel .amigo-picture { max-width: 100%; height: auto; border-radius: 6px; margin: 4px 0; }
.amigo-panel .amigo-prompt textarea { font-family: inherit; }
"""


# --------------------------------------------------------------------------------------------
# Pure helpers


def model_options() -> list[tuple[str, str]]:
    """The picker's entries as ``(label, model id)``: chat models, then image models.

    A label names the kind and the aliases that reach the model, e.g.
    ``"chat · claude-3-5-sonnet-20241022 (claude, sonnet, claude-3.5-sonnet)"``.
    """
    aliases: dict[str, list[str]] = {}
    for alias in catalog.ALIASES.values():
        if alias.name != alias.target:
            aliases.setdefault(alias.target, []).append(alias.name)
    return [
        (_model_label(model, aliases.get(model.id, [])), model.id)
        for kind in ("chat", "image")
        for model in catalog.MODELS
        if model.kind == kind
    ]


def _model_label(model: catalog.Model, aliases: Sequence[str]) -> str:
    label = f"{model.kind} · {model.id}"
    if aliases:
        label += f" ({', '.join(sorted(aliases, key=len))})"
    return label + (" · retired" if model.retired else "")


def _chat_options(names: Sequence[str], current: str) -> list[tuple[str, str]]:
    """This notebook's chats (most recent first), the current one, then "new chat…"."""
    ordered = list(dict.fromkeys(names))
    if current not in ordered:
        ordered.insert(0, current)
    return [(name, name) for name in ordered] + [("new chat…", _NEW_CHAT)]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error_line(error: BaseException) -> str:
    """The one line the status shows: an AmigoError's message, else ``Type: message``."""
    if isinstance(error, AmigoError):
        return _one_line(str(error))
    return _one_line(f"{type(error).__name__}: {error}")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _turn_html(who: str, note: str, body: str) -> str:
    """A turn's header (who, and how it ended when not complete) over its already-safe body."""
    note_html = f'<span class="amigo-note"> · {html.escape(note)}</span>' if note else ""
    return (
        f'<div class="amigo-who">{html.escape(who)}{note_html}</div>'
        f'<div class="amigo-body">{body}</div>'
    )


def _error_html(message: str | None) -> str:
    return f'<div class="amigo-error">{html.escape(_one_line(message or "no answer"))}</div>'


def _note_html(text: str) -> str:
    return f'<div class="amigo-empty">{html.escape(text)}</div>'


def _pictures_text(count: int, prompt: str) -> str:
    return f"[{_plural(count, 'picture')} of: {prompt}]" if count else ""


def _export_path(folder: Path, chat: str, fmt: str) -> Path:
    """``<folder>/<chat>-<timestamp>.<fmt>``, the chat name made safe, never an existing file."""
    stem = re.sub(r"[^\w.-]+", "_", chat).strip("._") or "chat"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stem}-{stamp}.{fmt}"
    number = 2
    while path.exists():
        path = folder / f"{stem}-{stamp}-{number}.{fmt}"
        number += 1
    return path


def _stop_requested(answer: Answer | ImageAnswer) -> bool:
    return answer.future is not None and answer.future.cancelled()


# --------------------------------------------------------------------------------------------
# One turn in the transcript


class _TurnView:
    """One turn: an HTML widget (header and sanitised body), then its pictures."""

    def __init__(self, role: str) -> None:
        self.html = widgets.HTML()
        self.box = widgets.VBox((self.html,), layout=widgets.Layout(flex="0 0 auto"))
        self.box.add_class("amigo-turn")
        self.box.add_class(f"amigo-turn-{role}")

    def show(self, who: str, note: str, body: str) -> None:
        """Replace the turn's HTML; ``body`` must already be escaped or sanitised."""
        self.html.value = _turn_html(who, note, body)

    def add_pictures(self, images: Sequence[StoredImage]) -> None:
        self.box.children = (self.html, *(_picture(image) for image in images))

    def close(self) -> None:
        """Close the turn's widgets (it left the transcript)."""
        for widget in self.box.children:
            widget.close()
        self.box.close()

    @classmethod
    def from_turn(cls, turn: Turn) -> _TurnView:
        """A stored turn, as the transcript shows it."""
        view = cls(turn.role)
        who = "You" if turn.role == "user" else turn.model or "assistant"
        if turn.content.strip():
            body = safe_html_from_markdown(turn.content)
        else:
            body = _error_html(turn.error) if turn.error else ""
        view.show(who, _FINAL_NOTES.get(turn.status, ""), body)
        if turn.images:
            view.add_pictures(turn.images)
        return view

    @classmethod
    def prompt(cls, text: str) -> _TurnView:
        view = cls("user")
        view.show("You", "", safe_html_from_markdown(text))
        return view


def _picture(image: StoredImage) -> Any:
    picture = widgets.Image(value=image.data, format=image.mime.split("/")[-1])
    picture.add_class("amigo-picture")
    return picture


# --------------------------------------------------------------------------------------------
# The panel


class ChatPanel(widgets.VBox):  # type: ignore[misc]
    """A chat beside the code: model picker, chat selector, transcript, Send/Stop/Clear/Export.

    It talks through the same :class:`~amigo_magic.session.ChatSession` (and history store) as
    the ``%%amigo`` magics, so a cell's turns show here on Refresh and a panel turn continues
    in the next ``%%amigo --chat NAME`` cell. Without ``session`` it uses the notebook's loaded
    extension (loading it if needed). ``settings`` is called at each Send, so ``%amigo use`` and
    ``%amigo key`` apply. Sending never blocks the kernel.
    """

    def __init__(
        self,
        *,
        session: ChatSession | None = None,
        settings: Callable[[], Settings] | None = None,
        chat: str = "default",
        model: str | None = None,
    ) -> None:
        super().__init__()
        if session is None or settings is None:
            from .magics import current

            magics = current()
            session = session or magics.session
            settings = settings or magics.settings
        if not chat.strip():
            raise ConfigError("A chat needs a name, e.g. ChatPanel(chat='review').")
        self.session: ChatSession = session
        self._settings: Callable[[], Settings] = settings
        self._chat = chat.strip()
        self._answer: Answer | ImageAnswer | None = None
        self._views: list[_TurnView] = []
        self._hidden = 0  # older turns not shown
        self._pending_clear: str | None = None
        self._quiet = False
        self._build(resolve_target(model, settings()).label)
        self._wire()
        self._guarded(self._on_model)()
        self._guarded(self._open)()
        self._guarded(self._load_live_models)()

    # -- construction ----------------------------------------------------------------------------

    def _build(self, model_id: str) -> None:
        """Every widget, once; the children assigned as one tuple."""
        wide = {"description_width": "initial"}
        options = model_options()
        if model_id not in {value for _, value in options}:  # local, or an endpoint's model
            options.append((f"live · {model_id}", model_id))
        self.model_picker = widgets.Dropdown(
            options=options,
            value=model_id,
            description="Model",
            style=wide,
            layout=widgets.Layout(flex="1 1 0%", min_width="260px"),
        )
        self.chat_picker = widgets.Dropdown(
            options=_chat_options([], self._chat),
            value=self._chat,
            description="Chat",
            style=wide,
            layout=widgets.Layout(width="190px"),
        )
        self.temperature = widgets.FloatSlider(
            value=0.5,
            min=0.0,
            max=2.0,
            step=0.1,
            description="Temperature",
            readout_format=".1f",
            style=wide,
            layout=widgets.Layout(width="250px"),
        )
        self.system = widgets.Textarea(
            placeholder="Optional: how the model should answer (sent as the system message)",
            rows=3,
            layout=widgets.Layout(width="100%"),
        )
        self.system_box = widgets.Accordion(children=(self.system,), titles=("System prompt",))
        self.system_box.selected_index = None
        self.new_chat_name = widgets.Text(placeholder="name of the new chat")
        self.new_chat_start = widgets.Button(description="Start", button_style="primary")
        self.new_chat_cancel = widgets.Button(description="Cancel")
        self.new_chat_row = self._row(self.new_chat_name, self.new_chat_start, self.new_chat_cancel)
        self.new_chat_row.layout.display = "none"
        self.transcript_note = widgets.HTML()  # "no turns yet" or "N earlier turns not shown"
        self.transcript = widgets.VBox(
            layout=widgets.Layout(
                flex_flow="column-reverse",  # newest at the bottom, and scrolled there
                max_height="460px",
                min_height="60px",
                overflow="auto",
            )
        )
        self.prompt = widgets.Textarea(
            placeholder="Ask something… (Send when ready)",
            rows=3,
            layout=widgets.Layout(width="100%"),
        )
        self.send_button = self._button("Send", "paper-plane", "primary", "Send the prompt")
        self.stop_button = self._button("Stop", "stop", "warning", "Stop the answer; keep its text")
        self.stop_button.disabled = True
        self.clear_button = self._button("Clear", "trash", "", "Delete this chat's turns (asks)")
        self.export_button = self._button("Export", "download", "", "Write the chat to a file")
        self.export_format = widgets.Dropdown(
            options=[("Markdown", "md"), ("JSON", "json")],
            value="md",
            layout=widgets.Layout(width="110px"),
            tooltip="Export format",
        )
        self.refresh_button = self._button("Refresh", "refresh", "", "Reload chats and turns")
        self.confirm_text = widgets.HTML()
        self.confirm_delete = widgets.Button(description="Delete", button_style="danger")
        self.confirm_cancel = widgets.Button(description="Cancel")
        self.confirm_row = self._row(self.confirm_text, self.confirm_delete, self.confirm_cancel)
        self.confirm_row.layout.display = "none"
        self.status_line = widgets.HTML(layout=widgets.Layout(width="100%"))
        self._classify()
        self.children = (
            widgets.HTML(f"<style>{_CSS}</style>", layout=widgets.Layout(display="none")),
            self._row(self.model_picker, self.chat_picker, self.temperature, cls="amigo-toolbar"),
            self.new_chat_row,
            self.system_box,
            self.transcript,
            self.prompt,
            self._row(
                self.send_button,
                self.stop_button,
                self.clear_button,
                self.export_button,
                self.export_format,
                self.refresh_button,
                cls="amigo-buttons",
            ),
            self.confirm_row,
            self.status_line,
        )

    @staticmethod
    def _button(description: str, icon: str, style: str, tooltip: str) -> Any:
        return widgets.Button(
            description=description,
            icon=icon,
            button_style=style,
            tooltip=tooltip,
            layout=widgets.Layout(width="auto", min_width="84px"),
        )

    @staticmethod
    def _row(*children: Any, cls: str = "") -> Any:
        row = widgets.HBox(children, layout=widgets.Layout(flex_flow="row wrap", width="100%"))
        if cls:
            row.add_class(cls)
        return row

    def _classify(self) -> None:
        """Stable CSS classes, for styling and for the browser test."""
        self.add_class("amigo-panel")
        for widget, name in (
            (self.model_picker, "amigo-model"),
            (self.chat_picker, "amigo-chat"),
            (self.temperature, "amigo-temperature"),
            (self.system_box, "amigo-system"),
            (self.prompt, "amigo-prompt"),
            (self.send_button, "amigo-send"),
            (self.stop_button, "amigo-stop"),
            (self.clear_button, "amigo-clear"),
            (self.export_button, "amigo-export"),
            (self.export_format, "amigo-export-format"),
            (self.refresh_button, "amigo-refresh"),
            (self.transcript, "amigo-transcript"),
            (self.confirm_row, "amigo-confirm"),
            (self.new_chat_row, "amigo-new-chat"),
            (self.status_line, "amigo-status"),
        ):
            widget.add_class(name)

    def _wire(self) -> None:
        """Every callback wrapped so its errors land in the status line; traits named."""
        clicks = (
            (self.send_button, self._on_send),
            (self.stop_button, self._stop),
            (self.clear_button, self._ask_clear),
            (self.confirm_delete, self._clear),
            (self.confirm_cancel, self._cancel_clear),
            (self.export_button, self._export),
            (self.refresh_button, self._refresh),
            (self.new_chat_start, self._start_new_chat),
            (self.new_chat_cancel, self._cancel_new_chat),
        )
        for button, action in clicks:
            button.on_click(self._guarded(action))
        self.model_picker.observe(self._guarded(self._on_model), names=["value"])
        self.chat_picker.observe(self._guarded(self._on_chat), names=["value"])

    def _guarded(self, action: Callable[[], None]) -> Callable[..., None]:
        """``action`` as a widget callback: whatever it raises is shown, never swallowed."""

        def callback(*_: object) -> None:
            try:
                action()
            except Exception as error:
                self._show_error(error)

        return callback

    def __repr__(self) -> str:  # text/plain where widgets cannot show (not every child's state)
        return f"ChatPanel(chat={self._chat!r}, model={self.model_picker.value!r})"

    # -- public view of the transcript -------------------------------------------------------

    @property
    def chat(self) -> str:
        """The chat the panel shows and sends to."""
        return self._chat

    @property
    def turn_boxes(self) -> list[Any]:
        """The transcript's turn widgets, oldest first (each a VBox: HTML, then pictures)."""
        return [view.box for view in self._views]

    # -- status line ---------------------------------------------------------------------------

    def _say(self, text: str, *, error: bool = False) -> None:
        cls = "amigo-error" if error else "amigo-info"
        self.status_line.value = f'<span class="{cls}">{html.escape(_one_line(text))}</span>'

    def _show_error(self, error: BaseException) -> None:
        """Show ``error`` in one line (a bug's traceback goes to the log as well)."""
        if not isinstance(error, AmigoError):
            log.error("chat panel: %s", error, exc_info=error)
        self._say(_error_line(error), error=True)

    # -- transcript and chats ------------------------------------------------------------------

    def _open(self) -> None:
        total = self._reload()
        self._say(f"{_plural(total, 'turn')} in chat '{self._chat}'.")

    def _refresh(self) -> None:
        total = self._reload()
        self._say(f"Reloaded chat '{self._chat}': {_plural(total, 'turn')}.")

    def _reload(self) -> int:
        """The chat list and this chat's transcript from the store; returns the chat's size."""
        store, notebook = self.session.store, self.session.notebook
        summaries = store.chats(notebook)
        with self._quietly():
            self.chat_picker.options = _chat_options([c.name for c in summaries], self._chat)
            self.chat_picker.value = self._chat
        total = next((c.turns for c in summaries if c.name == self._chat), 0)
        turns = store.load(notebook, self._chat, limit=MAX_SHOWN)
        old, self._views = self._views, [_TurnView.from_turn(turn) for turn in turns]
        self._hidden = max(0, total - len(turns))
        self._render_transcript()
        for view in old:  # off the page now: free their models in the kernel and the browser
            view.close()
        return total

    def _render_transcript(self) -> None:
        boxes = [view.box for view in self._views]
        if self._hidden:
            note = f"… {_plural(self._hidden, 'earlier turn')} not shown (Export has them all)"
            self.transcript_note.value = _note_html(note)
            boxes.insert(0, self.transcript_note)
        if not boxes:
            note = f"No turns in chat '{self._chat}' yet: ask something below."
            self.transcript_note.value = _note_html(note)
            boxes = [self.transcript_note]
        self.transcript.children = tuple(reversed(boxes))  # the box lays them out reversed

    def _append(self, view: _TurnView) -> _TurnView:
        self._views.append(view)
        self._render_transcript()
        return view

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """Programmatic picker changes, which must not run the observers."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _on_chat(self) -> None:
        if self._quiet:
            return
        self._hide_confirm()
        if self.chat_picker.value == _NEW_CHAT:
            self.new_chat_row.layout.display = None
            return
        self.new_chat_row.layout.display = "none"
        self._chat = self.chat_picker.value
        self._open()

    def _start_new_chat(self) -> None:
        name = self.new_chat_name.value.strip()
        if not name:
            raise ConfigError("Give the new chat a name, then Start.")
        self._chat = name
        self.new_chat_name.value = ""
        self.new_chat_row.layout.display = "none"
        self._open()

    def _cancel_new_chat(self) -> None:
        self.new_chat_row.layout.display = "none"
        with self._quietly():
            self.chat_picker.value = self._chat

    def _kind(self) -> str:
        return resolve_target(self.model_picker.value, self._settings()).kind

    def _load_live_models(self) -> None:
        """Add the local model and each endpoint's live models to the picker when the listing
        comes back; it runs on the loop, so opening the panel never waits for a slow server."""
        future = get_runner().submit(
            self.session.gather_models(self._settings()), on_error=self._show_error
        )
        future.add_done_callback(self._add_live_models)

    def _add_live_models(self, future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        known = {value for _, value in self.model_picker.options}
        extra: list[tuple[str, str]] = []
        down: list[str] = []
        for source in future.result():
            if source.error and source.name != "local":
                down.append(source.name)
            for model in source.models:
                if model not in known:
                    where = "offline, in the kernel" if source.name == "local" else source.where
                    extra.append((f"live · {model} ({where})", model))
        if extra:
            value = self.model_picker.value
            with self._quietly():
                self.model_picker.options = [*self.model_picker.options, *extra]
                self.model_picker.value = value
        if down:
            names = ", ".join(f"'{name}'" for name in down)
            self._say(f"Endpoint {names} unavailable: `%amigo models` says why.", error=True)

    def _on_model(self) -> None:
        drawing = self._kind() == "image"
        self.temperature.disabled = drawing
        self.send_button.tooltip = "Draw a picture of the prompt" if drawing else "Send the prompt"

    # -- Send and Stop -------------------------------------------------------------------------

    def _on_send(self) -> None:
        if self.send_button.disabled:  # a second click already on the wire when Send went off
            return
        prompt = self.prompt.value.strip()
        if not prompt:
            raise ConfigError("Write a prompt first, then Send.")
        model = self.model_picker.value
        drawing = self._kind() == "image"
        self._hide_confirm()
        self._set_busy(True)
        try:
            if drawing:
                self._start_image(prompt, model)
            else:
                self._start_chat(prompt, model)
        except BaseException:
            self._set_busy(False)
            raise
        self.prompt.value = ""

    def _start_chat(self, prompt: str, model_id: str) -> None:
        options = AskOptions(
            chat=self._chat,
            model=model_id,
            system=self.system.value.strip() or None,
            params=ChatParams(temperature=round(float(self.temperature.value), 2)),
        )
        answer = self.session.ask(prompt, options, self._settings())
        self._answer = answer
        self._append(_TurnView.prompt(prompt))
        view = self._append(_TurnView("assistant"))
        self._show_live(answer, view)
        get_runner().submit(self._watch(answer, view), on_error=self._show_error)

    def _start_image(self, prompt: str, model_id: str) -> None:
        options = AskOptions(chat=self._chat, model=model_id)
        answer = self.session.image(prompt, options, self._settings())
        self._answer = answer
        self._append(_TurnView.prompt(prompt))
        view = self._append(_TurnView("assistant"))
        view.show(answer.model, "drawing…", "")
        self._say(f"{answer.model} · drawing…")
        get_runner().submit(self._watch_image(answer, view), on_error=self._show_error)

    def _stop(self) -> None:
        answer = self._answer
        if answer is not None:
            self._say("stopping…")  # before stop(): the watcher's final status must win
            answer.stop()

    def _set_busy(self, busy: bool) -> None:
        """Send off and Stop on while an answer streams; the reverse (in a finally) after."""
        self.send_button.disabled = busy
        self.stop_button.disabled = not busy
        for widget in (self.clear_button, self.refresh_button, self.chat_picker):
            widget.disabled = busy
        if not busy:
            self._answer = None

    # -- the watchers (on the loop thread) -----------------------------------------------------

    async def _watch(self, answer: Answer, view: _TurnView) -> None:
        """Mirror ``answer`` into ``view`` and the status line until it ends.

        Polls every :data:`POLL_SECONDS` (never blocks the loop); streaming updates carry only
        escaped text and grow rarer as the text grows; the sanitised markdown comes once, at
        the end. Send is re-enabled whatever happens.
        """
        try:
            last, give_up = 0.0, None
            while not answer.done.is_set():
                # Look often until the first text (it should show at once), then every 0.1 s.
                await asyncio.sleep(POLL_SECONDS if answer.length else FIRST_POLL_SECONDS)
                now = time.monotonic()
                give_up = give_up or (now + STOP_GRACE if _stop_requested(answer) else None)
                if give_up is not None and now > give_up:
                    answer.phase = "stopped"  # cancelled before it began: nothing to record
                    break
                interval = max(POLL_SECONDS, answer.length / 1_000_000)
                if answer.changed.is_set() and now - last >= interval:
                    answer.changed.clear()
                    self._show_live(answer, view)
                    last = now
            self._show_final(answer, view)
        finally:
            self._set_busy(False)

    def _show_live(self, answer: Answer, view: _TurnView) -> None:
        state = answer.snapshot()
        body = escape_stream_html(state.text) if state.text else ""
        view.show(answer.model, _LIVE_NOTES.get(state.phase, ""), body)
        self._say(status_text(state))

    def _show_final(self, answer: Answer, view: _TurnView) -> None:
        state = answer.snapshot()
        if state.text.strip():
            body = safe_html_from_markdown(state.text)
        else:
            body = _error_html(state.error) if state.phase == "error" else ""
        view.show(answer.model, _FINAL_NOTES.get(state.phase, ""), body)
        self._say(status_text(state), error=state.phase == "error")

    async def _watch_image(self, answer: ImageAnswer, view: _TurnView) -> None:
        """Tick "drawing… N s" until the pictures are fetched, then show them."""
        try:
            shown, give_up = 0, None
            while not answer.done.is_set():
                await asyncio.sleep(POLL_SECONDS)
                now = time.monotonic()
                give_up = give_up or (now + STOP_GRACE if _stop_requested(answer) else None)
                if give_up is not None and now > give_up:
                    break
                seconds = int(now - answer.started)
                if seconds != shown:
                    view.show(answer.model, f"drawing… {seconds} s", "")
                    self._say(f"{answer.model} · drawing… {seconds} s")
                    shown = seconds
            self._show_pictures(answer, view)
        finally:
            self._set_busy(False)

    def _show_pictures(self, answer: ImageAnswer, view: _TurnView) -> None:
        count, seconds = len(answer.images), time.monotonic() - answer.started
        if _stop_requested(answer):
            view.show(answer.model, _FINAL_NOTES["stopped"], "")
            self._say(f"■ stopped by you after {seconds:.1f} s · {answer.model}")
            return
        error = _error_line(answer.error) if answer.error is not None else None
        body = html.escape(_pictures_text(count, answer.prompt))
        view.show(answer.model, _FINAL_NOTES["error"] if error else "", body or _error_html(error))
        view.add_pictures(answer.images)
        if error:
            self._say(f"✖ {error}", error=True)
        else:
            self._say(f"{answer.model} · {_plural(count, 'picture')} · {seconds:.1f} s")

    # -- Clear and Export ----------------------------------------------------------------------

    def _turn_count(self) -> int:
        chats = self.session.store.chats(self.session.notebook)
        return next((c.turns for c in chats if c.name == self._chat), 0)

    def _ask_clear(self) -> None:
        count = self._turn_count()
        if not count:
            self._say(f"Chat '{self._chat}' is empty: nothing to delete.")
            return
        self._pending_clear = self._chat
        question = f"Delete {_plural(count, 'turn')} of chat '{self._chat}'?"
        self.confirm_text.value = f"<b>{html.escape(question)}</b>"
        self.confirm_row.layout.display = None

    def _clear(self) -> None:
        chat, self._pending_clear = self._pending_clear, None
        self._hide_confirm()
        if chat is None:
            return
        removed = self.session.store.reset(self.session.notebook, chat)
        self._reload()
        self._say(f"Deleted {_plural(removed, 'turn')} of chat '{chat}'.")

    def _cancel_clear(self) -> None:
        self._pending_clear = None
        self._hide_confirm()
        self._say("Nothing deleted.")

    def _hide_confirm(self) -> None:
        self.confirm_row.layout.display = "none"

    def _export(self) -> None:
        """Write the chat to ``<chat>-<timestamp>.md`` (or .json) in the working directory."""
        store, notebook = self.session.store, self.session.notebook
        turns = store.load(notebook, self._chat)
        if not turns:
            raise ConfigError(f"Chat '{self._chat}' is empty: nothing to export.")
        fmt = self.export_format.value
        path = _export_path(Path.cwd(), self._chat, fmt)
        if fmt == "json":
            files = {path: to_json(turns, notebook=notebook, chat=self._chat).encode()}
        else:
            files = to_markdown(turns, chat=self._chat, path=path)
        for target, data in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        pictures = sum(len(turn.images) for turn in turns)
        extra = f" with {_plural(pictures, 'picture')}" if pictures else ""
        self._say(
            f"Exported {_plural(len(turns), 'turn')} of chat '{self._chat}' to {path}{extra}."
        )
