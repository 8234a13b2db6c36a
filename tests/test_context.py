"""The context views (a frame, an array, a collection, an exception, code, an object's own
description), their budget, and what ``{name}``, ``--dry-run`` and the status line make of them."""

from __future__ import annotations

import logging
import subprocess
import sys
import tracemalloc
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

from amigo_magic import context
from amigo_magic.context import Filled, Preview, estimate_tokens, register, summary, view
from amigo_magic.errors import ConfigError
from amigo_magic.interpolate import interpolate
from tests.amigo_server import AmigoServer, Reply
from tests.shell import Recorder, TestingShell


def frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.arange(rows),
            "price": np.linspace(0.5, 99.5, rows),
            "name": [f"item{i}" for i in range(rows)],
            "when": pd.date_range("2024-01-01", periods=rows, freq="h"),
            "qty": np.arange(rows) % 7,
        }
    )


@pytest.fixture(autouse=True)
def _no_registrations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "_registered", [])


# -- frames and series ---------------------------------------------------------------------------


def test_a_frame_is_its_shape_dtypes_nulls_ranges_and_a_sample_not_its_rows() -> None:
    df = frame(10_000)
    df.loc[3, "price"] = None
    text, kind = view(df, 2000)
    assert kind == "dataframe"
    assert "10,000 rows, 5 columns" in text
    for name, dtype in df.dtypes.items():
        assert f"{name}  " in text
        assert str(dtype) in text
    assert "1 null" in text  # price
    assert "0 … 9999" in text  # the id range
    assert "item0" in text
    assert "item9999" in text
    assert "item5000" not in text
    assert "… 9,990 more rows" in text
    assert estimate_tokens(text) <= 2000


def test_a_small_budget_drops_sample_rows_before_columns() -> None:
    text, _ = view(frame(10_000), 120)
    assert estimate_tokens(text) <= 120
    assert all(name in text for name in ("id", "price", "name", "when", "qty"))
    assert "… 9,998 more rows" in text  # one row from each end is what fits


def test_a_wide_frame_says_how_many_columns_it_left_out() -> None:
    wide = pd.DataFrame(np.zeros((3, 400)), columns=[f"col{i}" for i in range(400)])
    text, _ = view(wide, 500)
    assert estimate_tokens(text) <= 500
    assert "3 rows, 400 columns" in text
    assert "more columns" in text


def test_a_series_view() -> None:
    series = pd.Series(np.arange(1000, dtype=float), name="load")
    text, kind = view(series)
    assert kind == "series"
    assert "'load': 1,000 values, dtype float64, 0 null, range 0 … 999" in text
    assert "… 990 more values" in text


def test_building_a_big_frames_view_never_copies_it() -> None:
    df = frame(1_000_000)
    size = int(df.memory_usage(deep=True).sum())
    tracemalloc.start()
    try:
        text, _ = view(df)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "1,000,000 rows" in text
    assert peak < size / 20, (peak, size)  # a column's null mask at most, never the frame


