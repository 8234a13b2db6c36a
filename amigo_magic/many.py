"""Many answers at once, the front end: ``amigo_magic.map`` (and ``%amigo map``) with its
progress display.

It finds the notebook's session (or a script's), asks it to start the batch, and follows it:
one throttled progress line — an HTML bar and a plain line in a notebook, a ``\\r``-rewritten
line on stderr elsewhere, as tqdm does. An interrupt (the ■ button) stops the batch and the
call returns what finished.
"""

from __future__ import annotations

import html
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .pacer import STOP_GRACE

if TYPE_CHECKING:
    from .batch import Batch, BatchState
    from .session import ChatSession

__all__ = ["PROGRESS_EVERY", "follow_batch", "map", "progress_bundle", "progress_metadata"]

PROGRESS_EVERY = 0.5  # seconds between progress redraws (a batch of 20,000 must not flood)
_PARAMS = ("temperature", "top_p", "max_tokens")
_script_session: ChatSession | None = None
_script_lock = threading.Lock()


def map(
    template: str,
    items: Iterable[Any],
    *,
    model: str | None = None,
    concurrency: int = 8,
    schema: Any = None,
    params: Mapping[str, Any] | None = None,
    system: str | None = None,
) -> Any:
    """Ask ``template`` once per item, ``concurrency`` requests at a time; the answers in input
    order — a list, or a pandas Series on the input's index.

    ``items`` are values (``{item}`` in the template) or mappings, a Series, or a DataFrame
    (``{column}`` from each row), filled by the cells' brace-safe rules. Each item is its own
    conversation; nothing enters the chat history. A failed item is a
    :class:`~amigo_magic.Failed` value holding its one-line error (falsy); the result's
    ``.summary`` (a Series: ``.attrs["amigo"]``) says how many failed and why. ■ stops the
    batch and returns what finished (``None`` for the rest). ``params`` are the request's
    parameters, as ``-p`` takes them (``{"seed": 7, "temperature": 0.2}``).

    Example::

        labels = amigo_magic.map("One word, positive or negative: {item}", reviews, model="claude")
    """
    session = _session()
    sampling, others = _params(params)
    options = session.options(
        model=model,
        system=system,
        use_history=False,
        temperature=sampling.get("temperature"),
        top_p=sampling.get("top_p"),
        max_tokens=None if sampling.get("max_tokens") is None else int(sampling["max_tokens"]),
        params=others,
    )
    batch = session.map(template, items, options, concurrency=concurrency, schema=schema)
    follow_batch(batch, _progress_display())
    if batch.phase == "error" and batch.error is not None:
        raise batch.error  # the items' own iterator failed: a bug to see, not a summary line
    return batch.values()


def follow_batch(
    batch: Batch,
    show: Callable[[BatchState], None],
    *,
    every: float = PROGRESS_EVERY,
    slice_seconds: float = 0.25,
) -> None:
    """Show ``batch`` every ``every`` seconds until it ends (and once at the end); an interrupt
    stops it and waits (a little) for the workers to let go."""
    show(batch.snapshot())
    last = time.monotonic()
    try:
        while not batch.done.is_set():
            batch.done.wait(slice_seconds)
            now = time.monotonic()
            if now - last >= every and not batch.done.is_set():
                show(batch.snapshot())
                last = now
    except KeyboardInterrupt:
        batch.stop()
        batch.wait(STOP_GRACE)
    show(batch.snapshot())


def progress_bundle(state: BatchState) -> dict[str, str]:
    """The progress display: a plain line, and an HTML bar with the same line."""
    line = f"map {state.model} · {state.line()}"
    value = f' value="{state.done}" max="{state.total}"' if state.total else ""
    bar = f'<progress{value} style="width:16em;vertical-align:middle"></progress> '
    return {"text/plain": line, "text/html": f"<div>{bar}<code>{html.escape(line)}</code></div>"}


