"""The first answer's head start: after the cell that ran ``%load_ext``, the extension warms the
HTTP stack on its own thread; ``%load_ext`` stays light, no cell waits for the warm-up, and a
warm-up that fails is never seen."""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.amigo_server import AmigoServer, Reply
from tests.kernel import Kernel, running_kernel
from tests.shell import wait_until


@pytest.fixture
def kernel(
    server: AmigoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Kernel]:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    with running_kernel(str(tmp_path)) as k:
        yield k


def modules(kernel: Kernel, *names: str) -> list[str]:
    run = kernel.execute(f"import sys; print(sorted(m for m in {names!r} if m in sys.modules))")
    return list(ast.literal_eval(run.stream_text.strip()))


def test_the_http_stack_is_ready_before_the_first_answer(kernel: Kernel) -> None:
    assert kernel.execute("%load_ext amigo_magic").status == "ok"
    ready = ["amigo_magic.sanitize", "amigo_magic.session", "httpx"]
    wait_until(lambda: modules(kernel, *ready) == ready, "the warm-up's imports", timeout=20)
    probe = (
        "import threading; from amigo_magic.client import _ssl_context\n"
        "print(_ssl_context.cache_info().currsize,"
        " any(t.name == 'amigo-loop' for t in threading.enumerate()))"
    )
    wait_until(
        lambda: kernel.execute(probe).stream_text.split() == ["1", "True"],
        "the TLS context built on the loop thread",
    )
    assert modules(kernel, "ipywidgets", "xllamacpp") == []  # only what a cell's answer needs


WARMED_UP = (  # the warm-up's thread has run and ended
    "import sys, threading\n"
    "print('amigo_magic.live_markdown' in sys.modules,"
    " any(t.name == 'amigo-warm-up' for t in threading.enumerate()))"
)


def test_the_first_answer_imports_nothing_once_warmed_up(
    kernel: Kernel, server: AmigoServer
) -> None:
    """Every module the first answer needs (its request's parameters, saved endpoints, usage,
    the live render) was imported by the warm-up: a cell typed after it imports none — and
    nothing heavy that an answer does not need (genai-prices: a cost; pydantic: --schema)."""
    assert kernel.execute("%load_ext amigo_magic").status == "ok"
    wait_until(
        lambda: kernel.execute(WARMED_UP).stream_text.split() == ["True", "False"], "warm-up"
    )
    assert kernel.execute("import sys as _s; _before = set(_s.modules)").status == "ok"
    server.enqueue(Reply.stream(chunks=["# Ready\n\n", "Some *text*.\n\n", "More"]))
    run = kernel.execute("%%amigo\nhello")
    assert run.displays[-1]["content"]["data"]["text/plain"].startswith("# Ready")
    new = kernel.execute("print(sorted(set(_s.modules) - _before))").stream_text.strip()
    ours = {"amigo_magic", "httpx", "httpcore", "h11", "anyio", "markdown_it", "nh3", "sqlite3"}
    heavy = {"genai_prices", "pydantic", "pydantic_core"}
    imported = [m for m in ast.literal_eval(new) if m.split(".")[0] in ours | heavy]
    assert imported == [], imported


def test_no_cell_waits_for_the_warm_up(kernel: Kernel, server: AmigoServer) -> None:
    slow = "import time, amigo_magic.session as s\ns.warm_up = lambda: time.sleep(30)"
    assert kernel.execute(slow).status == "ok"
    assert kernel.execute("%load_ext amigo_magic").status == "ok"
    server.enqueue(Reply.stream(chunks=["still ", "answered"]))
    start = time.monotonic()
    run = kernel.execute("%%amigo\nhello")
    assert run.status == "ok"
    assert run.displays[-1]["content"]["data"]["text/plain"].startswith("still answered")
    assert time.monotonic() - start < 10  # not the 30 s the warm-up is still sleeping


def test_a_failed_warm_up_is_never_seen(kernel: Kernel, server: AmigoServer) -> None:
    broken = (
        "import amigo_magic.session as s\n"
        "def boom(): raise OSError('no CA bundle')\n"
        "s.warm_up = boom"
    )
    assert kernel.execute(broken).status == "ok"
    load = kernel.execute("%load_ext amigo_magic")
    server.enqueue(Reply.stream(chunks=["fine"]))
    run = kernel.execute("%%amigo\nhello")
    assert (load.status, run.status) == ("ok", "ok")
    assert load.stream_text + run.stream_text == ""
    assert run.displays[-1]["content"]["data"]["text/plain"].startswith("fine")