def test_no_library_is_imported_for_a_view() -> None:
    code = (
        "import sys; from amigo_magic.context import view; "
        "view(list(range(100))); view({1: 2}); view(ValueError('x')); view(view); "
        "print(sorted(m for m in ('pandas', 'numpy', 'polars', 'IPython') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_lookalike_type_is_not_taken_for_pandas_when_pandas_is_not_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = type("DataFrame", (), {"__module__": "pandas.core.frame", "__str__": lambda s: "fake"})
    monkeypatch.delitem(sys.modules, "pandas")
    assert view(fake()) == ("fake", "value")


def test_a_polars_frame_by_its_type_name(monkeypatch: pytest.MonkeyPatch) -> None:
    class Nulls:
        def row(self, index: int) -> tuple[int, ...]:
            return (0, 2)

    class Head:
        def __init__(self, n: int) -> None:
            self.n = n

        def __str__(self) -> str:
            return f"<{self.n} rows>"

    class DataFrame:
        shape = (50_000, 2)
        schema: ClassVar[dict[str, str]] = {"a": "Int64", "b": "String"}

        def null_count(self) -> Nulls:
            return Nulls()

        def head(self, n: int) -> Head:
            return Head(n)

        tail = head

    DataFrame.__module__ = "polars.dataframe.frame"
    monkeypatch.setitem(sys.modules, "polars", sys)  # "imported by the user"
    text, kind = view(DataFrame())
    assert kind == "dataframe"
    assert "polars.DataFrame: 50,000 rows, 2 columns" in text
    assert "b  String  2 null" in text
    assert "<5 rows>" in text
    assert "… 49,990 more rows" in text


# -- arrays, collections, exceptions, code, plain values ---------------------------------------


def test_an_array_is_its_shape_dtype_range_and_a_few_values() -> None:
    text, kind = view(np.arange(3000.0).reshape(1000, 3))
    assert kind == "array"
    assert "shape (1000, 3), dtype float64, range 0 … 2999" in text
    assert "..." in text
    assert "… 2,982 more values" in text
    small, _ = view(np.array(["a", "b"]))
    assert "dtype <U1" in small
    assert "range" not in small


def test_a_short_collection_is_sent_as_str() -> None:
    assert view([1, 2, 3]) == ("[1, 2, 3]", "collection")
    assert view({"a": 1}) == ("{'a': 1}", "collection")


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (list(range(10_000)), "items"),
        ({i: str(i) for i in range(10_000)}, "keys"),
        (set(range(10_000)), "items"),
        (tuple(range(10_000)), "items"),
    ],
)
def test_a_long_collection_is_its_length_and_a_bounded_sample(value: Any, what: str) -> None:
    text, _ = view(value, 200)
    assert estimate_tokens(text) <= 200
    assert f"of 10,000 {what}, the first" in text
    shown = int(text.split("the first ")[1].split(":")[0])
    assert f"… {10_000 - shown:,} more {what}" in text


def test_an_exception_is_its_traceback_keeping_the_end_when_long() -> None:
    def fail() -> None:
        raise KeyError("the missing key " + "k" * 5000 + " END")

    try:
        fail()
    except KeyError as error:
        caught = error
    text, kind = view(caught, 300)
    assert kind == "exception"
    assert estimate_tokens(text) <= 300
    assert text.startswith("… ")
    assert "earlier characters left out" in text
    assert text.endswith(" END'")
    whole, _ = view(caught)
    assert whole.startswith("Traceback (most recent call last):")
    assert "in fail" in whole
    short, _ = view(ValueError("bad input"))
    assert short == "ValueError: bad input"


def helper(x: int, *, scale: float = 2.0) -> float:
    """Scale ``x``."""
    return x * scale


def test_a_function_or_class_is_its_signature_and_source() -> None:
    text, kind = view(helper)
    assert kind == "code"
    assert text.startswith("function helper(x: 'int', *, scale: 'float' = 2.0) -> 'float'")
    assert "return x * scale" in text
    built, _ = view(len)
    assert built.startswith("function len(obj, /) (no source found)")
    assert "Return the number of items" in built
    cls, _ = view(Preview)
    assert cls.startswith("class Preview(")
    assert "def __str__" in cls


def test_strings_are_sent_whole_and_other_values_within_the_budget() -> None:
    long = "x" * 100_000
    assert view(long, 50) == (long, "text")
    big = type("Big", (), {"__str__": lambda s: "y" * 100_000})()
    text, kind = view(big, 50)
    assert kind == "value"
    assert estimate_tokens(text) <= 50
    assert text.endswith(f"\n… {100_000 - (200 - 48):,} more characters left out")


# -- an object's own description, and registered views -----------------------------------------


class Described:
    def _repr_llm_(self) -> str:
        return "a sales table: 3 regions, Q1 to Q4"

    def __str__(self) -> str:
        return "SHOULD NOT BE SENT"


class Bundled:
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return {"text/plain": "plain", "text/llm+plain": "for the model"}, {}


class FailingDescription:
    def _repr_llm_(self) -> str:
        raise RuntimeError("broken")

    def __str__(self) -> str:
        return "the fallback"


