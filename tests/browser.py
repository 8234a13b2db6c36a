"""Browser-test harness: a throwaway JupyterLab on 127.0.0.1, driven in headless Chromium.

Use it from a test module with ``pytest_plugins = ["tests.browser"]``; that brings in:

- ``lab`` (fixture): a :class:`Lab` serving ``tmp_path / "lab"``, whose kernels talk to the
  loopback ``server`` (``AMIGO_BASE_URL=server.base_url``).
- ``page`` (fixture): a Playwright sync ``Page`` in Debian's Chromium (1280x900), closed after.
- :func:`jupyterlab` (context manager) for a lab with another root or environment, and
  :func:`chromium_page` for a browser outside the fixtures.
- :class:`Notebook`: open a notebook written up front (:meth:`Lab.write_notebook`), run all
  cells from the Run menu, wait for a cell to finish or show some text, read its output.

Nothing of the user's is read (Jupyter's config, data, runtime, settings and workspace
directories, and IPython's, are all under the lab's root), no request leaves 127.0.0.1 (Chromium
resolves no other host, and a test that sends one fails), and a failing test's report ends with
the lab's log tail and the browser's console errors.

PYTEST_DONT_REWRITE: test modules import helpers from here before ``pytest_plugins`` registers
it, and pytest would warn that it can no longer rewrite it (the module has no bare asserts).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, ViewportSize

    from tests.amigo_server import AmigoServer

__all__ = [
    "CHROMIUM",
    "TIMEOUT",
    "Lab",
    "Notebook",
    "chromium_page",
    "jupyterlab",
    "lab",
    "notebook7",
    "page",
]

#: Debian's Chromium. Playwright's own browser builds cannot be downloaded here.
CHROMIUM = os.environ.get("BROWSER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    # Every host name but the loopback fails to resolve: nothing can leave the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
)
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
#: Seconds any single wait in the harness may take (starting the lab, a cell's output, ...).
TIMEOUT = 60.0

# Lab settings written before start: no news prompt or update check (both would reach the
# internet, and the prompt covers the notebook), and every cell kept in the DOM, so what a test
# reads does not depend on the scroll position.
_LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

_KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
_DROPPED_ENV_PREFIXES = ("AMIGO_", "JPY_", "JUPYTER", "IPYTHON")
_DROPPED_ENV = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}
)
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# What a failing test's report shows: every lab and page alive during it (see the hook below).
_live_labs: list[Lab] = []
_live_pages: list[_PageLog] = []


# --------------------------------------------------------------------------------------------
# JupyterLab


@dataclass
class Lab:
    """A running JupyterLab. ``url(path)`` is an address with the token."""

    base_url: str  # "http://127.0.0.1:PORT/"
    token: str
    root_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    app: str = "lab"  # "lab": JupyterLab; "notebook": Notebook 7 (the same components, one page)

    def url(self, path: str = "lab", **query: str) -> str:
        """``http://127.0.0.1:PORT/<path>?token=...`` (plus ``query``)."""
        path, _, existing = path.lstrip("/").partition("?")
        params = [*urllib.parse.parse_qsl(existing), *query.items(), ("token", self.token)]
        return f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server's (and its kernels') output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no lab log: {error})"
        return "\n".join(text.splitlines()[-lines:])

    def write_notebook(self, name: str, cells: Sequence[str | nbformat.NotebookNode]) -> Path:
        """Write ``<root>/<name>`` (``.ipynb`` added if missing) with a Python 3 kernelspec.

        A string is a code cell; pass ``nbformat.v4.new_markdown_cell(...)`` for markdown.
        """
        if not name.endswith(".ipynb"):
            name += ".ipynb"
        notebook = nbformat.v4.new_notebook(
            metadata={"kernelspec": dict(_KERNELSPEC), "language_info": {"name": "python"}}
        )
        notebook.cells = [
            nbformat.v4.new_code_cell(cell) if isinstance(cell, str) else cell for cell in cells
        ]
        path = self.root_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, path)
        return path

    def open(self, page: Page, name: str) -> Notebook:
        """Open ``/lab/tree/<name>`` in ``page`` and wait until its kernel is idle."""
        if not name.endswith(".ipynb"):
            name += ".ipynb"
        notebook = Notebook(self, page, name)
        notebook.reopen()
        return notebook

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"{message}\n--- JupyterLab log (tail) ---\n{self.log_tail()}")


