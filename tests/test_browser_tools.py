"""The panel's tool approval as a user sees it: JupyterLab in headless Chromium, the loopback
server behind. The model's call waits in the panel with Approve / Deny; Approve runs the
notebook's function in the kernel, and the answer goes on with its result."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.amigo_server import AmigoServer, Reply
from tests.browser import Lab
from tests.test_browser_panel import Panel, _collapse_left_sidebar, _run_cell
from tests.test_tools import ADD, tool_call_stream, tool_messages

pytest_plugins = ["tests.browser"]


def test_approve_and_deny_in_the_panel_in_jupyterlab(
    lab: Lab, page: Page, server: AmigoServer
) -> None:
    lab.write_notebook(
        "tools",
        ["%load_ext amigo_magic", ADD, "%amigo_panel --chat tools -T add", "print(calls)"],
    )
    notebook = lab.open(page, "tools")
    _collapse_left_sidebar(notebook)
    _run_cell(notebook, 3, "notebook:run-all-above")
    notebook.wait_executed(0, 1, 2)
    panel = Panel(notebook, 2)
    approval = panel.root.locator(".amigo-approval")
    expect(panel.root).to_be_visible()
    expect(approval).to_be_hidden()

    # The model calls add: the call waits in the panel, with its arguments; nothing runs yet.
    server.enqueue(tool_call_stream(("add", '{"a": 2, "b": 3}')), Reply.stream("It is **5**."))
    panel.ask("What is 2 + 3? Use the tool.")
    expect(approval).to_be_visible()
    expect(approval).to_contain_text("Run add(a=2, b=3)?")
    assert len(server.requests) == 1
    approval.locator("button", has_text="Approve").click()
    panel.wait_idle()
    expect(approval).to_be_hidden()
    expect(panel.newest().locator(".amigo-body")).to_contain_text("It is 5.")
    calls = panel.newest().locator("details.amigo-tools")
    expect(calls.locator("summary")).to_have_text("🔧 1 tool call")
    assert tool_messages(server.requests[1])[0]["content"] == "5"
    _run_cell(notebook, 3)
    notebook.wait_output(3, "[(2, 3)]")

    # Deny: the function is not called and the model is told so.
    server.enqueue(tool_call_stream(("add", '{"a": 7, "b": 1}')), Reply.stream("Understood."))
    panel.ask("And 7 + 1?")
    expect(approval).to_contain_text("Run add(a=7, b=1)?")
    approval.locator("button", has_text="Deny").click()
    panel.wait_idle()
    assert tool_messages(server.requests[3])[0]["content"].startswith("The user did not allow")
    _run_cell(notebook, 3)
    notebook.wait_output(3, "[(2, 3)]")
    assert "(7, 1)" not in notebook.output_text(3)