def test_an_object_describes_itself() -> None:
    assert view(Described()) == ("a sales table: 3 regions, Q1 to Q4", "described")
    assert view(Bundled()) == ("for the model", "described")
    assert view(FailingDescription()) == ("the fallback", "value")
    text, _ = view(type("Long", (), {"_repr_llm_": lambda s: "z" * 50_000})(), 100)
    assert estimate_tokens(text) <= 100
    assert "more characters left out" in text


def test_register_by_type_or_by_name_wins_over_the_built_in_views() -> None:
    register(list, lambda value, budget: f"a list of {len(value)} (budget {budget})")
    assert view([1, 2], 77) == ("a list of 2 (budget 77)", "registered")
    register("Described", lambda value, budget: "by name")
    assert view(Described())[0] == "a sales table: 3 regions, Q1 to Q4"  # its own comes first
    register("tests.test_context.FailingDescription", lambda value, budget: "by full name")
    assert view(FailingDescription()) == ("by full name", "registered")


@pytest.mark.parametrize("budget", [32, 64, 200, 1000, 4000])
def test_no_view_exceeds_its_budget(budget: int) -> None:
    values: list[Any] = [
        frame(5000),
        frame(5000)["name"],
        np.arange(100_000).reshape(100, 1000),
        list(range(50_000)),
        {str(i): list(range(30)) for i in range(5000)},
        ValueError("e" * 40_000),
        Preview,
        type("L", (), {"_repr_llm_": lambda s: "q\n" * 30_000})(),
    ]
    for value in values:
        text, kind = view(value, budget)
        assert estimate_tokens(text) <= budget, (kind, budget, len(text))
        if text != view(value, 10**9)[0]:  # something was left out: it says so
            assert "left out" in text or "… " in text or "no sample rows" in text, (kind, text)


# -- interpolation, the summary, the message builder ----------------------------------------------


def test_interpolation_fills_views_and_reports_them() -> None:
    filled: list[Filled] = []
    out = interpolate(
        "Look at {df} and {Err[7]}", {"df": frame(100), "Err": {7: "Traceback…"}}, filled=filled
    )
    assert out.startswith("Look at \npandas.DataFrame: 100 rows, 5 columns")  # on its own lines
    assert out.endswith("… 90 more rows\n and Traceback…")
    assert [(f.field, f.kind) for f in filled] == [("{df}", "dataframe"), ("{Err[7]}", "text")]
    assert summary(filled) == f"context: 2 objects · ~{sum(f.tokens for f in filled)} tokens"
    assert summary([Filled("{x}", "value", 2400)]) == "context: 1 object · ~2.4k tokens"
    assert summary([]) is None


def test_a_secret_inside_a_view_is_scrubbed() -> None:
    df = pd.DataFrame({"key": ["sk-secret-123456"] * 3})
    assert "sk-secret" not in interpolate("{df}", {"df": df}, ["sk-secret-123456"])


def test_a_view_that_fails_is_one_line() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(ConfigError, match=r"Cannot fill in \{b\}: str\(\) failed"):
        interpolate("{b}", {"b": Broken()})


def test_a_preview_shows_every_message_and_its_estimate() -> None:
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "x" * 400})
    preview = Preview("gpt-4o-mini", messages, "context: 1 object")
    shown = str(preview)
    assert shown.splitlines()[0] == (
        "Dry run, nothing sent: gpt-4o-mini would get 2 messages, ~111 tokens (estimated) "
        "· context: 1 object"
    )
    assert "── system · ~3 tokens ──\nBe brief." in shown
    assert "── user · ~100 tokens ──\n" + "x" * 400 in shown


# -- the magics: --dry-run and the status line ------------------------------------------------


def chats(server: AmigoServer) -> list[Any]:
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