def _lab_environment(state: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment less AMIGO_*, Jupyter's and proxies; every Jupyter dir private."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_DROPPED_ENV_PREFIXES) and name not in _DROPPED_ENV
    }
    dirs = {
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "JUPYTERLAB_SETTINGS_DIR": "settings",
        "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
        "IPYTHONDIR": "ipython",
        "AMIGO_HOME": "amigo-home",
    }
    for variable, sub in dirs.items():
        (state / sub).mkdir(parents=True, exist_ok=True)
        clean[variable] = str(state / sub)
    clean.update(
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
        JUPYTER_PLATFORM_DIRS="1",  # no deprecation notice in the log
    )
    clean.update(env)
    return clean


def _write_settings(settings_dir: Path) -> None:
    for plugin, values in _LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _get(url: str, timeout: float) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@contextlib.contextmanager
def jupyterlab(root_dir: Path, env: Mapping[str, str], app: str = "lab") -> Iterator[Lab]:
    """Run ``python -m jupyter lab`` (``app="notebook"``: ``jupyter notebook``, Notebook 7)
    serving ``root_dir`` on 127.0.0.1 until the block ends.

    ``env`` is added to the server's environment, which its kernels inherit (pass
    ``AMIGO_BASE_URL``). Jupyter's own state lives in ``root_dir/.lab-state`` (hidden from the
    file browser). On exit the process group is terminated (killed after 10 s) and reaped.
    """
    root_dir.mkdir(parents=True, exist_ok=True)
    state = root_dir / ".lab-state"
    environment = _lab_environment(state, env)
    _write_settings(Path(environment["JUPYTERLAB_SETTINGS_DIR"]))
    token = secrets.token_hex(16)
    app_class = "LabApp" if app == "lab" else "JupyterNotebookApp"
    command = [
        sys.executable, "-m", "jupyter", app,
        "--no-browser",
        "--ip=127.0.0.1",
        "--port=0",  # the server picks a free port and writes it to its runtime file
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.disable_check_xsrf=True",
        "--ServerApp.terminals_enabled=False",
        f"--{app_class}.expose_app_in_browser=True",  # window.jupyterapp: kernel state, commands
    ]  # fmt: skip
    if app == "lab":
        command += [
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log_path = state / "lab.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=root_dir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended as one
        )
    lab: Lab | None = None
    try:
        lab = _wait_for_server(process, Path(environment["JUPYTER_RUNTIME_DIR"]), token, log_path)
        lab.root_dir = root_dir
        lab.app = app
        _live_labs.append(lab)
        yield lab
    finally:
        if lab is not None:
            _live_labs.remove(lab)
        _stop(process)


