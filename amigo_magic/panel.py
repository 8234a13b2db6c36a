"""The chat panel: an ipywidgets conversation beside the code, on the notebook's session.

:class:`ChatPanel` is composed from stock widgets and holds no business logic: Send asks the
session (:meth:`ChatSession.ask` or :meth:`ChatSession.image`) and returns at once; the session
follows the answer on its loop thread (:meth:`ChatSession.watch`) and the panel only paints
what it is handed. Widget trait updates from that thread are comm messages on IOPub, which
ipykernel sends safely from any thread. Model text reaches the page only as escaped text while
it streams and as sanitised markdown once done (:mod:`.panel_view`).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .answer import error_line, one_line
from .errors import AmigoError, ConfigError
from .panel_context import ContextControls
from .panel_tools import Approvals, calls_widget
from .panel_view import (
    FINAL_NOTES,
    NEW_CHAT,
    PanelLayout,
    TurnView,
    chat_options,
    error_html,
    model_options,
    note_html,
    plural,
)
from .render import status_text

if TYPE_CHECKING:
    from .answer import Answer, AnswerState, ImageAnswer, ModelSource
    from .config import Settings
    from .history import StoredImage
    from .session import ChatSession

__all__ = ["ChatPanel", "model_options"]

log = logging.getLogger("amigo_magic.panel")

MAX_SHOWN = 200  # turns the transcript shows; Export has them all


class ChatPanel(PanelLayout):
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
        tools: Sequence[str] = (),
        namespace: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        session = session or _kernel_session()
        settings = settings or session.settings
        if not chat.strip():
            raise ConfigError("A chat needs a name, e.g. ChatPanel(chat='review').")
        self.session: ChatSession = session
        self._settings: Callable[[], Settings] = settings
        self._chat = chat.strip()
        self._answer: Answer | ImageAnswer | None = None
        self._views: list[TurnView] = []
        self._hidden = 0  # older turns not shown
        self._pending_clear: str | None = None
        self._quiet = False
        self._said, self._said_error = "", False  # the status line's text, for adding to it
        self._tools, self._namespace = tuple(tools), namespace  # -T: the functions offered
        self.approvals = Approvals(on_error=self._show_error)  # their Approve / Deny row
        self._build(session.resolve(model, settings()).label, self._chat)
        *rest, status = self.children  # the approval row goes above the status line
        self.children = (*rest, self.approvals.row, status)
        self.context = ContextControls()  # recent cells and variables sent along
        self.children = self.context.install(self.children, before=self.prompt)
        self._wire()
        self._guarded(self._on_model)()
        self._guarded(self._open)()
        self._guarded(self._load_live_models)()

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
        self._said, self._said_error = text, error
        cls = "amigo-error" if error else "amigo-info"
        self.status_line.value = f'<span class="{cls}">{html.escape(one_line(text))}</span>'

    def _show_error(self, error: BaseException) -> None:
        """Show ``error`` in one line (a bug's traceback goes to the log as well)."""
        if not isinstance(error, AmigoError):
            log.error("chat panel: %s", error, exc_info=error)
        self._say(error_line(error) or "", error=True)

    # -- transcript and chats ------------------------------------------------------------------

    def _open(self) -> None:
        total = self._reload()
        self._say(f"{plural(total, 'turn')} in chat '{self._chat}'.")

    def _refresh(self) -> None:
        total = self._reload()
        self._say(f"Reloaded chat '{self._chat}': {plural(total, 'turn')}.")

    def _reload(self) -> int:
        """The chat list and this chat's transcript from the store; returns the chat's size."""
        summaries = self.session.chats()
        with self._quietly():
            self.chat_picker.options = chat_options([c.name for c in summaries], self._chat)
            self.chat_picker.value = self._chat
        total = next((c.turns for c in summaries if c.name == self._chat), 0)
        turns = self.session.history(self._chat, limit=MAX_SHOWN)
        old, self._views = self._views, [TurnView.from_turn(turn) for turn in turns]
        self._hidden = max(0, total - len(turns))
        self._render_transcript()
        for view in old:  # off the page now: free their models in the kernel and the browser
            view.close()
        return total

    def _render_transcript(self) -> None:
        boxes = [view.box for view in self._views]
        if self._hidden:
            note = f"… {plural(self._hidden, 'earlier turn')} not shown (Export has them all)"
            self.transcript_note.value = note_html(note)
            boxes.insert(0, self.transcript_note)
        if not boxes:
            note = f"No turns in chat '{self._chat}' yet: ask something below."
            self.transcript_note.value = note_html(note)
            boxes = [self.transcript_note]
        self.transcript.children = tuple(reversed(boxes))  # the box lays them out reversed

    def _append(self, view: TurnView) -> TurnView:
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
        if self.chat_picker.value == NEW_CHAT:
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
        return self.session.resolve(self.model_picker.value, self._settings()).kind

    def _load_live_models(self) -> None:
        """Add the local model and each endpoint's live models to the picker when the listing
        comes back; it runs on the loop, so opening the panel never waits for a slow server."""
        self.session.list_models_later(self._settings(), self._add_live_models, self._show_error)

    def _add_live_models(self, sources: list[ModelSource]) -> None:
        known = {value for _, value in self._model_entries}
        extra: list[tuple[str, str]] = []
        down: list[str] = []
        for source in sources:
            if source.error and source.name != "local":
                down.append(source.name)
            for model in source.models:
                if model not in known:
                    where = "offline, in the kernel" if source.name == "local" else source.where
                    extra.append((f"live · {model} ({where})", model))
        if extra:
            with self._quietly():
                self.add_model_entries(extra)
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
        options = self.session.options(
            chat=self._chat,
            model=model_id,
            system=self.system.value.strip() or None,
            temperature=round(float(self.temperature.value), 2),
        )
        if self._tools:
            gate = self.approvals.gate
            options = self.session.equip(options, self._namespace, tools=self._tools, gate=gate)
        built = self.context.prompt(self.session, prompt)  # the cell's builder: views, cells
        answer = self.session.ask(built, options, self._settings())
        self._follow(prompt, answer, self._show_final, tuple(p.stored() for p in built.pictures))

    def _start_image(self, prompt: str, model_id: str) -> None:
        options = self.session.options(chat=self._chat, model=model_id)
        answer = self.session.image(self.session.prompt(prompt), options, self._settings())
        self._follow(prompt, answer, self._show_pictures)

    def _follow(
        self,
        prompt: str,
        answer: Answer | ImageAnswer,
        show: Callable[[Any, TurnView], None],
        pictures: tuple[StoredImage, ...] = (),
    ) -> None:
        """The prompt and a live turn in the transcript; the session follows the answer there,
        and ``show`` paints it once it ends."""
        self._answer = answer
        self._append(TurnView.prompt(prompt)).add_pictures(pictures)  # the prompt's pictures
        view = self._append(TurnView("assistant"))
        self._show_live(view, answer.snapshot())
        self.session.watch(
            answer,
            lambda state: self._show_live(view, state),
            finish=lambda: self._finish(show, answer, view),
            on_error=self._show_error,
        )

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

    # -- what the session's follower hands over (on the loop thread) -----------------------------

    def _show_live(self, view: TurnView, state: AnswerState) -> None:
        view.show_live(state)
        self._say(status_text(state))

    def _finish(self, show: Callable[[Any, TurnView], None], answer: Any, view: TurnView) -> None:
        """The answer ended (or was given up on): paint it once, then free Send, whatever."""
        try:
            self.approvals.clear()
            show(answer, view)
            notes = self.session.take_notices()  # the store's news: shown where the user looks
            if notes:
                self._say(" · ".join([self._said, *notes]), error=self._said_error)
        finally:
            self._set_busy(False)

    def _show_final(self, answer: Answer, view: TurnView) -> None:
        state = answer.snapshot()
        view.show_final(state)
        if answer.meta.get("tools"):  # -T: the calls, collapsed under the answer
            view.box.children = (*view.box.children, calls_widget(answer.meta["tools"]))
        self._say(status_text(state), error=state.phase == "error")

    def _show_pictures(self, answer: ImageAnswer, view: TurnView) -> None:
        state = answer.snapshot()
        if state.phase == "stopped":
            view.show(answer.model, FINAL_NOTES["stopped"], "")
            self._say(f"■ stopped by you after {state.seconds:.1f} s · {answer.model}")
            return
        count = len(answer.images)
        body = html.escape(state.text)
        view.show(
            answer.model,
            FINAL_NOTES["error"] if state.error else "",
            body or error_html(state.error),
        )
        view.add_pictures(answer.images)
        if state.error:
            self._say(f"✖ {state.error}", error=True)
        else:
            line = f"{answer.model} · {plural(count, 'picture')} · {state.seconds:.1f} s"
            self._say(" · ⚠ ".join([line, *answer.warnings]))

    # -- Clear and Export ----------------------------------------------------------------------

    def _ask_clear(self) -> None:
        count = self.session.turn_count(self._chat)
        if not count:
            self._say(f"Chat '{self._chat}' is empty: nothing to delete.")
            return
        self._pending_clear = self._chat
        question = f"Delete {plural(count, 'turn')} of chat '{self._chat}'?"
        self.confirm_text.value = f"<b>{html.escape(question)}</b>"
        self.confirm_row.layout.display = None

    def _clear(self) -> None:
        chat, self._pending_clear = self._pending_clear, None
        self._hide_confirm()
        if chat is None:
            return
        removed = self.session.reset(chat)
        self._reload()
        self._say(f"Deleted {plural(removed, 'turn')} of chat '{chat}'.")

    def _cancel_clear(self) -> None:
        self._pending_clear = None
        self._hide_confirm()
        self._say("Nothing deleted.")

    def _hide_confirm(self) -> None:
        self.confirm_row.layout.display = "none"

    def _export(self) -> None:
        """Write the chat to ``<chat>-<timestamp>.md`` (or .json) in the working directory."""
        fmt = self.export_format.value
        report = self.session.export(Path.cwd(), chat=self._chat, fmt=fmt, unique=True)
        extra = f" with {plural(report.pictures, 'picture')}" if report.pictures else ""
        self._say(
            f"Exported {plural(report.turns, 'turn')} of chat '{self._chat}' to {report.path}"
            f"{extra}."
        )


def _kernel_session() -> ChatSession:
    """The running notebook's session, loading the extension there first if needed."""
    from IPython import get_ipython

    from .cells import session_for

    shell = get_ipython()
    if shell is None:
        raise ConfigError("ChatPanel needs IPython or Jupyter: run it in a notebook.")
    found = session_for(shell)
    if found is None:
        shell.extension_manager.load_extension("amigo_magic")
        found = session_for(shell)
    if found is None:
        raise ConfigError("The amigo_magic extension did not load: run %load_ext amigo_magic.")
    return found