def test_dry_run_sends_nothing_and_shows_the_request_ask_would_send(
    ip: TestingShell, server: AmigoServer
) -> None:
    server.enqueue(Reply.stream(chunks=["first answer"]))
    ip.run_cell("%%amigo\nhello")
    ip.user_ns["df"] = frame(10_000)
    preview = ip.run_cell("%%amigo --dry-run -s 'Be brief.'\nWhat is in {df}?").result
    assert len(chats(server)) == 1  # only the first cell's
    assert isinstance(preview, Preview)
    assert [m["role"] for m in preview.messages] == ["system", "user", "assistant", "user"]
    assert preview.messages[2]["content"] == "first answer"
    assert "10,000 rows, 5 columns" in preview.messages[-1]["content"]
    assert "Dry run, nothing sent: gpt-4o-mini would get 4 messages" in str(preview)
    assert "context: 1 object · ~" in str(preview)
    magics = ip.magics_manager.registry["AmigoMagics"]
    assert len(magics.session.history()) == 2  # the dry run left no turn behind
    # the same prompt, sent: exactly the messages the preview showed
    server.enqueue(Reply.stream(chunks=["ok"]))
    ip.run_cell("%%amigo -s 'Be brief.'\nWhat is in {df}?")
    assert chats(server)[-1]["messages"] == list(preview.messages)


