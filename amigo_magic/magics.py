"""IPython magics: ``%%amigo`` streams an answer into its cell, ``%amigo_image`` draws inline,
``%amigo_panel`` opens the chat panel, ``%amigo <verb>`` manages models, chats, keys, settings.

Thin by design: parse, call the session, hand what it returns to render. The settings live here
as traits (validated when set) and reach the session as one frozen :class:`Preferences`. The
HTTP stack and the renderer are imported on first use, so ``%load_ext amigo_magic`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import (
    line_cell_magic,
    line_magic,
    magics_class,
    no_var_expand,
)
from IPython.core.magic_arguments import argument, magic_arguments

from .cells import CellLog, ErrorRecorder, cell_id, check_out_name, notebook_identity
from .config import FORMATS, Secret
from .errors import AnswerFormatError, AnswerStopped, ConfigError
from .magic_settings import AmigoSettings

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from .answer import Answer, AnswerState, ImageAnswer
    from .config import Settings
    from .context import Prompt
    from .session import AskOptions, ChatSession

__all__ = ["AmigoMagics"]

log = logging.getLogger("amigo_magic")


@magics_class
class AmigoMagics(AmigoSettings):
    """Chat and image models in the notebook. ``%config AmigoMagics`` lists the settings."""

    def __init__(self, shell: InteractiveShell, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.recorder = ErrorRecorder(ignore=(AnswerStopped,))  # Err[n] and %amigo fix
        self.cell_log = CellLog(shell)  # --cells N
        self.notebook_model: str | None = None  # %amigo use
        self.key: Secret | None = None  # %amigo key: memory only
        self._session: ChatSession | None = None
        self._ready = True

    @property
    def session(self) -> ChatSession:
        if self._session is None:
            from .session import ChatSession

            self._session = ChatSession.open(
                notebook=notebook_identity(self.shell), preferences=self.preferences
            )
        return self._session

    def settings(self) -> Settings:
        """Flag > %amigo use > trait > environment > default, resolved now."""
        return self.session.settings()

    # -- %%amigo ---------------------------------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", help="model alias or id (`%%amigo models` lists them)")
    @argument("-c", "--chat", default="default", help="named conversation of this notebook")
    @argument("-s", "--system", help="system message for this prompt")
    @argument("-f", "--format", choices=FORMATS, help="markdown (default), text, code, html, json")
    @argument("-t", "--temperature", type=float, help="sampling temperature, 0 to 2")
    @argument("--top-p", type=float, help="nucleus sampling, 0 to 1")
    @argument("--max-tokens", type=int, help="longest answer, in tokens")
    @argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="any "
              "model parameter (JSON when it parses, else a string); may be repeated")  # fmt: skip
    @argument("--effort", choices=("low", "medium", "high"), help="reasoning_effort")
    @argument("--fresh", action="store_true", help="call the model even if a recording answers")
    @argument("--no-history", action="store_true", help="send this prompt alone")
    @argument("--no-interpolate", action="store_true", help="send {braces} as written")
    @argument("-o", "--out", help="also store the answer text in this variable")
    @argument("--dry-run", action="store_true", help="show what would be sent; send nothing")
    @argument("--bg", action="store_true", help="answer in the background (%%amigo wait)")
    @argument("--cells", type=int, metavar="N", help="send the last N cells and their output too")
    @argument("--attach", action="append", default=[], metavar="PATH", help="send a file too "
              "(a picture, or text); may be repeated")  # fmt: skip
    @argument(
        "--schema",
        metavar="SPEC",
        help="a typed answer: a pydantic model, dataclass or "
        "TypedDict of the notebook, or fields ('name, age int, bio: one sentence')",
    )
    @argument("--many", action="store_true", help="with --schema: a list of them")
    @argument("--frame", action="store_true", help="with --schema --many: a pandas DataFrame")
    @argument(
        "-T",
        "--tool",
        action="append",
        default=[],
        metavar="NAME",
        help="offer this notebook function to the model (asks before each call); may be repeated",
    )
    @no_var_expand
    @line_cell_magic
    def amigo(self, line: str, cell: str | None = None) -> Any:
        """Ask a chat model; the answer streams into the cell.

        As a cell magic the cell body is the prompt. ``{name}``, ``{name[3]}`` and
        ``{name.attr}`` are filled in from your variables (``In``, ``Out`` and ``Err`` too:
        ``{Err[7]}`` is the traceback of cell 7), each as a view that fits
        ``AmigoMagics.context_budget`` (a DataFrame: shape, dtypes, nulls, ranges, a sample);
        every other brace is sent as written; a figure or an image (``{fig}``) goes as a picture.
        ``--cells N`` sends the N cells before this one with their output and pictures;
        ``--attach PATH`` a picture or text file; ``--dry-run`` shows what would be sent and
        sends nothing.
        Each cell continues the notebook's conversation (or the ``--chat`` one).

        Examples::

            %%amigo
            Explain this traceback: {Err[7]}

            %%amigo --model claude --chat review -t 0.2
            Review this function for bugs:
            {In[3]}

            %%amigo -f code -o snippet
            Write a pandas one-liner that counts rows per country.

            %%amigo --cells 2 --dry-run
            Why does the second cell fail? {df}

            %%amigo --attach sketch.png
            What does this chart of {df} show? {fig}

        As a line magic it manages things: ``%amigo models | use MODEL | history | chats |
        reset | fix | config | key | help | version`` (``%amigo help`` says more).
        """
        if cell is None:
            from .verbs import run_verb

            return run_verb(self, _split(line))
        args = self.parse(self.amigo, line, "%%amigo")
        if args.out is not None:
            check_out_name(args.out, self.shell)  # before any request
        if args.cells is not None and not 1 <= args.cells <= self.cell_log.keep:
            raise UsageError(f"--cells takes 1 to {self.cell_log.keep} (the cells kept in memory).")
        recent = self.cell_log.recent(args.cells or 0)
        namespace = None if args.no_interpolate else self.namespace()
        cell = cell.rstrip().lstrip("\r\n")  # blank lines around it are noise; indents are not
        prompt = self.session.prompt(cell, namespace, recent, args.attach)
        if not prompt.text.strip():
            raise ConfigError("The cell is empty: write your question below the %%amigo line.")
        fmt = args.format or self.default_format
        options = self.session.options(
            chat=args.chat,
            model=args.model,
            system=args.system,
            fmt=fmt,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            use_history=not args.no_history,
            cell_id=cell_id(self.shell),
            params=args.param,
            effort=args.effort,
            fresh=args.fresh,
        )
        if args.schema is not None or args.tool or args.many or args.frame:
            options = self.session.equip(
                options, self.shell.user_ns, schema=args.schema, many=args.many or args.frame,
                frame=args.frame, tools=args.tool, ask=_ask_stdin,
            )  # fmt: skip
        if args.dry_run and "," in (args.model or ""):  # each model's request, nothing sent
            from .many_cells import dry_run

            return dry_run(self, prompt, options, args.model.split(","))
        if args.dry_run:
            return self.session.preview(prompt, options)
        if args.bg or "," in (args.model or ""):  # many_cells.py: --bg, -m a,b
            return self._many(prompt, options, fmt, args)
        text = self.ask(prompt, options, fmt)
        if args.out:
            self.shell.user_ns[args.out] = text
        return None

    def _many(self, prompt: Prompt, options: AskOptions, fmt: str, args: Any) -> None:
        from . import many_cells

        if options.schema is not None or options.toolbox is not None:
            raise UsageError("--schema and -T answer in the foreground: drop --bg or -m a,b.")
        if "," in (args.model or ""):
            if args.bg or args.out:
                raise UsageError("-m a,b compares in the cell, with no --bg or -o: %amigo keep N")
            return many_cells.side_by_side(self, prompt, options, args.model.split(","))
        return many_cells.background(self, prompt, options, fmt, args.out)

    def ask(self, prompt: Prompt | str, options: AskOptions, fmt: str) -> Any:
        """Send, stream the answer into this cell, and return its text (its typed value with
        ``--schema``)."""
        answer = self.session.ask(prompt, options)
        self.show_notices()
        self._show(answer, fmt)
        return answer.value if options.schema is not None else answer.text

    def _show(self, answer: Answer, fmt: str) -> None:
        """Stream ``answer`` into one display, throttled; block until it ends or is stopped."""
        from IPython.display import clear_output, display

        from .render import AnswerView, answer_bundle

        view = AnswerView(fmt)  # type: ignore[arg-type]
        data, metadata = view.bundle(answer.snapshot())
        handle = display(data, metadata=metadata, raw=True, display_id=True)

        def show(state: AnswerState) -> None:
            try:
                data, metadata = view.bundle(state)
            except ValueError:  # the last update can be the end: JSON that does not parse is
                return  # said once, below
            handle.update(data, metadata=metadata, raw=True)

        self.session.follow(answer, show)
        state = answer.snapshot()
        failure = None
        if state.phase == "error" and not state.text:
            clear_output()
        else:
            try:
                data, metadata = answer_bundle(state, fmt=fmt)  # type: ignore[arg-type]
            except ValueError as error:  # --format json that does not parse
                failure = AnswerFormatError(str(error))
                data, metadata = answer_bundle(state)
            handle.update(data, metadata=metadata, raw=True)
        self._typed(answer, state, handle)
        if state.phase == "stopped":
            stopped = AnswerStopped(
                f"Stopped after {state.seconds:.1f} s; the partial answer is kept in the chat "
                "history, marked as stopped."
            )
            stopped.shown = True  # the status line says "■ stopped": no second message
            raise stopped
        if answer.error is not None:
            raise answer.error
        if failure is not None:
            raise failure
        if fmt == "code":
            self._code_below(state.text)

    def _typed(self, answer: Answer, state: AnswerState, handle: Any) -> None:
        """A typed answer as its table in place of its JSON; the tool calls, collapsed."""
        from IPython.display import display

        from .render import status_text, tool_calls_bundle, value_table

        if answer.meta.get("tools"):
            data, metadata = tool_calls_bundle(answer.meta["tools"])
            display(data, metadata=metadata, raw=True)
        if "schema" in answer.meta and answer.error is None and state.phase == "done":
            data, metadata = value_table(answer.value, status_text(state))
            handle.update(data, metadata=metadata, raw=True)

    def _code_below(self, text: str) -> None:
        from IPython.display import display

        from .render import code_block, notice

        code, language = code_block(text, fenced_only=True)
        if not code.strip():
            display(notice("-f code: the answer has no code block, so no cell was added below."))
            return
        self.shell.set_next_input(code, replace=False)
        display(notice(f"↓ The {language or 'code'} block is in a new cell below."))

    # -- %amigo_image ----------------------------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", help="image model (flux, dalle, recraft, …)")
    @argument("-c", "--chat", default="default", help="named conversation of this notebook")
    @argument("--fresh", action="store_true", help="draw even if a recording answers")
    @argument("prompt", nargs="*", help="what to draw")
    @no_var_expand
    @line_cell_magic
    def amigo_image(self, line: str, cell: str | None = None) -> None:
        """Draw a picture; it is shown inline and kept in the notebook as image bytes.

        Examples::

            %amigo_image a lighthouse at dusk
            %amigo_image -m dalle a watercolour fox

            %%amigo_image -m recraft
            A poster of {title}, flat colours
        """
        args = self.parse(self.amigo_image, line, "%amigo_image")
        text = cell if cell is not None else " ".join(args.prompt)
        prompt = self.session.prompt(text, self.namespace())
        options = self.session.options(
            chat=args.chat, model=args.model, cell_id=cell_id(self.shell), fresh=args.fresh
        )
        answer = self.session.image(prompt, options)
        self.show_notices()
        self._show_pictures(answer)

    def _show_pictures(self, answer: ImageAnswer) -> None:
        from IPython.display import display

        from .render import image_bundle, notice, progress

        handle = display(progress(f"drawing with {answer.model}…"), display_id=True)

        def tick(state: AnswerState) -> None:
            handle.update(progress(f"drawing with {state.model}… {state.seconds:.0f} s"))

        self.session.follow(answer, tick)
        if answer.phase == "stopped":
            handle.update(progress("■ stopped"))
            stopped = AnswerStopped("Stopped; no picture was drawn.")
            stopped.shown = True
            raise stopped
        if answer.error is not None and not answer.images:
            handle.update(progress(f"✖ {answer.model}: no picture"))
            raise answer.error
        for index, image in enumerate(answer.images):
            data, metadata = image_bundle(
                image.data, alt=image.alt, mime=image.mime, model=answer.model, chat=answer.chat
            )
            if index == 0:
                handle.update(data, metadata=metadata, raw=True)
            else:
                display(data, metadata=metadata, raw=True)
        for warning in answer.warnings:
            display(notice(f"⚠ {warning}"))
        if answer.error is not None:
            raise answer.error

    # -- %amigo_panel ----------------------------------------------------------------------------

    @magic_arguments()
    @argument("-c", "--chat", default="default", help="the chat to open")
    @argument("-m", "--model", help="model selected in the picker")
    @argument("-T", "--tool", action="append", default=[], metavar="NAME",
              help="offer this notebook function (Approve / Deny each call)")  # fmt: skip
    @argument("--side", action="store_true", help="open it beside the notebook (JupyterLab)")
    @line_magic
    def amigo_panel(self, line: str) -> Any:
        """Open the chat panel: a model picker, the chat's transcript, Send, Stop, Clear, Export.

        It shares this notebook's chats with %%amigo cells; sending never blocks the kernel.

        Examples::

            %amigo_panel
            %amigo_panel --chat review -m claude
            %amigo_panel --side
        """
        from .panel import ChatPanel

        args = self.parse(self.amigo_panel, line, "%amigo_panel")
        panel = ChatPanel(
            session=self.session, chat=args.chat, model=args.model, tools=args.tool,
            namespace=self.shell.user_ns,
        )  # fmt: skip
        if args.side:
            from .panel_side import open_beside

            return open_beside(panel)
        return panel

    # -- shared plumbing -----------------------------------------------------------------------

    def show_notices(self) -> None:
        """Whatever the session has to say (the store's news, a fixed prompt), one line each."""
        from IPython.display import display

        from .render import notice

        for line in self.session.take_notices():
            display(notice(line))

    def parse(self, func: Callable[..., Any], line: str, name: str) -> argparse.Namespace:
        """Options parsed shlex-style (quotes group words); errors end with a usage line."""
        parser = func.parser  # type: ignore[attr-defined]  # set by @magic_arguments
        try:
            return parser.parse_args(_split(line))
        except UsageError as error:
            usage = " ".join(parser.format_usage().replace("::", " ").split())
            usage = usage.replace(f"%{func.__name__}", name, 1)
            from .complete import close_option

            hint = close_option(parser, str(error))  # --modle → "did you mean --model?"
            raise UsageError(f"{name}: {error}{hint}\nusage: {usage}") from None

    def namespace(self) -> dict[str, Any]:
        """The user's variables for ``{name}`` fields, with ``Err`` even if they rebound it."""
        namespace = self.shell.user_ns
        if "Err" not in namespace:
            return {**namespace, "Err": self.recorder.errors}
        return namespace


def _ask_stdin(pending: Any) -> str | None:
    """A tool call put to the person through the kernel's input request (None: no stdin)."""
    try:
        return input(pending.question)
    except Exception:  # StdinNotImplementedError (jupyter execute), EOFError, a captured stdin
        return None


from .help_text import plain as _plain_help  # noqa: E402  (the methods above are its input)

_plain_help(
    AmigoMagics.amigo,
    "%%amigo",
    "The line form manages things: %amigo help lists every command (models, use, endpoint, "
    "history, chats, reset, export, usage, fix, config, key, version), and %amigo_panel opens "
    "the chat panel.",
)
_plain_help(AmigoMagics.amigo_image, "%amigo_image")
_plain_help(AmigoMagics.amigo_panel, "%amigo_panel")


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as error:
        raise UsageError(f"Cannot read the options ({error}): check the quotes.") from None