def progress_metadata(state: BatchState) -> dict[str, Any]:
    """What ``--cells`` notes of the progress display: the counts, not the rate or the clock
    (they differ on every run, and a later --cells request would never replay)."""
    total = f"/{state.total:,}" if state.total is not None else ""
    failed = f", {state.failed:,} failed" if state.failed else ""
    stopped = ", stopped" if state.phase == "stopped" else ""
    noted = f"map {state.model} · {state.done:,}{total} done{failed}{stopped}\n"
    return {"amigo": {"noted": noted}}


def _progress_display() -> Callable[[BatchState], None]:
    """Where progress goes: an updated display in a kernel, a rewritten stderr line elsewhere."""
    shell = _shell()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        from IPython.display import display

        handle: Any = None

        def update(state: BatchState) -> None:
            nonlocal handle
            if handle is None:
                handle = display(
                    progress_bundle(state), metadata=progress_metadata(state), raw=True,
                    display_id=True,
                )  # type: ignore[no-untyped-call]  # fmt: skip
            else:
                handle.update(progress_bundle(state), metadata=progress_metadata(state), raw=True)

        return update

    def write(state: BatchState) -> None:
        end = "\n" if state.phase != "running" else ""
        sys.stderr.write(f"\r{progress_bundle(state)['text/plain']}\x1b[K{end}")
        sys.stderr.flush()

    return write


def _params(params: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The sampling parameters (checked as --temperature and the others are), and every other
    one as a ``-p KEY=JSON`` item: ``params`` takes what ``-p`` and ``AmigoMagics.params`` do."""
    sampling: dict[str, Any] = {}
    others: list[str] = []
    for key, value in (params or {}).items():
        if key in _PARAMS:
            sampling[key] = value
            continue
        try:
            others.append(f"{key}={json.dumps(value, allow_nan=False)}")
        except (TypeError, ValueError):
            raise ConfigError(
                f"params: {key} is {type(value).__name__} {value!r:.60}, which a request body "
                "(JSON) cannot hold: give a number, a string, true/false, null, a list or a dict."
            ) from None
    return sampling, others


def _shell() -> Any:
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


def _session() -> ChatSession:
    """The notebook's session (loading the extension if needed), else one for this script."""
    global _script_session
    shell = _shell()
    if shell is not None:
        from .cells import session_for

        found = session_for(shell)
        if found is None:
            shell.extension_manager.load_extension("amigo_magic")
            found = session_for(shell)
        if found is not None:
            return found
    with _script_lock:
        if _script_session is None:
            from .session import ChatSession

            _script_session = ChatSession.open(notebook="script")
        return _script_session


def map_verb(magics: Any, argv: list[str]) -> Any:
    """``%amigo map ITEMS TEMPLATE [-m MODEL] [-j N] [-s SYSTEM] [-o NAME]``: :func:`map` over
    the notebook variable ``ITEMS``; the results are shown, or bound to ``NAME``."""
    import argparse

    from IPython.core.error import UsageError

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:
            raise UsageError(f"{message}\n{self.format_usage().strip()}")

    parser = Parser(prog="%amigo map", add_help=False)
    parser.add_argument("items", help="a notebook variable: a list, Series or DataFrame")
    parser.add_argument("template", help="the prompt, with {item} or {column}")
    parser.add_argument("-m", "--model")
    parser.add_argument("-j", "--concurrency", type=int, default=8)
    parser.add_argument("-s", "--system")
    parser.add_argument("-o", "--out")
    args = parser.parse_args(argv)
    namespace = magics.shell.user_ns
    if args.items not in namespace:
        raise ConfigError(f"%amigo map {args.items}: no such variable in the notebook.")
    if args.out is not None:
        from .cells import check_out_name

        check_out_name(args.out, magics.shell)
    results = map(
        args.template,
        namespace[args.items],
        model=args.model,
        concurrency=args.concurrency,
        system=args.system,
    )
    if args.out:
        namespace[args.out] = results
        return None
    return results