def test_the_status_line_says_what_context_went_along(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.user_ns["df"] = frame(10_000)
    server.enqueue(Reply.stream(chunks=["fine"]))
    ip.run_cell("%%amigo\nSummarise {df}")
    pub = ip.display_pub
    assert isinstance(pub, Recorder)
    status = pub.final()["text/plain"].splitlines()[-1]
    assert "· context: 1 object · ~" in status
    assert status.endswith("tokens")
    server.enqueue(Reply.stream(chunks=["plain"]))
    ip.run_cell("%%amigo\nno fields here")
    assert "context:" not in pub.final()["text/plain"]


def test_context_budget_is_a_setting_checked_when_set(
    ip: TestingShell, server: AmigoServer, caplog: pytest.LogCaptureFixture
) -> None:
    ip.user_ns["df"] = frame(10_000)
    try:
        ip.run_cell("%config AmigoMagics.context_budget = 100")
        preview = ip.run_cell("%%amigo --dry-run\n{df}").result
        assert estimate_tokens(preview.messages[-1]["content"]) <= 100
        assert "10,000 rows, 5 columns" in preview.messages[-1]["content"]
        with caplog.at_level(logging.ERROR):
            ip.run_cell("%config AmigoMagics.context_budget = 0")
        (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert "AmigoMagics.context_budget must be 1 or more (got 0)" in line
        assert ip.magics_manager.registry["AmigoMagics"].context_budget == 100
    finally:  # the shell is shared by later tests: leave its configuration as it was
        ip.config.AmigoMagics.pop("context_budget", None)
        ip.run_cell("%config AmigoMagics.context_budget = 2000")
        ip.config.AmigoMagics.pop("context_budget", None)


# -- --cells N --------------------------------------------------------------------------------


def test_cells_sends_the_sources_and_outputs_of_the_cells_before(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell("print('not this one')")
    ip.run_cell("print('from the first'); total = 41 + 1; total")
    ip.run_cell_quietly("{}['missing']")
    preview = ip.run_cell("%%amigo --cells 2 --dry-run\nWhat went wrong?").result
    sent = preview.messages[-1]["content"]
    assert sent.startswith("The notebook's last 2 cells before this one, with their output:")
    assert "print('from the first'); total = 41 + 1; total" in sent
    assert "from the first\n" in sent
    assert "result: 42" in sent
    assert "{}['missing']" in sent
    assert "KeyError: 'missing'" in sent
    assert "not this one" not in sent
    one = ip.run_cell("%%amigo --cells 1 --dry-run\nok?").result.messages[-1]["content"]
    assert one.startswith("The notebook's last cell before this one, with its output:")
    assert sent.endswith("---\n\nWhat went wrong?")
    assert "context: 2 cells · ~" in str(preview).splitlines()[0]
    with pytest.raises(UsageError, match=r"--cells takes 1 to 20"):
        ip.run_cell("%%amigo --cells 0\nhi")


def test_cells_keeps_a_displays_last_text_and_names_pictures(
    ip: TestingShell, server: AmigoServer
) -> None:
    ip.run_cell(
        "from IPython.display import display\n"
        "h = display({'text/plain': 'loading…'}, raw=True, display_id=True)\n"
        "h.update({'text/plain': 'loaded 3 files'}, raw=True)\n"
        "display({'image/png': 'iVBORw0KGgo=', 'text/plain': '<Figure>'}, raw=True)"
    )
    ip.run_cell("%%amigo --cells 1 --dry-run\nok?")
    preview = ip.run_cell("%%amigo --cells 2 --dry-run\nok?").result
    sent = preview.messages[-1]["content"]
    assert "loaded 3 files" in sent
    assert "loading…\n" not in sent  # the display's first text, replaced by its update
    assert "[a picture was shown: image/png] <Figure>" in sent
    assert "Dry run, nothing sent" in sent  # a dry run's own preview is that cell's output


def test_cells_notes_a_long_answer_within_its_bound(ip: TestingShell, server: AmigoServer) -> None:
    """Each update of a streaming answer re-sends all of it: what --cells keeps of it is the
    answer's first 20,000 characters (the cell's bound), never a copy of the whole, and a short
    answer is kept whole, without its status line."""
    words = [f"word{i} " for i in range(12_000)]  # ~110,000 characters, many updates
    server.enqueue(Reply.stream(chunks=words, delay=0.00002))
    ip.run_cell("%%amigo --no-history\nA long one.")
    log = ip.magics_manager.registry["AmigoMagics"].cell_log
    (outputs,) = [cell[2] for cell in log.recent(1)]
    assert sum(map(len, outputs)) <= 20_000
    assert "".join(outputs) == "".join(words)[:20_000]
    server.enqueue(Reply.stream(chunks=["A short ", "answer."]))
    ip.run_cell("%%amigo --no-history\nA short one.")
    assert log.recent(1)[0][2] == ("A short answer.\n",)


@pytest.mark.parametrize(
    "shown",
    ["", "status", "answer\n\nstatus", "a\n\n\nb\n\nstatus\n\n", " \n\nstatus", "x" * 30 + "\n\ns"],
)
def test_an_answers_noted_text_is_its_text_without_the_status_line(shown: str) -> None:
    from amigo_magic.cells import _answer_text

    text, sep, _ = shown.rstrip("\n").rpartition("\n\n")
    whole = f"{text}\n" if sep and text.strip() else ""  # what it is, copied whole
    for limit in (0, 5, 31, 100):
        assert _answer_text(shown, limit) == whole[:limit]


def test_a_secret_printed_in_a_cell_is_not_sent(
    ip: TestingShell, server: AmigoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMIGO_API_KEY", "sk-cell-secret-987654")
    ip.run_cell("import os; print(os.environ['AMIGO_API_KEY'])")
    preview = ip.run_cell("%%amigo --cells 1 --dry-run\nok?").result
    assert "sk-cell-secret" not in str(preview)
    assert "***" in preview.messages[-1]["content"]


def test_the_streams_and_the_publisher_are_put_back() -> None:
    shell = TestingShell.instance()
    pub = Recorder()
    shell.display_pub = pub
    shell.run_cell("%load_ext amigo_magic")
    assert "publish" in pub.__dict__
    shell.run_cell("x = 1")
    assert type(sys.stdout).__name__ != "_Tee"
    shell.run_cell("%unload_ext amigo_magic")
    assert "publish" not in pub.__dict__


def test_a_cell_that_runs_a_cell_leaves_the_streams_as_they_were(
    ip: TestingShell, server: AmigoServer
) -> None:
    before = sys.stdout
    ip.run_cell("get_ipython().run_cell('print(\"inner\")')\nprint('outer')")
    assert sys.stdout is before
    ip.run_cell("print('x' * 50_000)")
    preview = ip.run_cell("%%amigo --cells 2 --dry-run\nok?").result
    sent = preview.messages[-1]["content"]
    assert "inner\n" in sent
    assert "outer\n" in sent
    assert estimate_tokens(sent) <= 2000 + 20
