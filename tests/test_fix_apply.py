"""``%amigo fix --apply`` in a real kernel: the fix as a diff in the output, and the fixed code
in a ``set_next_input`` payload (a new cell below, not run)."""

from __future__ import annotations

from tests.amigo_server import AmigoServer, Reply
from tests.kernel import Kernel

FIXED = "total = sum(int(x) for x in ['1', '2'])\nprint(total)"


def test_fix_apply_puts_the_fixed_code_in_a_new_cell_and_shows_a_diff(
    kernel: Kernel, server: AmigoServer
) -> None:
    failed = kernel.execute("total = sum(['1', '2'])\nprint(total)")
    assert failed.status == "error"
    server.enqueue(
        Reply.stream(
            f"`sum` adds numbers, not strings.\n\n```python\n{FIXED}\n```\n<script>x</script>"
        )
    )
    run = kernel.execute("%amigo fix --apply")
    assert run.status == "ok"
    (payload,) = run.reply["content"]["payload"]
    assert payload["source"] == "set_next_input"
    assert payload["text"] == FIXED
    assert payload["replace"] is False
    prompt = server.requests[0].json["messages"][-1]["content"]
    assert "total = sum(['1', '2'])" in prompt
    assert "TypeError" in prompt
    assert "one fenced python code block" in prompt
    shown = [m["content"]["data"] for m in run.of_type("display_data")]
    (diff,) = [d for d in shown if "amigo-diff" in d.get("text/html", "")]
    assert "-total = sum(['1', '2'])" in diff["text/plain"]
    assert "+total = sum(int(x) for x in ['1', '2'])" in diff["text/plain"]
    assert "<script" not in diff["text/html"]
    assert (
        '<span style="color:#1a7f37">+total = sum(int(x) for x in [&#x27;1&#x27;'
        in diff["text/html"]
    )
    assert any("new cell below" in d["text/plain"] for d in shown)


def test_fix_apply_without_a_code_block_changes_nothing(
    kernel: Kernel, server: AmigoServer
) -> None:
    assert kernel.execute("1 / 0").status == "error"
    server.enqueue(Reply.stream("Do not divide by zero."))
    run = kernel.execute("%amigo fix --apply")
    assert run.status == "error"
    assert run.reply["content"]["evalue"] == (
        "The answer holds no code block to apply; nothing was changed."
    )
    assert not run.reply["content"].get("payload")
