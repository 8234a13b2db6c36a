"""Keys stay secret: every feature and every error class, then a scan of everything left behind.

Debug logging is on in the kernel, so the one log line that mentions headers is scanned too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from amigo_magic.errors import AmigoError
from tests.amigo_server import AmigoServer, Reply
from tests.kernel import running_kernel
from tests.shell import Recorder, TestingShell

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
        "from amigo_magic.extension import current\nprint(current().settings())",
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
        monkeypatch.setenv("AMIGO_API_KEY", ENV_KEY + "\r\n")  # a .env file with CRLF ends
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


# -- endpoint keys, keys that cannot be headers, URL credentials, encoded echoes -----------------
#
# These run in an in-process shell (tests/shell.py) against small loopback servers: AmigoServer in
# OpenAI mode for answers, and an echo server that repeats the Authorization header it really
# received — raw, URL-encoded both ways, JSON-escaped, as base64 — in a 401, a 502 and in the
# model ids of /models (AmigoServer's /models list is fixed, so it cannot echo).

EP_KEY = "sk-ep-Ab+cd/ef=gh+ij/kl==mn7f3e"  # + / = : the characters URL encoding changes
CR_KEY = "sk-cr-9b8a7c6d5e4f"
PASSWORD = "hunter2-PASSWORD-0a1b"


def _echoes(header: str) -> list[str]:
    import base64
    import json
    import re
    from urllib.parse import quote, quote_plus

    key = header.removeprefix("Bearer ")
    return [
        header,
        quote(header, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(header, safe="")),
        quote_plus(key),
        json.dumps(header)[1:-1].replace("/", "\\/"),
        base64.b64encode(f"user:{key}".encode()).decode(),
    ]


class EchoServer:
    """Answers every request by echoing its Authorization header; ``mode`` picks the status."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self
        self.mode = "401"
        self.seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _reply(self) -> None:
                import json

                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                auth = self.headers.get("authorization", "")
                owner.seen.append(auth)
                echoes = _echoes(auth)
                if self.path.endswith("/models"):
                    status = 200
                    body = {"object": "list", "data": [{"id": f"m-{e}"} for e in echoes]}
                elif owner.mode == "502":
                    status = 502
                    body = {"error": {"message": "upstream said: " + " | ".join(echoes)}}
                else:
                    status = 401
                    body = {"error": {"message": "bad credentials: " + " | ".join(echoes)}}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _reply

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def ip(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestingShell]:
    shell = TestingShell.instance()
    shell.display_pub = Recorder()
    shell.run_cell("%load_ext amigo_magic")
    shell.run_cell("%config AmigoMagics.throttle = 0.05")
    yield shell
    shell.run_cell("%config AmigoMagics.endpoints = {}")  # %config outlives the extension
    shell.run_cell("%config AmigoMagics.device_version = ''")
    shell.run_cell("%unload_ext amigo_magic")


def seen(ip: TestingShell, *results: Any) -> str:
    """Everything the user saw: displays, returned tables, one-line errors."""
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    parts = [repr(d.data) for d in pub.displays]
    for result in results:
        error = result.error_in_exec or result.error_before_exec
        if error is not None:
            lines = getattr(error, "_render_traceback_", None)
            parts.append("\n".join(lines()) if lines else repr(error))
        if result.result is not None:
            parts.append(repr(getattr(result.result, "data", result.result)))
    return "\n".join(parts)