def _wait_for_server(
    process: subprocess.Popen[bytes], runtime_dir: Path, token: str, log_path: Path
) -> Lab:
    deadline = time.monotonic() + TIMEOUT
    lab: Lab | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if lab is None:
            for info_file in runtime_dir.glob("jpserver-*.json"):
                with contextlib.suppress(OSError, ValueError):
                    info = json.loads(info_file.read_text())
                    base = f"http://127.0.0.1:{int(info['port'])}/"
                    lab = Lab(base, token, Path(info["root_dir"]), log_path, process)
        if lab is not None:
            with contextlib.suppress(OSError):
                if _get(lab.url("api/status"), timeout=2.0) == 200:
                    return lab
        time.sleep(0.1)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])
    _stop(process)
    why = f"exited with {process.returncode}" if process.returncode is not None else "timed out"
    raise RuntimeError(f"JupyterLab did not start ({why}). Log tail:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the server shuts its kernels down
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# Chromium


@dataclass
class _PageLog:
    """What the browser said: console errors, uncaught exceptions, off-machine requests."""

    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def on_console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console.{message.type}: {message.text}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"page error: {error}")

    def on_request(self, request: Any) -> None:
        url = urllib.parse.urlsplit(request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in _LOOPBACK_HOSTS:
            self.outside.append(request.url)


@contextlib.contextmanager
def chromium_page(user_data_dir: Path) -> Iterator[Page]:
    """A Playwright sync ``Page`` in Debian's Chromium with a fresh profile in ``user_data_dir``.

    Raises if a request to a host other than the loopback was attempted.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extra installs it
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"No Chromium at {CHROMIUM}: apt-get install chromium (never playwright install)"
        )
    log = _PageLog()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=CHROMIUM,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport=VIEWPORT,
            service_workers="block",
        )
        try:
            context.set_default_timeout(TIMEOUT * 1000)
            context.on("request", log.on_request)
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", log.on_console)
            page.on("pageerror", log.on_page_error)
            _live_pages.append(log)
            try:
                yield page
            finally:
                _live_pages.remove(log)
        finally:
            context.close()
    if log.outside:
        raise AssertionError(f"The browser tried to reach other hosts: {log.outside}")


# --------------------------------------------------------------------------------------------
# A notebook in the page

_EXECUTED = re.compile(r"^\[\d+\]:$")

_KERNEL_STATE_JS = """() => {
  const app = window.jupyterapp;
  const widget = app && app.shell.currentWidget;
  const context = widget && widget.sessionContext;
  const kernel = context && context.session && context.session.kernel;
  return kernel ? `${kernel.status}/${kernel.connectionStatus}` : 'none';
}"""

_ANSWER_JS = """(cell) => {
  const output = cell.querySelector('.jp-OutputArea-output');
  if (!output) return {live: false, text: ''};
  const copy = output.cloneNode(true);
  copy.querySelectorAll('.amigo-status').forEach((s) => s.remove());
  return {live: !!output.querySelector('.amigo-live'), text: copy.innerText.trim()};
}"""


class Notebook:
    """One open notebook: run it from the menu, wait on its cells, read their outputs.

    Cells are counted from 0 and include markdown cells.
    """

    def __init__(self, lab: Lab, page: Page, name: str) -> None:
        self.lab, self.page, self.name = lab, page, name

    # -- locators ------------------------------------------------------------------------------

    @property
    def panel(self) -> Locator:
        return self.page.locator(".jp-NotebookPanel:visible")

    def cell(self, index: int) -> Locator:
        return self.panel.locator(".jp-Notebook-cell").nth(index)

    def outputs(self, index: int | None = None) -> Locator:
        """The rendered outputs of cell ``index`` (of every cell when ``None``)."""
        scope = self.panel if index is None else self.cell(index)
        return scope.locator(".jp-OutputArea-output")

    # -- actions -------------------------------------------------------------------------------

    def reopen(self) -> None:
        """(Re)load the page at ``/lab/tree/<name>`` (Notebook 7: ``/notebooks/<name>``) and
        wait for cells and an idle kernel."""
        where = "lab/tree" if self.lab.app == "lab" else "notebooks"
        self.page.goto(self.lab.url(f"{where}/{urllib.parse.quote(self.name)}"))
        self.wait(
            lambda: self.panel.locator(".jp-Notebook-cell").first.wait_for(state="visible"),
            f"{self.name} did not open",
        )
        self.wait_kernel_idle()

    def command(self, command: str, args: Mapping[str, Any] | None = None) -> Any:
        """Run a JupyterLab command by id (``application:toggle-left-area``, ...)."""
        return self.page.evaluate(
            "([id, args]) => window.jupyterapp.commands.execute(id, args)", [command, args or {}]
        )

    def menu(self, menu: str, item: str) -> None:
        """Click ``menu`` in the menu bar, then ``item`` in it (as a user would)."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
        self.page.locator(
            ".lm-Menu:visible .lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")
        ).click()

    def run_all(self) -> None:
        """Run → Run All Cells."""
        self.menu("Run", "Run All Cells")

    def save(self) -> None:
        """Ctrl+S, then wait until the tab no longer shows unsaved changes."""
        self.panel.locator(".jp-Notebook").focus()
        self.page.keyboard.press("Escape")  # command mode
        self.page.keyboard.press("Control+s")
        tab = self.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
        self.wait(
            lambda: tab.and_(self.page.locator(".jp-mod-dirty")).wait_for(state="detached"),
            f"{self.name} was not saved",
        )

    # -- waits ---------------------------------------------------------------------------------

    def wait(self, action: Callable[[], Any], message: str | Callable[[], str]) -> Any:
        """Run a Playwright wait; a timeout fails with ``message`` and the lab's log tail."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            return action()
        except (PlaywrightError, AssertionError) as error:
            text = message() if callable(message) else message
            raise self.lab.fail(f"{text}: {error}") from None

    def kernel_state(self) -> str:
        """``"<status>/<connection>"`` of the notebook's kernel, e.g. ``"idle/connected"``."""
        return str(self.page.evaluate(_KERNEL_STATE_JS))

    def wait_kernel_idle(self, timeout: float = TIMEOUT) -> None:
        self.wait(
            lambda: self.page.wait_for_function(
                f"({_KERNEL_STATE_JS})() === 'idle/connected'", timeout=timeout * 1000
            ),
            lambda: f"the kernel of {self.name} did not become idle ({self.kernel_state()})",
        )

    def wait_executed(self, *indexes: int, timeout: float = TIMEOUT) -> None:
        """Wait until each code cell shows an execution count (``[3]:``) rather than ``[*]:``.

        Meant for a notebook written without outputs; with no ``indexes``, every code cell.
        """
        from playwright.sync_api import expect

        code_cells = self.panel.locator(".jp-CodeCell")
        if not indexes:
            cells = [code_cells.nth(i) for i in range(code_cells.count())]
        else:
            cells = [self.cell(i) for i in indexes]
        for number, cell in enumerate(cells):
            prompt: Locator = cell.locator(".jp-InputArea-prompt")

            def executed(prompt: Locator = prompt) -> None:
                expect(prompt).to_have_text(_EXECUTED, timeout=timeout * 1000)

            label = indexes[number] if indexes else f"code cell {number}"
            self.wait(executed, f"cell {label} of {self.name} did not finish running")

    def wait_output(
        self, index: int, text: str | re.Pattern[str], timeout: float = TIMEOUT
    ) -> Locator:
        """Wait until cell ``index``'s outputs contain ``text``; return those outputs."""
        from playwright.sync_api import expect

        outputs = self.outputs(index)
        self.wait(
            lambda: expect(outputs.filter(has_text=text).first).to_be_visible(
                timeout=timeout * 1000
            ),
            lambda: (
                f"cell {index} of {self.name} never showed {text!r} "
                f"(it shows {self.output_text(index)!r})"
            ),
        )
        return outputs

    # -- reading -------------------------------------------------------------------------------

    def output_text(self, index: int) -> str:
        """The visible text of cell ``index``'s outputs, joined by blank lines."""
        return "\n\n".join(self.outputs(index).all_inner_texts())

    def output_html(self, index: int) -> str:
        """The inner HTML of cell ``index``'s outputs, joined by newlines."""
        outputs = self.outputs(index)
        return "\n".join(outputs.nth(i).inner_html() for i in range(outputs.count()))

    def answer(self, index: int) -> tuple[bool, str]:
        """An ``%%amigo`` answer in cell ``index``: (still streaming?, text without status line).

        ``(False, "")`` while the cell has no output.
        """
        state = self.cell(index).evaluate(_ANSWER_JS)
        return bool(state["live"]), str(state["text"])


