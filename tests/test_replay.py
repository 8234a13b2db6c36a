"""Record and replay, model parameters, usage and the budget — in the in-process shell against
the loopback server (the real-kernel runs are in test_replay_kernel.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amigo_magic.cache import ReplayMissError
from amigo_magic.errors import ConfigError
from amigo_magic.usage import BudgetExceededError
from tests.amigo_server import AmigoServer, Reply
from tests.shell import Recorder, TestingShell


def chat_requests(server: AmigoServer) -> list[dict]:  # type: ignore[type-arg]
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


def final(ip: TestingShell) -> dict:  # type: ignore[type-arg]
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    return pub.final()


def failure(ip: TestingShell, cell: str) -> BaseException:
    result = ip.run_cell_quietly(cell)
    assert result.error_in_exec is not None, "the cell should have failed"
    return result.error_in_exec  # type: ignore[no-any-return]


def test_auto_records_then_answers_the_same_request_without_sending(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    server.enqueue(Reply.stream("A recorded answer with several words."))
    ip.run_cell("%%amigo --no-history -o first\nWhat is recorded?")
    assert len(chat_requests(server)) == 1
    ip.run_cell("%%amigo --no-history -o second\nWhat is recorded?")
    assert len(chat_requests(server)) == 1  # the second came from the recording
    assert ip.user_ns["second"] == ip.user_ns["first"] == "A recorded answer with several words."
    shown = final(ip)["text/plain"]
    assert shown.startswith("A recorded answer with several words.")
    assert "replayed · recorded 20" in shown
    assert "no cost" in shown
    history = ip.user_ns  # the turn is in history as usual
    ip.run_cell("_h = get_ipython().find_line_magic('amigo').__self__.session.history()")
    turns = history["_h"]
    assert [t.content for t in turns if t.role == "assistant"] == [ip.user_ns["first"]] * 2
    assert "replayed" in turns[-1].meta
    assert "replayed" not in turns[1].meta


def test_fresh_calls_again_and_records_the_new_answer(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    server.enqueue(Reply.stream("old"), Reply.stream("new"))
    ip.run_cell("%%amigo --no-history\nq")
    ip.run_cell("%%amigo --no-history --fresh\nq")
    ip.run_cell("%%amigo --no-history -o third\nq")
    assert len(chat_requests(server)) == 2
    assert ip.user_ns["third"] == "new"


def test_replay_miss_is_one_line_naming_the_difference_and_sends_nothing(
    ip: TestingShell, server: AmigoServer, tmp_path: Path
) -> None:
    cassette = tmp_path / "answers.jsonl"
    ip.run_cell(f"%config AmigoMagics.cache_file = {str(cassette)!r}")
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    ip.run_cell("%%amigo --no-history\nWhat is 2+2?")
    ip.run_cell("%config AmigoMagics.cache = 'replay'")
    before = len(server.requests)
    error = failure(ip, "%%amigo --no-history\nWhat is 2+3?")
    assert isinstance(error, ReplayMissError)
    message = str(error)
    assert "\n" not in message
    assert "the prompt differs ('What is 2+2?' recorded, now 'What is 2+3?')" in message
    assert "AmigoMagics.cache = 'auto'" in message
    error = failure(ip, "%%amigo --no-history -t 0.1\nWhat is 2+2?")
    assert "the parameters differ (temperature: '0.5' recorded, now '0.1')" in str(error)
    error = failure(ip, "%%amigo --no-history -m claude\nWhat is 2+2?")
    assert "the model differs" in str(error)
    assert len(server.requests) == before  # nothing was sent
    history = "_h = get_ipython().find_line_magic('amigo').__self__.session.history()"
    ip.run_cell(history)
    assert len(ip.user_ns["_h"]) == 2  # the refused prompts were not written either


def test_a_damaged_cache_file_is_skipped_with_a_notice_and_kept(
    ip: TestingShell, server: AmigoServer, tmp_path: Path
) -> None:
    cassette = tmp_path / "answers.jsonl"
    ip.run_cell(f"%config AmigoMagics.cache_file = {str(cassette)!r}")
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    ip.run_cell("%%amigo --no-history\nfirst")
    good = cassette.read_text()
    cassette.write_text("{not json\n" + good + '{"key": 1}')  # damaged before and after
    ip.run_cell("%%amigo --no-history\nfirst")
    assert len(chat_requests(server)) == 1  # the good line still answers
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    notices = [d.data.get("text/plain", "") for d in pub.displays]
    assert any("has 2 damaged lines" in n for n in notices)
    ip.run_cell("%%amigo --no-history\nsecond")  # a new recording is appended on its own line
    lines = cassette.read_text().splitlines()
    assert lines[0] == "{not json"
    assert lines[2] == '{"key": 1}'
    assert json.loads(lines[3])["answer"]["text"] == "Echo: second"


def test_an_unknown_cache_mode_is_refused_in_one_line(
    ip: TestingShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMIGO_CACHE", "sometimes")
    error = failure(ip, "%%amigo\nq")
    assert isinstance(error, ConfigError)
    assert "AMIGO_CACHE is 'sometimes': it must be one of off, auto, replay" in str(error)


def test_params_go_into_the_body_as_json_or_strings(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("%config AmigoMagics.params = {'top_k': 40, 'seed': 1}")
    ip.run_cell(
        "%%amigo -p seed=7 -p stop='[\"\\n\\n\"]' "
        '-p response_format=\'{"type": "json_object"}\' -p user=alice --effort high\nq'
    )
    (body,) = chat_requests(server)
    assert body["seed"] == 7
    assert body["stop"] == ["\n\n"]
    assert body["response_format"] == {"type": "json_object"}
    assert body["user"] == "alice"
    assert body["top_k"] == 40  # the default from AmigoMagics.params
    assert body["reasoning_effort"] == "high"
    ip.run_cell("_h = get_ipython().find_line_magic('amigo').__self__.session.history()")
    assert ip.user_ns["_h"][-1].meta["params"]["seed"] == 7  # kept with the turn


def test_bad_params_are_one_line_and_send_nothing(ip: TestingShell, server: AmigoServer) -> None:
    error = failure(ip, "%%amigo -p seed7\nq")
    assert "-p 'seed7' is not KEY=VALUE: write e.g. -p seed=7" in str(error)
    error = failure(ip, "%%amigo -p messages=[]\nq")
    assert "would replace what amigo_magic builds itself" in str(error)
    error = failure(ip, "%%amigo -m local -p seed=1 -p user=x -p logit_bias_typo=1\nq")
    assert "The local model (llama.cpp) does not take logit_bias_typo, user" in str(error)
    assert "\n" not in str(error)
    assert chat_requests(server) == []


def test_budget_lets_the_first_request_through_and_refuses_the_next(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("%config AmigoMagics.budget_tokens = 5")
    ip.run_cell("%%amigo\nhello there")
    assert len(chat_requests(server)) == 1
    error = failure(ip, "%%amigo\nand again")
    assert isinstance(error, BudgetExceededError)
    message = str(error)
    assert message.startswith("Budget reached: this notebook used ")
    assert "AmigoMagics.budget_tokens = 5" in message
    assert "%config" in message
    assert len(chat_requests(server)) == 1  # nothing sent
    ip.run_cell("%config AmigoMagics.budget_tokens = 0")
    ip.run_cell("%%amigo\nand again")
    assert len(chat_requests(server)) == 2


def test_usage_totals_match_what_the_server_reported(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("%%amigo\none two three")
    ip.run_cell("%%amigo -m claude\nfour five")
    ip.run_cell("%%amigo -c other\nsix")
    ip.run_cell("_u = get_ipython().find_line_magic('amigo').__self__.session.cache.usage()")
    report = ip.user_ns["_u"]
    server_prompt = server_completion = 0
    for request in chat_requests(server):  # the server's own counts (its usage chunks)
        server_prompt += sum(len(m["content"].split()) for m in request["messages"])
        server_completion += len(("Echo: " + request["messages"][-1]["content"]).split())
    rows = {row[0]: row for row in report.rows}
    assert set(rows) == {"gpt-4o-mini", "claude-3-5-sonnet-20241022"}
    prompt = sum(int(row[2].replace(",", "")) for row in rows.values())
    completion = sum(int(row[3].replace(",", "")) for row in rows.values())
    assert (prompt, completion) == (server_prompt, server_completion)
    assert rows["gpt-4o-mini"][1] == "2"
    assert rows["claude-3-5-sonnet-20241022"][1] == "1"
    from genai_prices import Usage, calc_price

    from amigo_magic.usage import dollars

    expected = 0.0
    for request in chat_requests(server):  # gpt-4o-mini's list price, request by request
        if request["model"] == "gpt-4o-mini":
            tokens = sum(len(m["content"].split()) for m in request["messages"])
            words = len(("Echo: " + request["messages"][-1]["content"]).split())
            usage = Usage(input_tokens=tokens, output_tokens=words)
            expected += float(calc_price(usage, model_ref="gpt-4o-mini").total_price)
    assert rows["gpt-4o-mini"][4] == dollars(expected)
    assert f"3 requests, {server_prompt + server_completion} tokens" in report.summary
    ip.run_cell("_u = get_ipython().find_line_magic('amigo').__self__.session.cache.usage('other')")
    assert ip.user_ns["_u"].summary.startswith("Chat 'other': 1 request,")
    ip.run_cell("%amigo usage --all")


def test_tokens_are_estimated_and_marked_when_the_server_says_nothing(
    ip: TestingShell, server: AmigoServer
) -> None:
    server.enqueue(Reply.stream(chunks=["abcdefgh"] * 10, usage=False))  # 80 characters
    ip.run_cell("%%amigo\nq")
    shown = final(ip)["text/plain"]
    assert "~20 tokens" in shown  # not the 10 chunks
    ip.run_cell("_h = get_ipython().find_line_magic('amigo').__self__.session.history()")
    answer = ip.user_ns["_h"][-1]
    assert (answer.completion_tokens, answer.meta["tokens_estimated"]) == (20, True)
    assert answer.prompt_tokens == 5  # "q": 1 token and the message's framing


def test_the_panel_honours_the_budget(server: AmigoServer, tmp_path: Path) -> None:
    import html
    import re

    from amigo_magic import ChatPanel
    from amigo_magic.config import Preferences, Settings
    from amigo_magic.runner import close_runner, get_runner
    from amigo_magic.session import ChatSession
    from amigo_magic.store import SQLiteStore
    from tests.shell import wait_until

    store = SQLiteStore(tmp_path / "h.db")
    session = ChatSession(
        store=store,
        notebook="panel.ipynb",
        runner=get_runner(),
        preferences=lambda: Preferences(budget_tokens=5),
    )
    settings = Settings(base_url=server.base_url)
    panel = ChatPanel(session=session, settings=lambda: settings)
    try:
        panel.prompt.value = "hello there"
        panel.send_button.click()
        wait_until(lambda: len(store.load("panel.ipynb", "default")) == 2, "the first answer")
        wait_until(lambda: not panel.send_button.disabled, "Send to come back")
        panel.prompt.value = "and again"
        panel.send_button.click()
        line = html.unescape(re.sub(r"<[^>]+>", "", panel.status_line.value))
        assert "Budget reached: this notebook used" in line
        assert len(chat_requests(server)) == 1  # the second was never sent
        assert len(store.load("panel.ipynb", "default")) == 2  # nor written
    finally:
        close_runner()
        store.close()


def test_pictures_count_as_requests_of_unknown_price_and_local_costs_nothing() -> None:
    from amigo_magic.history import StoredImage, Turn
    from amigo_magic.usage import report, turn_usage

    picture = Turn("assistant", "[1 picture of: a fox]", model="flux-pro",
                   images=(StoredImage("image/png", b"png", "a fox"),))  # fmt: skip
    local = Turn("assistant", "hi", model="local", prompt_tokens=10, completion_tokens=5,
                 meta={"backend": "local", "model_id": ""})  # fmt: skip
    endpoint = {"backend": "openai", "model_id": "my-model"}
    unknown = Turn("assistant", "hi", model="loop:my-model", prompt_tokens=1,
                   completion_tokens=1, meta=endpoint)  # fmt: skip
    uses = [turn_usage(t) for t in (picture, local, unknown)]
    found = report([u for u in uses if u is not None])
    costs = {row[0]: row[4] for row in found.rows}
    assert costs == {"flux-pro": "unknown", "local": "$0", "loop:my-model": "unknown"}
    assert "3 requests, 17 tokens, $0 + unknown" in found.summary


def test_a_cost_cap_refuses_once_the_known_cost_reaches_it(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("%config AmigoMagics.budget_usd = 0.000001")  # gpt-4o-mini: ~$0.000004 a cell
    ip.run_cell("%%amigo\nhello there")
    error = failure(ip, "%%amigo\nagain")
    assert isinstance(error, BudgetExceededError)
    assert str(error).startswith("Budget reached: this notebook spent $0.00000")
    assert "AmigoMagics.budget_usd = 1e-06" in str(error)
    assert len(chat_requests(server)) == 1


def test_config_and_usage_all_say_what_is_set(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    ip.run_cell("%config AmigoMagics.budget_tokens = 1000")
    config = ip.run_cell("%amigo config").result
    text = config._repr_mimebundle_()[0]["text/plain"]
    assert "auto, recordings in the history database (" in text
    assert "1000 token cap, no cost cap" in text
    ip.run_cell("%%amigo\nhello")
    everything = ip.run_cell("%amigo usage --all").result
    shown = everything._repr_mimebundle_()[0]["text/plain"]
    assert shown.startswith("Every notebook: 1 request, ")


def test_unreadable_recordings_are_a_miss_with_a_notice(
    ip: TestingShell, server: AmigoServer
) -> None:
    import os
    import sqlite3

    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    ip.run_cell("%%amigo --no-history\nfirst")
    db = sqlite3.connect(Path(os.environ["AMIGO_HOME"]) / "history.db")
    db.execute("DROP TABLE recordings")  # damaged under the running kernel
    db.commit()
    db.close()
    ip.run_cell("%%amigo --no-history\nfirst")  # asked again, not an error
    assert len(chat_requests(server)) == 2
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    notices = [d.data.get("text/plain", "") for d in pub.displays]
    assert any("cannot be read (no such table: recordings); none are used" in n for n in notices)


def test_pictures_replay_from_their_bytes_and_a_new_prompt_misses(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    ip.run_cell("%amigo_image a fox")
    drawn = final(ip)["image/png"]
    requests = len(server.requests)  # the image call and its picture's download
    ip.run_cell("%config AmigoMagics.cache = 'replay'")
    ip.run_cell("%amigo_image a fox")
    assert final(ip)["image/png"] == drawn
    assert len(server.requests) == requests
    error = failure(ip, "%amigo_image a wolf")
    assert "the prompt differs ('a fox' recorded, now 'a wolf')" in str(error)
    assert len(server.requests) == requests


def test_requests_that_keep_no_turn_are_charged_to_the_budget(
    ip: TestingShell, server: AmigoServer
) -> None:
    from amigo_magic.protocol import Usage

    ip.run_cell("_s = get_ipython().find_line_magic('amigo').__self__.session")
    session = ip.user_ns["_s"]
    target = session.resolve("gpt-4o-mini")
    messages = [{"role": "user", "content": "Say a"}]
    session.cache.charge(target, messages, Usage(3, 3, 6), "Echo: Say a")  # a map item's
    session.cache.charge(target, messages, None, "Echo: Say b")  # no usage: estimated
    report = session.cache.usage()
    assert report.rows == [("gpt-4o-mini", "2", "~9", "~6", report.rows[0][4])]  # 3 + 2 + 4
    ip.run_cell("%config AmigoMagics.budget_tokens = 5")
    error = failure(ip, "%%amigo\nand now?")
    assert isinstance(error, BudgetExceededError)
    assert "used 15 tokens in 2 requests" in str(error)
    assert chat_requests(server) == []


def test_a_key_in_a_parameter_is_sent_but_never_recorded_or_kept(
    ip: TestingShell, server: AmigoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    key = "sk-replay-3c1f9a7e5b2d4c68"
    monkeypatch.setenv("AMIGO_API_KEY", key)
    cassette = tmp_path / "answers.jsonl"
    ip.run_cell(f"%config AmigoMagics.cache_file = {str(cassette)!r}")
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    ip.run_cell(f"%%amigo --no-history -p user={key}\nq")
    (body,) = chat_requests(server)
    assert body["user"] == key  # sent as asked
    home = Path(os.environ["AMIGO_HOME"])
    kept = b"".join(p.read_bytes() for p in [cassette, *home.rglob("*")] if p.is_file())
    assert key.encode() not in kept
    ip.run_cell(f"%%amigo --no-history -p user={key}\nq")  # still replays: the key is the request's
    assert len(chat_requests(server)) == 1


def test_side_by_side_answers_are_charged_recorded_and_replayed(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("%config AmigoMagics.cache = 'auto'")
    ip.run_cell("%%amigo --no-history -m claude,gpt-4o\nWhich is better?")
    assert len(chat_requests(server)) == 2
    ip.run_cell("%%amigo --no-history -m claude,gpt-4o\nWhich is better?")
    assert len(chat_requests(server)) == 2  # both answers came from their recordings
    ip.run_cell("%config AmigoMagics.budget_tokens = 5")
    error = failure(ip, "%%amigo\nand now?")
    assert isinstance(error, BudgetExceededError)
    assert "in 2 requests" in str(error)  # the two that were sent, kept or not; no replay
    ip.run_cell("%amigo keep 1")  # its turn counts now, instead of its charge
    error = failure(ip, "%%amigo -m claude,gpt-4o\nand now?")
    assert "in 2 requests" in str(error)
    assert len(chat_requests(server)) == 2


def test_a_cache_file_names_the_notebook_but_not_where_it_lives(tmp_path: Path) -> None:
    from amigo_magic.cache import FileRecordings, Recording

    file = tmp_path / "answers.jsonl"
    recordings = FileRecordings(file)
    notebook = "/home/alice/secret-project/analysis.ipynb"
    recordings.record(Recording(key="k", request={"messages": []}, text="hi", notebook=notebook))
    saved = file.read_text()
    assert "analysis.ipynb" in saved
    assert "alice" not in saved
    assert "secret-project" not in saved
    assert recordings.lookup("k") is not None
