"""Brace-safe interpolation."""

from __future__ import annotations

import pytest

from amigo_magic.errors import ConfigError
from amigo_magic.interpolate import interpolate


class Frame:
    shape = (3, 4)


NS = {"name": "Ada", "xs": [10, 20, 30], "d": {"k": "v"}, "df": Frame(), "Err": {7: "Trace"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hi {name}", "hi Ada"),
        ("{xs[1]} and {xs[-1]}", "20 and 30"),
        ("{d['k']} {d[\"k\"]}", "v v"),
        ("{df.shape}", "(3, 4)"),
        ("{df.shape[0]}", "3"),
        ("Explain: {Err[7]}", "Explain: Trace"),
        ("unknown {missing} stays", "unknown {missing} stays"),
        ('json {"a": {name}} ', 'json {"a": Ada} '),
        ("def f():\n    return {1, 2}\n", "def f():\n    return {1, 2}\n"),
        ("{{name}} is an escape", "{{name}} is an escape"),
        ("f'{name!r}' and {name:>5}", "f'{name!r}' and {name:>5}"),
        ("{ name }", "{ name }"),
        ("{name[0]", "{name[0]"),
    ],
)
def test_interpolation(text: str, expected: str) -> None:
    assert interpolate(text, NS) == expected


def test_code_with_braces_is_unchanged() -> None:
    code = "for k, v in {'a': 1}.items():\n    print(f'{k}={v}')\nx = {i: i*i for i in range(3)}"
    assert interpolate(code, {"k": 1, "v": 2, "i": 3}) == code.replace("{k}", "1").replace(
        "{v}", "2"
    )


def test_missing_error_cell_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"Cannot fill in \{Err\[3\]\}: cell 3 raised no error"):
        interpolate("{Err[3]}", NS)


def test_private_attributes_are_not_reachable() -> None:
    with pytest.raises(ConfigError, match="no attribute '__class__'"):
        interpolate("{name.__class__}", NS)
