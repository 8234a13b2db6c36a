"""The chat panel's pieces that hold no state of the panel: the picker's entries, one turn's
widgets, and the small HTML fragments around already-safe bodies.

A turn's text is shown the way a ``%%amigo`` cell shows it: an ``Output`` widget holding the
bundle :func:`.render.turn_bundle` builds (safe ``text/markdown``), so the front end's own
renderer highlights its code and typesets its math; while it streams, the finished blocks are
formatted and the block being written is plain text (the same :class:`.render.AnswerView`).
Only escaped text goes into HTML widgets (who, notes, reasoning, errors).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from . import catalog
from .answer import AnswerState, one_line
from .config import DEFAULT_TEMPERATURE
from .render import AnswerView, reasoning_html, turn_bundle

if TYPE_CHECKING:
    from .history import StoredImage, Turn

__all__ = [
    "NEW_CHAT",
    "PanelLayout",
    "TurnView",
    "chat_options",
    "model_options",
    "note_html",
    "plural",
    "stylesheet",
]

NEW_CHAT = ""  # the chat selector's "new chat…" entry (no chat can be named "")
LIVE_NOTES = {
    "thinking": "thinking…",
    "loading": "loading model…",
    "streaming": "streaming…",
    "drawing": "drawing…",
}
FINAL_NOTES = {"stopped": "■ stopped", "error": "✖ error"}


def stylesheet() -> str:
    """Our own static CSS for the panel (``panel.css`` beside this module)."""
    return resources.files(__package__).joinpath("panel.css").read_text(encoding="utf-8")


_PROVIDERS = {
    "gpt": "OpenAI", "o1": "OpenAI", "claude": "Anthropic", "gemini": "Google",
    "google": "Google", "meta-llama": "Meta", "codellama": "Meta", "Qwen": "Qwen",
    "mistralai": "Mistral", "deepseek-ai": "DeepSeek", "databricks": "Databricks",
    "NousResearch": "Nous", "x-ai": "xAI", "anthracite-org": "Anthracite", "cohere": "Cohere",
    "ai21": "AI21", "zero-one-ai": "01.AI", "Gryphe": "Gryphe",
}  # fmt: skip
_SHORT = 24  # characters: a longer id is labelled by its most descriptive alias


def _provider(model: catalog.Model) -> str:
    if model.kind == "image":
        return "image"
    head = model.id.split("/")[0] if "/" in model.id else model.id.split("-")[0]
    return _PROVIDERS.get(head, head)


def _short_name(model: catalog.Model, aliases: Sequence[str]) -> str:
    for name in (model.id.rstrip("-"), model.id.rsplit("/", 1)[-1].rstrip("-")):
        if len(name) <= _SHORT:
            return name
    fitting = [a for a in aliases if len(a) <= _SHORT]
    return max(fitting, key=len) if fitting else model.id


def model_options(*, retired: bool = False) -> list[tuple[str, str]]:
    """The picker's entries as ``(label, model id)``: chat models grouped by provider, then
    image models, each labelled short (``"Anthropic · claude-3.5-sonnet"``; the id is the
    picker's tooltip). Retired models are left out unless ``retired``."""
    aliases: dict[str, list[str]] = {}
    for alias in catalog.ALIASES.values():
        if alias.name != alias.target:
            aliases.setdefault(alias.target, []).append(alias.name)
    chosen = [m for m in catalog.MODELS if retired or not m.retired]
    groups: dict[str, list[catalog.Model]] = {}
    for model in sorted(chosen, key=lambda m: m.kind != "chat"):  # chat first, stable
        groups.setdefault(_provider(model), []).append(model)
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    for group, models in groups.items():
        for model in models:
            label = f"{group} · {_short_name(model, aliases.get(model.id, []))}"
            label += " · retired" if model.retired else ""
            if label in seen:
                label = f"{group} · {model.id}"
            seen.add(label)
            entries.append((label, model.id))
    return entries


def chat_options(names: Sequence[str], current: str) -> list[tuple[str, str]]:
    """This notebook's chats (most recent first), the current one, then "new chat…"."""
    ordered = list(dict.fromkeys(names))
    if current not in ordered:
        ordered.insert(0, current)
    return [(name, name) for name in ordered] + [("new chat…", NEW_CHAT)]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def error_html(message: str | None) -> str:
    return f'<div class="amigo-error">{html.escape(one_line(message or "no answer"))}</div>'


def note_html(text: str) -> str:
    return f'<div class="amigo-empty">{html.escape(text)}</div>'


def _head_html(who: str, note: str, extra: str = "") -> str:
    """A turn's header: who, and how it ended when not complete; ``extra`` is already safe."""
    note_html = f'<span class="amigo-note"> · {html.escape(note)}</span>' if note else ""
    return f'<div class="amigo-who">{html.escape(who)}{note_html}</div>{extra}'


def _failure(text: str, failed: bool, error: str | None) -> str:
    return error_html(error) if failed and not text.strip() else ""


class PanelLayout(widgets.VBox):  # type: ignore[misc]
    """The panel's widgets and their arrangement, built once (the children assigned as one
    tuple), with stable CSS classes for styling and the browser test; no behaviour."""

    def _build(self, model_id: str, chat: str) -> None:
        """Every widget, once; the children assigned as one tuple."""
        wide = {"description_width": "initial"}
        self._model_entries = model_options(retired=True)  # every entry; the picker shows some
        self._retired = {m.id for m in catalog.MODELS if m.retired}
        if model_id not in {value for _, value in self._model_entries}:  # local, an endpoint's
            self._model_entries.append((f"live · {model_id}", model_id))
        self.model_picker = widgets.Dropdown(
            options=self._model_entries,
            value=model_id,
            description="Model",
            tooltip=model_id,
            style=wide,
            layout=widgets.Layout(flex="1 1 0%", min_width="240px"),
        )
        self.model_search = widgets.Text(
            placeholder="search models", layout=widgets.Layout(width="150px")
        )
        self.show_retired = widgets.Checkbox(
            value=False, description="retired", indent=False, layout=widgets.Layout(width="80px")
        )
        self.model_search.observe(lambda _: self.filter_models(), names=["value"])
        self.show_retired.observe(lambda _: self.filter_models(), names=["value"])
        self.model_picker.observe(self._model_tooltip, names=["value"])
        self.filter_models()
        self.chat_picker = widgets.Dropdown(
            options=chat_options([], chat),
            value=chat,
            description="Chat",
            style=wide,
            layout=widgets.Layout(width="190px"),
        )
        self.temperature = widgets.FloatSlider(
            value=DEFAULT_TEMPERATURE,
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
            widgets.HTML(f"<style>{stylesheet()}</style>", layout=widgets.Layout(display="none")),
            self._row(
                self.model_picker,
                self.model_search,
                self.show_retired,
                self.chat_picker,
                self.temperature,
                cls="amigo-toolbar",
            ),
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

    # -- the model picker: searchable, retired models hidden unless asked for -----------------

    def filter_models(self) -> None:
        """Show the entries whose label or id holds the search text (the chosen one always)."""
        words = self.model_search.value.casefold().split()
        current = self.model_picker.value
        shown = [
            (label, value)
            for label, value in self._model_entries
            if value == current
            or (
                (self.show_retired.value or value not in self._retired)
                and all(w in f"{label} {value}".casefold() for w in words)
            )
        ]
        if shown != list(self.model_picker.options):
            self.model_picker.options = shown
            self.model_picker.value = current

    def add_model_entries(self, entries: Sequence[tuple[str, str]]) -> None:
        """More entries (the local model, endpoints' live models), shown as the filter allows."""
        self._model_entries = [*self._model_entries, *entries]
        self.filter_models()

    def _model_tooltip(self, change: Any) -> None:
        self.model_picker.tooltip = str(change["new"])  # the id, on hover

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
            (self.model_search, "amigo-model-search"),
            (self.show_retired, "amigo-model-retired"),
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


class TurnView:
    """One turn: its header (an HTML widget of escaped text), its text (an ``Output`` widget
    showing the cell's bundle), then its pictures. While live the box has ``amigo-live``."""

    def __init__(self, role: str) -> None:
        shared = _turn_layouts()  # one Layout each for every turn: fewer widgets per Send
        self.html = widgets.HTML(layout=shared[0])
        self.html.add_class("amigo-head")
        self.body = widgets.Output(layout=shared[0])
        self.body.add_class("amigo-body")
        self.box = widgets.VBox((self.html, self.body), layout=shared[1])
        self.box.add_class("amigo-turn")
        self.box.add_class(f"amigo-turn-{role}")
        self._view: AnswerView | None = None

    def show(self, who: str, note: str = "", extra: str = "") -> None:
        """The header; ``extra`` (already escaped HTML: reasoning, a caption, an error) under
        it. The turn's text is left as it is."""
        self.html.value = _head_html(who, note, extra)

    def show_text(self, text: str, *, live: bool = False) -> None:
        """The turn's text as the cell shows it (live: finished blocks formatted)."""
        if live and self._view is None:
            self._view = AnswerView()
            self.box.add_class("amigo-live")
        elif not live and self._view is not None:
            self._view = None
            self.box.remove_class("amigo-live")
        data = turn_bundle(text, self._view) if text.strip() else {}
        output = {"output_type": "display_data", "data": data, "metadata": {}}
        self.body.outputs = (output,) if data else ()

    def show_live(self, state: AnswerState) -> None:
        thoughts = reasoning_html(state.reasoning, live=not state.text)  # apart, escaped
        self.show(state.model, LIVE_NOTES.get(state.phase, ""), thoughts)
        self.show_text(state.text, live=True)

    def show_final(self, state: AnswerState) -> None:
        failed = _failure(state.text, state.phase == "error", state.error)
        self.show(
            state.model, FINAL_NOTES.get(state.phase, ""), reasoning_html(state.reasoning) + failed
        )
        self.show_text(state.text)

    def text(self) -> str:
        """The markdown the turn shows."""
        return "".join(str(o.get("data", {}).get("text/markdown", "")) for o in self.body.outputs)

    def add_pictures(self, images: Sequence[StoredImage]) -> None:
        self.box.children = (self.html, self.body, *(_picture(image) for image in images))

    def close(self) -> None:
        """Close the turn's widgets (it left the transcript)."""
        for widget in self.box.children:
            widget.close()
        self.box.close()

    @classmethod
    def from_turn(cls, turn: Turn) -> TurnView:
        """A stored turn, as the transcript shows it."""
        view = cls(turn.role)
        who = "You" if turn.role == "user" else turn.model or "assistant"
        extra = _failure(turn.content, bool(turn.error), turn.error)
        thoughts = turn.meta.get("reasoning") if isinstance(turn.meta, dict) else None
        if isinstance(thoughts, str):
            extra = reasoning_html(thoughts) + extra
        view.show(who, FINAL_NOTES.get(turn.status, ""), extra)
        view.show_text(turn.content)
        if turn.images:
            view.add_pictures(turn.images)
        return view

    @classmethod
    def prompt(cls, text: str) -> TurnView:
        view = cls("user")
        view.show("You")
        view.show_text(text)
        return view


_LAYOUTS: list[tuple[Any, Any]] = []


def _turn_layouts() -> tuple[Any, Any]:
    """The Layouts every turn shares (a turn's part and its box), made once: a widget without
    one makes its own, and each is another comm to open on the Send path. None of them is
    ever changed, so sharing them changes nothing on screen."""
    if not _LAYOUTS or _LAYOUTS[0][0].comm is None:  # none yet, or closed with their kernel
        _LAYOUTS[:] = [(widgets.Layout(), widgets.Layout(flex="0 0 auto"))]
    return _LAYOUTS[0]


def _picture(image: StoredImage) -> Any:
    picture = widgets.Image(value=image.data, format=image.mime.split("/")[-1])
    picture.add_class("amigo-picture")
    return picture
