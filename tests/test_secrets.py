"""Keys stay secret: every feature and every error class, then a scan of everything left behind.

Debug logging is on in the kernel, so the one log line that mentions headers is scanned too.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.amigo_server import AmigoServer, Reply
from tests.kernel import running_kernel

ENV_KEY = "sk-env-3f9a1c77d2e84b5f"
TYPED_KEY = "sk-typed-81b2c4d6e0f3a597"


def replies(key: str) -> list[Reply]:
    """What the server answers, request by request, as the cells below ask."""
    return [
        Reply.stream("hi there"),
        Reply.stream("a side answer"),
        Reply.image(),
        Reply.error(401, f"Bearer {key} is not valid"),  # a server that echoes the key
        Reply.error(403, "Forbidden"),
        Reply.error(404, "Cannot POST"),
        Reply.error(406, "not implemented"),
        Reply.error(413, "too large"),
        Reply.error(429, f"slow down, {key}", retry_after="600"),
        *[Reply.error(500, "boom") for _ in range(3)],
        Reply.cloudflare(),
        Reply.stream(chunks=["a", "b"], error_after=1, in_band_error={"message": f"bad {key}"}),
        Reply.stream(chunks=["cut ", "here"], fail_after=1),
        Reply.stream("a fix"),
    ]


def cells(export_dir: Path) -> list[str]:
    return [
        "import logging\nlogging.basicConfig(level=logging.DEBUG, force=True)",
        "%load_ext amigo_magic",
        "%%amigo\nhello",
        "%%amigo --chat side -m claude\nhello",
        "%amigo_image a fox",
        "%amigo models",
        "%amigo config",
        "%amigo history",
        "%amigo chats",
        *["%%amigo\nerror please" for _ in range(9)],  # 401 … in-band error, cut stream
        "%%amigo -m claud\nunknown model",
        "%%amigo --bogus\nbad option",
        "%amigo fix",
        f"%amigo export {export_dir}/chat.md",
        f"%amigo export {export_dir}/chat.json",
        "from amigo_magic.magics import current\nprint(current().settings())",
        "%config AmigoMagics",
    ]


def leftovers(home: Path, export_dir: Path, *texts: str) -> dict[str, bytes]:
    found = {f"text {i}": t.encode() for i, t in enumerate(texts)}
    for path in [*home.glob("history.db*"), *export_dir.rglob("*")]:
        if path.is_file():
            found[str(path)] = path.read_bytes()
    return found


@pytest.fixture
def home() -> Path:
    return Path(os.environ["AMIGO_HOME"])


def test_key_from_the_environment_appears_nowhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home: Path
) -> None:
    export_dir = tmp_path / "exports"
    with AmigoServer(api_key=ENV_KEY) as server:
        monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
        monkeypatch.setenv("AMIGO_API_KEY", ENV_KEY)
        server.enqueue(*replies(ENV_KEY))
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(c) for c in cells(export_dir)]
        log = tmp_path / "kernel.log"
        with log.open("wb") as output:
            NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                           resources={"metadata": {"path": str(tmp_path)}},
                           ).execute(stdout=output, stderr=output)  # fmt: skip
        used = [
            r.headers.get("authorization") for r in server.requests if r.path.startswith("/v1/")
        ]
    assert used  # the key was sent, where it belongs
    assert all(h == f"Bearer {ENV_KEY}" for h in used)
    saved = nbformat.writes(nb)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    names = {o.ename for o in errors}
    expected = {
        "AuthenticationError", "PermissionDeniedError", "NotFoundError", "AppVersionError",
        "BadRequestError", "RateLimitError", "ServerError", "StreamError", "UnknownModelError",
    }  # fmt: skip
    assert expected <= names
    assert "UsageError: %%amigo: unrecognized arguments: --bogus" in saved  # IPython: stderr
    assert "Bearer ***" in saved  # the debug log line shows the header, redacted
    assert (export_dir / "chat.md").exists()
    scanned = leftovers(home, export_dir, saved, log.read_text(errors="replace"))
    assert len(scanned) >= 5
    hits = [where for where, data in scanned.items() if ENV_KEY.encode() in data]
    for where, data in scanned.items():
        i = data.find(ENV_KEY.encode())
        if i >= 0:
            print("LEAK", where, data[max(0, i - 300) : i + 60])
    assert hits == []


def test_key_typed_with_amigo_key_appears_nowhere(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_dir = tmp_path / "exports"
    log = tmp_path / "kernel.log"
    with AmigoServer(api_key=TYPED_KEY) as server, log.open("wb") as output:
        monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
        server.enqueue(*replies(TYPED_KEY))
        with running_kernel(str(tmp_path), output=output) as kernel:
            runs = []
            all_cells = cells(export_dir)
            runs.append(kernel.execute(all_cells[0]))
            runs.append(kernel.execute(all_cells[1]))
            typed = kernel.execute("%amigo key", answer=TYPED_KEY)
            assert typed.status == "ok"
            prompts = [m for m in typed.messages if m["msg_type"] == "input_request"]
            assert prompts
            assert prompts[0]["content"]["password"] is True  # no echo
            runs.append(typed)
            runs += [kernel.execute(c) for c in all_cells[2:]]
        used = [
            r.headers.get("authorization") for r in server.requests if r.path.startswith("/v1/")
        ]
    assert used
    assert all(h == f"Bearer {TYPED_KEY}" for h in used)
    messages = repr([run.messages for run in runs]) + repr([run.reply for run in runs])
    assert "set with %amigo key" in messages
    scanned = leftovers(home, export_dir, messages, log.read_text(errors="replace"))
    hits = [where for where, data in scanned.items() if TYPED_KEY.encode() in data]
    assert hits == []
