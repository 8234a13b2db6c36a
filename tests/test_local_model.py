"""The embedded local model (SmolLM2 through llama-cpp-python) in a real kernel, offline."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amigo_magic.backends.base import ChatRequest
from amigo_magic.backends.local import LocalBackend
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
    again = kernel.execute("%%amigo --model local --max-tokens 8\nAnd one word?")
    assert not any("loading model" in t for t in texts(again))  # loaded once per kernel


def test_interrupt_stops_the_local_model_and_history_keeps_it(kernel: Kernel) -> None:
    state: dict[str, bool] = {}

    def interrupt(message: dict[str, Any]) -> None:
        text = message["content"].get("data", {}).get("text/plain", "")
        answer = text.split("\n\nlocal · ")[0] if "\n\nlocal · " in text else ""
        if len(answer) > 40 and not state:
            state["sent"] = True
            kernel.interrupt()

    run = kernel.execute(
        "%%amigo --model local --max-tokens 1500 --chat counting\n"
        "Count from 1 to 400, one number per line.",
        on_message=interrupt,
    )
    assert state
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


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if it were not installed
    backend = LocalBackend()

    async def go() -> None:
        async for _ in backend.chat(ChatRequest("", [{"role": "user", "content": "hi"}])):
            pass

    with pytest.raises(ConfigError, match=r"pip install 'amigo-magic\[local\]'"):
        asyncio.run(go())
