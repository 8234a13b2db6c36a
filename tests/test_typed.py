"""Typed answers (``%%amigo --schema SPEC``) against the loopback server, in AmigoChat mode and
OpenAI-compatible mode (``--model lab:MODEL``): the schema on the wire, the validated object in
``-o``, one repair round-trip, a one-line failure, the concise syntax, ``--many``, ``--frame``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest

from amigo_magic.errors import AnswerFormatError, ConfigError
from amigo_magic.schema import parse_concise, resolve_spec
from tests.amigo_server import AmigoServer, Reply
from tests.shell import TestingShell

PERSON = """
from pydantic import BaseModel

class Person(BaseModel):
    name: str
    age: int
"""


@pytest.fixture(scope="module")
def openai_server() -> Iterator[AmigoServer]:
    with AmigoServer(strict_headers=False, success_status=200) as lab:
        yield lab


@pytest.fixture(params=["amigo", "openai"])
def mode(
    request: pytest.FixtureRequest,
    ip: TestingShell,
    server: AmigoServer,
    openai_server: AmigoServer,
) -> Iterator[tuple[str, AmigoServer]]:
    """("-m …" for the cell, the server it reaches): AmigoChat itself, or an endpoint."""
    if request.param == "amigo":
        yield "", server
        return
    openai_server.reset()
    magics = ip.magics_manager.registry["AmigoMagics"]
    magics.endpoints = {"lab": {"url": openai_server.base_url}}
    yield "-m lab:llama3.2 ", openai_server


def system_of(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


def test_pydantic_schema_gives_a_validated_instance(
    ip: TestingShell, mode: tuple[str, AmigoServer]
) -> None:
    flag, lab = mode
    ip.run_cell(PERSON)
    lab.enqueue(Reply.stream('{"name": "Ada Lovelace", "age": 36}'))
    ip.run_cell(f"%%amigo {flag}--schema Person -o ada\nWho wrote the first program?")
    ada = ip.user_ns["ada"]
    assert type(ada).__name__ == "Person"
    assert (ada.name, ada.age) == ("Ada Lovelace", 36)
    (request,) = lab.requests
    body = request.json
    assert '"age": {"title": "Age", "type": "integer"}' in system_of(body)  # every backend
    if flag:  # an OpenAI-compatible server gets the schema as the response format too
        assert body["response_format"]["type"] == "json_schema"
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["required"] == ["name", "age"]
    else:  # AmigoChat has no schema mode: the instruction and the check do it
        assert "response_format" not in body
    shown = ip.display_pub.final()
    assert "Ada Lovelace" in shown["text/html"]
    assert "<table" in shown["text/html"]
    assert '{"name"' not in shown["text/plain"]  # a table, not the raw JSON


def test_invalid_first_answer_is_repaired_in_one_round_trip(
    ip: TestingShell, mode: tuple[str, AmigoServer]
) -> None:
    flag, lab = mode
    ip.run_cell(PERSON)
    lab.enqueue(
        Reply.stream('{"name": "Ada", "age": "thirty-six"}'),
        Reply.stream('```json\n{"name": "Ada", "age": 36}\n```'),
    )
    ip.run_cell(f"%%amigo {flag}--schema Person -o ada\nWho was Ada?")
    assert ip.user_ns["ada"].age == 36
    first, second = lab.requests  # two requests on the wire
    messages = second.json["messages"]
    assert messages[:-2] == first.json["messages"]
    assert messages[-2] == {"role": "assistant", "content": '{"name": "Ada", "age": "thirty-six"}'}
    repair = messages[-1]["content"]
    assert messages[-1]["role"] == "user"
    assert "age: Input should be a valid integer" in repair
    assert '"thirty-six"' in repair
    assert (
        "repaired once (age: Input should be a valid integer"
        in ip.display_pub.final()["text/plain"]
    )


def test_still_invalid_answer_ends_in_one_line(
    ip: TestingShell, mode: tuple[str, AmigoServer]
) -> None:
    flag, lab = mode
    ip.run_cell(PERSON)
    lab.enqueue(Reply.stream("Ada, 36"), Reply.stream('{"name": "Ada"}'))
    result = ip.run_cell_quietly(f"%%amigo {flag}--schema Person -o ada\nWho was Ada?")
    error = result.error_in_exec
    assert isinstance(error, AnswerFormatError)
    assert str(error) == (
        "The answer is not Person even after one repair: age: Field required; its text is "
        "kept, -o was not set."
    )
    assert error._render_traceback_()[0].count("\n") == 0
    assert "ada" not in ip.user_ns
    assert len(lab.requests) == 2
    history = ip.run_cell("%amigo history").result
    assert '{"name": "Ada"}' in history.data["text/plain"]  # the text is kept


def test_concise_syntax_and_many(ip: TestingShell, mode: tuple[str, AmigoServer]) -> None:
    flag, lab = mode
    items = [{"name": "Ada", "age": 36, "bio": "Wrote a program."}, {"name": "Alan", "age": 41,
             "bio": "Broke a code."}]  # fmt: skip
    lab.enqueue(Reply.stream(json.dumps({"items": items}), chunks=None))
    spec = "name, age int, bio: one sentence"
    ip.run_cell(f"%%amigo {flag}--schema '{spec}' --many -o people\nTwo computer pioneers")
    assert ip.user_ns["people"] == items
    wire = json.loads(system_of(lab.requests[0].json).split("JSON schema: ", 1)[1])
    one = wire["properties"]["items"]["items"]
    assert one["properties"]["bio"] == {"type": "string", "description": "one sentence"}
    assert one["required"] == ["name", "age", "bio"]
    shown = ip.display_pub.final()["text/plain"]
    assert "Alan" in shown
    assert "Broke a code." in shown


def test_frame_gives_a_dataframe(ip: TestingShell, server: AmigoServer) -> None:
    pd = pytest.importorskip("pandas")
    server.enqueue(Reply.stream('{"items": [{"city": "Oslo", "people": 709000}]}'))
    ip.run_cell("%%amigo --schema 'city, people int' --frame -o cities\nA Nordic capital")
    frame = ip.user_ns["cities"]
    assert isinstance(frame, pd.DataFrame)
    assert frame.to_dict("records") == [{"city": "Oslo", "people": 709000}]


@dataclasses.dataclass
class Place:
    city: str
    lat: float


@dataclasses.dataclass
class Trip:
    """A trip."""

    name: str
    stops: list[Place]
    days: int | None = None


class Row(TypedDict):
    word: str
    count: int


def test_dataclass_and_typeddict_specs() -> None:
    trip = resolve_spec("Trip", {"Trip": Trip})
    assert trip.schema["required"] == ["name", "stops"]
    checked = trip.check('{"name": "N", "stops": [{"city": "Oslo", "lat": 59.9}]}')
    assert checked.value == Trip("N", [Place("Oslo", 59.9)])
    wrong = trip.check('{"name": "N", "stops": [{"city": "Oslo", "lat": "north"}], "days": 2.5}')
    assert wrong.errors == (
        'stops[0].lat: expected number, got "north"',
        "days: expected an integer, got 2.5",
    )
    row = resolve_spec("Row", {"Row": Row}, many=True)
    assert row.check('[{"word": "a", "count": 2}]').value == [{"word": "a", "count": 2}]
    assert row.check('{"word": "a"}').errors == ("expected a list of Row under 'items'",)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("name, age integer", "has type 'integer'; use int, float, str or bool"),
        ("full first name: who", "cannot read the field 'full first name: who'"),
        ("Persn", "no such name in the notebook"),
        ("", "needs a class name or fields"),
    ],
)
def test_bad_specs_are_one_line(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        resolve_spec(spec, {})
    assert "\n" not in str(caught.value)


def test_concise_syntax_with_newlines() -> None:
    schema = parse_concise("name: the full name\nage int\nscore float: 0 to 1, higher is better")
    assert schema["properties"]["score"] == {
        "type": "number",
        "description": "0 to 1, higher is better",
    }


def test_the_local_model_answers_a_schema_through_llama_cpps_grammar(ip: TestingShell) -> None:
    """The real SmolLM2 through llama.cpp: response_format becomes a grammar, so even a 135M
    model answers valid JSON of the schema."""
    pytest.importorskip("xllamacpp")
    ip.run_cell(
        "%%amigo -m local --schema 'name, age int' -t 0 --max-tokens 60 -o who\n"
        "Ada Lovelace was 36."
    )
    who = ip.user_ns["who"]
    assert set(who) == {"name", "age"}
    assert isinstance(who["name"], str)
    assert isinstance(who["age"], int)
