"""``%%amigo`` cells with more than one answer in play: ``--bg`` (the cell returns at once and
the answer keeps streaming into its output while other cells run; ``%amigo wait`` blocks until
every one is done) and ``-m a,b`` (the same messages to each model, streamed in columns; nothing
enters the conversation until ``%amigo keep N``).

A background answer is followed on the loop thread (:meth:`~.session.ChatSession.watch`), so
its display updates go out through ipykernel's thread-safe IOPub socket by display id: the
output stays in the cell that asked. ``-o`` is bound when the answer ends.
"""

from __future__ import annotations

import contextvars
import html
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .errors import AnswerFormatError, AnswerStopped, ConfigError
from .pacer import STOP_GRACE

if TYPE_CHECKING:
    from .answer import Answer, AnswerState
    from .compare import Comparison
    from .context import Prompt
    from .magics import AmigoMagics
    from .session import AskOptions

__all__ = [
    "Background",
    "background",
    "columns_metadata",
    "dry_run",
    "keep",
    "side_by_side",
    "wait",
]

log = logging.getLogger("amigo_magic")
REDRAW = 0.25  # seconds between side-by-side redraws (every column is re-sent each time)
_jobs: weakref.WeakKeyDictionary[Any, list[Background]] = weakref.WeakKeyDictionary()
_compared: weakref.WeakKeyDictionary[Any, Comparison] = weakref.WeakKeyDictionary()


class Background:
    """One ``--bg`` answer: ``finished`` is set once its final display and ``-o`` are done."""

    def __init__(self, answer: Answer, out: str | None, cell: str | None = None) -> None:
        self.answer = answer
        self.out = out
        self.cell = cell  # the asking cell's id: a re-run of it supersedes this job's -o
        self.finished = threading.Event()
        self.failure: BaseException | None = None


def background(
    magics: AmigoMagics, prompt: Prompt, options: AskOptions, fmt: str, out: str | None
) -> None:
    """Send ``prompt``, show the live answer in this cell, and return at once."""
    from IPython.display import display

    from .render import AnswerView, answer_bundle

    session = magics.session
    answer = session.ask(prompt, options)
    magics.show_notices()
    view = AnswerView(fmt)  # type: ignore[arg-type]
    data, metadata = view.bundle(answer.snapshot())
    handle = display(data, metadata=metadata, raw=True, display_id=True)  # type: ignore[no-untyped-call]
    job = Background(answer, out, options.cell_id)
    if options.cell_id:  # a re-run cell: its earlier answer no longer binds -o
        for earlier in _jobs.get(magics, ()):
            if earlier.cell == options.cell_id:
                earlier.out = None

    def update(data: dict[str, Any], metadata: dict[str, Any]) -> None:
        # Twice: with the asking cell's parent (its own output area, while it is still open)
        # and, in an empty context, with the parent of whatever cell runs now — an update by
        # display id, as `handle.update()` in a later cell sends it, which front ends such as
        # nbclient apply to the first cell's output (they drop a finished cell's messages).
        handle.update(data, metadata=metadata, raw=True)
        contextvars.Context().run(handle.update, data, metadata=metadata, raw=True)

    def show(state: AnswerState) -> None:
        update(*view.bundle(state))

    def finish() -> None:
        try:
            state = answer.snapshot()
            try:
                data, metadata = answer_bundle(state, fmt=fmt)  # type: ignore[arg-type]
            except ValueError as error:  # --format json that does not parse
                job.failure = AnswerFormatError(str(error))
                data, metadata = answer_bundle(state)
            update(data, metadata)
            if job.out and state.phase == "done" and answer.error is None:
                magics.shell.user_ns[job.out] = answer.text
        finally:
            job.finished.set()

    def failed(error: BaseException) -> None:
        job.failure = job.failure or error
        log.warning("a background answer's display failed: %s", error)

    _jobs.setdefault(magics, []).append(job)
    session.watch(answer, show, finish=finish, on_error=failed)


def wait(magics: AmigoMagics) -> Any:
    """``%amigo wait``: block until every background answer of this kernel has ended (an
    interrupt stops them all); then say so, or raise the first one's error."""
    from .render import notice

    jobs = list(_jobs.get(magics, ()))
    try:
        for job in jobs:
            while not job.finished.wait(0.25):
                pass
    except KeyboardInterrupt:
        for job in jobs:
            job.answer.stop()
        deadline = time.monotonic() + STOP_GRACE
        for job in jobs:
            job.finished.wait(max(0.0, deadline - time.monotonic()))
        _forget(magics, jobs)
        raise AnswerStopped(
            f"Stopped {len(jobs)} background answer{'s' if len(jobs) != 1 else ''}; what "
            "arrived is kept, marked stopped."
        ) from None
    _forget(magics, jobs)
    for job in jobs:
        if job.answer.error is not None:
            raise job.answer.error
        if job.failure is not None:
            raise job.failure
    if not jobs:
        return notice("No background answers are running.")
    bound = [job.out for job in jobs if job.out]
    said = f"; bound {', '.join(bound)}" if bound else ""
    count = len(jobs)
    return notice(f"{count} background answer{'s' if count != 1 else ''} done{said}.")