# --------------------------------------------------------------------------------------------
# Fixtures and the failure report


@pytest.fixture
def lab(tmp_path: Path, server: AmigoServer) -> Iterator[Lab]:
    """A JupyterLab serving ``tmp_path / "lab"`` whose kernels use the loopback server."""
    with jupyterlab(tmp_path / "lab", {"AMIGO_BASE_URL": server.base_url}) as running:
        yield running


@pytest.fixture
def notebook7(tmp_path: Path, server: AmigoServer) -> Iterator[Lab]:
    """Notebook 7 (``jupyter notebook``) serving ``tmp_path / "nb7"``, on the loopback server."""
    with jupyterlab(
        tmp_path / "nb7", {"AMIGO_BASE_URL": server.base_url}, app="notebook"
    ) as running:
        yield running


@pytest.fixture
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """A Playwright ``Page`` in headless Chromium (fresh profile, 1280x900), closed after."""
    with chromium_page(tmp_path_factory.mktemp("chromium-profile")) as opened:
        yield opened


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report gets the lab's log tail and the browser's console errors."""
    report = yield
    if report.failed:
        for running in _live_labs:
            report.sections.append(("JupyterLab log (tail)", running.log_tail()))
        for log in _live_pages:
            if log.errors:
                report.sections.append(("browser console", "\n".join(log.errors[-40:])))
    return report