def stored(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def one_line(ip: TestingShell, cell: str) -> tuple[Any, str]:
    result = ip.run_cell_quietly(cell)
    error = result.error_in_exec or result.error_before_exec
    assert isinstance(error, AmigoError), error  # a readable line, not a traceback
    return result, str(error)


def test_endpoint_key_echoed_in_401_502_and_models_appears_nowhere(
    ip: TestingShell, monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("EP_KEY", EP_KEY)
    with EchoServer() as echo:
        ip.run_cell(f"%amigo endpoint add ep {echo.url} --key-env EP_KEY")
        models = ip.run_cell("%amigo models")
        echo.mode = "401"
        r401 = ip.run_cell_quietly("%%amigo -m ep:m1\nhello")
        echo.mode = "502"
        r502 = ip.run_cell_quietly("%%amigo -m ep:m1\nhello again")
        ip.run_cell("%amigo history")
        ip.run_cell(f"%amigo export {tmp_path}/chat.md")
        ip.run_cell(f"%amigo export {tmp_path}/chat.json")
    assert echo.seen
    assert set(echo.seen) == {f"Bearer {EP_KEY}"}
    shown = seen(ip, models, r401, r502)
    assert "AuthenticationError" in shown
    assert "ServerError" in shown
    assert "ep:m-***" in shown  # the echoed model ids are listed, scrubbed
    leaks = [
        where
        for where, data in {
            "shown": shown.encode(),
            "stored": stored(home),
            "exported": stored(tmp_path),
        }.items()
        for form in {*_echoes(f"Bearer {EP_KEY}"), EP_KEY}
        if form.encode() in data
    ]
    assert leaks == []
    assert b"bad credentials" in stored(home)  # the turn and its error are kept, scrubbed


def test_a_key_with_crlf_is_stripped_and_sent(
    ip: TestingShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AmigoServer(api_key=CR_KEY) as server, EchoServer() as echo:
        monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
        monkeypatch.setenv("AMIGO_API_KEY", CR_KEY + "\r")
        monkeypatch.setenv("EP_KEY", EP_KEY + "\r\n")  # a .env file with CRLF line ends
        ip.run_cell("%%amigo\nhello")
        assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {CR_KEY}"]
        ip.run_cell(f"%amigo endpoint add ep {echo.url} --key-env EP_KEY")
        ip.run_cell("%amigo models")
    assert echo.seen == [f"Bearer {EP_KEY}"]
    assert "Echo: hello" in seen(ip)


@pytest.mark.parametrize(
    ("variable", "value", "kind"),
    [
        ("AMIGO_API_KEY", "sk-inner\r\nX-Evil: 1", "a control character"),
        ("AMIGO_API_KEY", "sk-caf\u00e9-0123456789", "a non-ASCII character"),
        ("EP_KEY", "sk-ep\x07-0123456789\t", "a control character"),
    ],
)
def test_a_key_that_cannot_be_a_header_is_refused_in_one_line(
    ip: TestingShell, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, kind: str,
    home: Path,
) -> None:  # fmt: skip
    with AmigoServer(strict_headers=False) as server:
        monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
        monkeypatch.setenv(variable, value)
        spec = {"url": server.base_url, "key_env": "EP_KEY"}
        ip.run_cell(f"%config AmigoMagics.endpoints = {{'ep': {spec!r}}}")
        result, message = one_line(ip, f"%%amigo{' -m ep:x' if variable == 'EP_KEY' else ''}\nhi")
        assert server.requests == []  # refused before sending: no retries
    assert variable in message
    assert kind in message
    assert "Copy the key again" in message
    assert "\n" not in message
    shown = seen(ip, result)
    secret_part = value[-8:]
    assert secret_part not in shown
    assert secret_part.encode() not in stored(home)
    error = result.error_in_exec
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_device_version_with_crlf_is_refused_in_one_line(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    ip.run_cell("%config AmigoMagics.device_version = '1.0.45\\r\\nX-Evil: 1'")
    _, message = one_line(ip, "%%amigo\nhello")
    assert server.requests == []  # not "could not connect", not retried
    assert message.startswith("The device_version")
    assert "cannot be sent in an HTTP header" in message
    assert "1.0.45" in message


def test_credentials_in_an_endpoint_url_are_refused_and_never_shown(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    url = server.base_url.replace("http://", f"http://alice:{PASSWORD}@")
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    add, message = one_line(ip, f"%amigo endpoint add ep {url}")
    assert "--key-env" in message
    assert "user name or password" in message
    # An endpoint set in ipython_config.py: listed without the password, and refused on use.
    ip.run_cell(f"%config AmigoMagics.endpoints = {{'ep': {url!r}}}")
    listing = ip.run_cell("%amigo endpoint list")
    models, _ = one_line(ip, "%amigo models")
    ask, _ = one_line(ip, "%%amigo -m ep:x\nhello")
    ip.run_cell("%config AmigoMagics.endpoints = {}")
    monkeypatch.setenv("AMIGO_BASE_URL", url)
    base, base_message = one_line(ip, "%%amigo\nhello")
    assert "AMIGO_API_KEY" in base_message
    shown = seen(ip, add, listing, models, ask, base)
    assert "alice" not in shown
    assert PASSWORD not in shown
    assert "***@127.0.0.1" in shown  # the list says which server, without the credentials
    assert PASSWORD.encode() not in stored(home)
    assert server.requests == []


def test_interpolation_never_sends_the_environment(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    monkeypatch.setenv("AMIGO_API_KEY", ENV_KEY)
    monkeypatch.setenv("EP_KEY", EP_KEY)
    ip.run_cell(f"%amigo endpoint add ep {server.base_url} --key-env EP_KEY")
    ip.run_cell("import os\nenv = os.environ\ncopy = dict(os.environ)")
    ip.run_cell('%%amigo\nWhy does this fail? print(f"config: {os.environ}")')
    ip.run_cell("%%amigo\nMy settings: {env} and {copy['EP_KEY']}")
    ip.run_cell("%%amigo_image\na fox called {env}")
    bodies = [r.body for r in server.requests if r.method == "POST"]
    assert len(bodies) == 3
    assert b'print(f\\"config: {os.environ}\\")' in bodies[0]  # the braces went as written
    assert b"AMIGO_HOME" in bodies[1]  # {env} was filled in, minus the keys
    for body in bodies:
        assert ENV_KEY.encode() not in body
        assert EP_KEY.encode() not in body
    for r in server.requests:
        r.headers.pop("authorization", None)
    assert ENV_KEY.encode() not in repr(server.requests).encode()
    assert ENV_KEY.encode() not in stored(home)
    assert EP_KEY.encode() not in stored(home)
    ip.user_ns.pop("env", None)
    ip.user_ns.pop("copy", None)


def test_a_line_magic_never_sends_the_environment(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    monkeypatch.setenv("AMIGO_API_KEY", ENV_KEY)
    ip.run_cell("import os")
    ip.run_cell("%amigo_image a fox called {os.environ}")
    bodies = [r.body for r in server.requests if r.method == "POST"]
    assert bodies
    assert b"{os.environ}" in bodies[0]
    assert ENV_KEY.encode() not in bodies[0]


@pytest.mark.parametrize(
    "url",
    [
        f"http://alice:{PASSWORD}@127.0.0.1:8000/v1",
        f"https://{PASSWORD}@api.example.com/v1",
        f"alice:{PASSWORD}@127.0.0.1/v1",  # no scheme: refused for that, still not shown
        f"ftp://alice:{PASSWORD}@127.0.0.1/v1",
        f"http://alice:{PASSWORD}@127.0.0.1/v1\r\nX-Evil: 1",
    ],
)
def test_a_url_with_credentials_is_refused_without_showing_them(url: str) -> None:
    from amigo_magic.config import Endpoint, Settings
    from amigo_magic.errors import ConfigError

    for settings in (
        lambda: Settings.from_env({"AMIGO_BASE_URL": url}),
        lambda: Settings(endpoints=(Endpoint("ep", url),)).validated(),
    ):
        with pytest.raises(ConfigError) as info:
            settings()
        message = str(info.value)
        assert PASSWORD not in message
        assert "\n" not in message
        assert "***@" in message


def test_a_key_echoed_inside_an_answer_is_never_shown_or_kept(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("AMIGO_BASE_URL", server.base_url)
    monkeypatch.setenv("AMIGO_API_KEY", ENV_KEY)
    # A proxy or a model that repeats the request: the key split across pieces, and encoded.
    half = len(ENV_KEY) // 2
    server.enqueue(Reply.stream(chunks=["You sent ", ENV_KEY[:half], ENV_KEY[half:], " ok"]))
    server.enqueue(Reply.stream(f"as JSON: {ENV_KEY!r} and %{ENV_KEY}"))
    first = ip.run_cell("%%amigo -o echoed\nwhat did I send?")
    second = ip.run_cell("%%amigo\nand again?")
    shown = seen(ip, first, second)
    assert "You sent *** ok" in shown
    assert ENV_KEY not in shown
    assert ENV_KEY not in str(ip.user_ns.pop("echoed"))
    assert ENV_KEY.encode() not in stored(home)