def _forget(magics: AmigoMagics, jobs: list[Background]) -> None:
    left = [job for job in _jobs.get(magics, ()) if job not in jobs]
    _jobs[magics] = left


def side_by_side(
    magics: AmigoMagics, prompt: Prompt, options: AskOptions, models: list[str]
) -> None:
    """Ask every model at once and stream the answers in columns; keep none yet."""
    from IPython.display import display

    comparison: Comparison = magics.session.compare(prompt, options, models)
    magics.show_notices()
    _compared[magics] = comparison
    handle = display(
        columns_bundle(comparison), metadata=columns_metadata(comparison), raw=True,
        display_id=True,
    )  # type: ignore[no-untyped-call]  # fmt: skip
    answers = comparison.answers
    try:
        while not comparison.done:
            for answer in answers:
                if not answer.done.is_set():
                    answer.done.wait(REDRAW / len(answers))
            handle.update(
                columns_bundle(comparison), metadata=columns_metadata(comparison), raw=True
            )
    except KeyboardInterrupt:
        comparison.stop()
        deadline = time.monotonic() + STOP_GRACE
        for answer in answers:
            if not answer.wait(max(0.0, deadline - time.monotonic())):
                answer.abandon()
        handle.update(columns_bundle(comparison), metadata=columns_metadata(comparison), raw=True)
        raise AnswerStopped("Stopped; what arrived is shown, and nothing was kept.") from None
    metadata = columns_metadata(comparison)
    handle.update(columns_bundle(comparison, final=True), metadata=metadata, raw=True)


def dry_run(magics: AmigoMagics, prompt: Prompt, options: AskOptions, models: list[str]) -> None:
    """``-m a,b --dry-run``: what each model would be sent, one preview after another."""
    import dataclasses

    from IPython.display import display

    names = [name.strip() for name in models if name.strip()]
    if len(names) < 2:
        raise ConfigError("Side by side needs two models or more: -m claude,gpt-4o")
    previews = [
        magics.session.preview(prompt, dataclasses.replace(options, model=name)) for name in names
    ]  # every name checked before anything is shown
    for preview in previews:
        display(preview)  # type: ignore[no-untyped-call]


def keep(magics: AmigoMagics, number: int) -> Any:
    """``%amigo keep N``: record answer N of the last side-by-side cell as the turn."""
    from .render import notice

    comparison = _compared.get(magics)
    if comparison is None:
        raise ConfigError("Nothing to keep: compare first with %%amigo -m claude,gpt-4o")
    answer = comparison.keep(number)
    return notice(
        f"Kept answer {number} ({answer.model}) in chat '{answer.chat}'; the next cell "
        "continues from it."
    )


def columns_metadata(comparison: Comparison) -> dict[str, Any]:
    """What ``--cells`` notes of the columns: each answer's text, not its status line (its
    timings differ on every run, and a later --cells request would never replay)."""
    noted = "\n\n".join(
        f"── {number} · {state.model} ──\n{state.text}"
        for number, state in enumerate((a.snapshot() for a in comparison.answers), 1)
    )
    return {"amigo": {"noted": f"{noted}\n"}}


def columns_bundle(comparison: Comparison, *, final: bool = False) -> dict[str, str]:
    """The answers as columns (HTML) and one after another (plain text)."""
    from .render import markdown_html, status_text

    cells, plain = [], []
    for number, answer in enumerate(comparison.answers, 1):
        state = answer.snapshot()
        status = status_text(state)
        if final and state.text:  # sanitised: model text never becomes live markup
            body = markdown_html(state.text)
        else:
            body = f'<pre style="white-space:pre-wrap;margin:0">{html.escape(state.text)}</pre>'
        head = f"<b>{number} · {html.escape(state.model)}</b>"
        cells.append(
            f'<div style="min-width:0">{head}{body}'
            f'<div style="opacity:.7;font-size:.85em">{html.escape(status)}</div></div>'
        )
        plain.append(f"── {number} · {state.model} ──\n{state.text}\n{status}")
    count = len(cells)
    hint = "Keep one as the turn: %amigo keep N" if final else ""
    grid = (
        f'<div style="display:grid;grid-template-columns:repeat({count},minmax(0,1fr));'
        f'gap:1em">{"".join(cells)}</div>'
    )
    foot = f"<div><code>{hint}</code></div>" if hint else ""
    return {
        "text/html": grid + foot,
        "text/plain": "\n\n".join(plain) + (f"\n\n{hint}" if hint else ""),
    }
