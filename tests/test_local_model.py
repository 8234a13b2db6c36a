"""The embedded local model (SmolLM2 through the prebuilt xllamacpp binding) in a real kernel,
offline."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amigo_magic.backends.base import ChatRequest
from amigo_magic.backends.local import GOMP_HINT, LocalBackend
from amigo_magic.errors import ConfigError
from tests.kernel import Kernel, running_kernel


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AMIGO_BASE_URL", "AMIGO_API_KEY", "AMIGO_MODEL"):
            patch.delenv(name, raising=False)
        patch.setenv("AMIGO_HOME", str(home))
        patch.setenv("AMIGO_BASE_URL", "http://127.0.0.1:9/v1")  # nothing to reach: offline
        # ipykernel forwards fd 2 (C libraries' stderr) to the notebook, as a user sees it, except
        # under pytest: without this variable the kernel behaves as in a notebook.
        patch.delenv("PYTEST_CURRENT_TEST", raising=False)
        with running_kernel(str(home)) as k:
            assert k.execute("%load_ext amigo_magic").status == "ok"
            assert k.execute("%config AmigoMagics.throttle = 0.02").status == "ok"
            k.home = home  # type: ignore[attr-defined]
            yield k


def texts(run: Any) -> list[str]:
    return [d["content"]["data"]["text/plain"] for d in run.displays]


def test_local_model_streams_with_a_loading_status(kernel: Kernel) -> None:
    run = kernel.execute(
        "%%amigo --model local --max-tokens 80\nWrite two sentences about the sea."
    )
    assert run.status == "ok", run.reply["content"]
    shown = texts(run)
    assert any("loading model" in t for t in shown), shown[:3]  # the first use loads, visibly
    answers = [t.split("\n\nlocal · ")[0] for t in shown if "\n\nlocal · " in t]
    assert len({a for a in answers if a.strip()}) >= 3  # tokens arrived one update at a time
    final = run.displays[-1]["content"]
    assert final["metadata"]["amigo"]["phase"] == "done"
    assert final["metadata"]["amigo"]["model"] == "local"
    assert run.stream_text == ""  # no llama.cpp log line in the notebook (fd 2 is captured)
    again = kernel.execute("%%amigo --model local --max-tokens 8\nAnd one word?")
    assert not any("loading model" in t for t in texts(again))  # loaded once per kernel
    status = texts(again)[-1].rpartition("\n\nlocal · ")[2]
    assert status.split(" · ")[0].endswith(" tokens"), status
    assert not status.startswith("~"), status  # llama.cpp's own count, not an estimate


def test_interrupt_stops_the_local_model_and_history_keeps_it(kernel: Kernel) -> None:
    state: dict[str, float] = {}

    def interrupt(message: dict[str, Any]) -> None:
        text = message["content"].get("data", {}).get("text/plain", "")
        answer = text.split("\n\nlocal · ")[0] if "\n\nlocal · " in text else ""
        if len(answer) > 40 and not state:
            state["at"] = time.monotonic()
            kernel.interrupt()

    run = kernel.execute(
        "%%amigo --model local --max-tokens 1500 --chat counting -t 0\n"
        "Count from 1 to 400, one number per line.",
        on_message=interrupt,
    )
    shown = [m["content"].get("data", {}).get("text/plain", "") for m in run.displays]
    assert state, f"never saw 40 characters of the answer ({run.status}): {shown[-1:]!r}"
    stopped_after = time.monotonic() - state["at"]
    assert stopped_after < 1.5, stopped_after  # Stop ends the answer at once, not at max-tokens
    assert run.status == "error"
    assert run.reply["content"]["ename"] == "AnswerStopped"
    db = sqlite3.connect(Path(kernel.home) / "history.db")  # type: ignore[attr-defined]
    ((status, model, content),) = db.execute(
        "SELECT status, model, content FROM turns WHERE chat = 'counting' AND role = 'assistant'"
    ).fetchall()
    db.close()
    assert (status, model) == ("stopped", "local")
    assert len(content) > 40
    after = kernel.execute("%%amigo --model local --max-tokens 4 --no-history\nHi")
    assert after.status == "ok"  # the model is free again after the stop


def test_a_prompt_longer_than_the_context_is_one_line(kernel: Kernel) -> None:
    run = kernel.execute(
        "%%amigo --model local --no-history\n" + "apple banana cherry " * 1500, timeout=90
    )
    assert run.status == "error"
    (error,) = run.of_type("error")
    assert error["content"]["ename"] == "BadRequestError"
    (line,) = error["content"]["traceback"]
    assert "The local model cannot take this request" in line
    assert "exceeds the available context size (4096 tokens)" in line
    assert "--no-history" in line
    after = kernel.execute("%%amigo --model local --max-tokens 4 --no-history\nHi")
    assert after.status == "ok"  # the model is still usable


def ask(backend: LocalBackend) -> None:
    async def go() -> None:
        async for _ in backend.chat(ChatRequest("", [{"role": "user", "content": "hi"}])):
            pass

    asyncio.run(go())


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'amigo-magic\[local\]'"):
        ask(LocalBackend())


def test_missing_libgomp_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_gomp(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "xllamacpp":
            raise ImportError("libgomp.so.1: cannot open shared object file: No such file")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "xllamacpp", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_gomp)
    with pytest.raises(ConfigError) as caught:
        ask(LocalBackend())
    assert str(caught.value) == GOMP_HINT
    assert "apt-get install libgomp1" in str(caught.value)


def test_a_file_that_is_no_gguf_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "notes.gguf"
    fake.write_text("not a model")
    with pytest.raises(ConfigError, match=r"Could not load the model at .*notes\.gguf.*GGUF"):
        ask(LocalBackend(str(fake)))
    with pytest.raises(ConfigError, match=r"No GGUF model at .*missing\.gguf"):
        ask(LocalBackend(str(tmp_path / "missing.gguf")))
