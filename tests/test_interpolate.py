"""Brace-safe interpolation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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

    class Account:
        owner = "ada"
        _token = "tok-private-1234"

    with pytest.raises(ConfigError, match="no attribute '_token'") as raised:
        interpolate("{acct.owner} {acct._token}", {"acct": Account()})
    assert "tok-private" not in str(raised.value)
    assert interpolate("{acct.owner}", {"acct": Account()}) == "ada"


# -- secrets never leave, and nothing is evaluated ----------------------------------------------

KEY = "sk-interp-5e6f7a8b9c0d"


def test_module_attributes_stay_as_written() -> None:
    import os

    text = 'print(f"config: {os.environ}") and {os.path.sep} and {os}'
    out = interpolate(text, {"os": os}, [KEY])
    assert out.startswith('print(f"config: {os.environ}") and {os.path.sep} and <module')


def test_filled_values_are_scrubbed_of_known_secrets() -> None:
    env = {"AMIGO_API_KEY": KEY, "HOME": "/home/ada"}
    out = interpolate("{env} / {env['AMIGO_API_KEY']}", {"env": env}, [KEY])
    assert KEY not in out
    assert "/home/ada" in out  # the value was filled in, minus the key
    assert out.endswith("/ ***")


def test_an_object_that_fails_is_one_line() -> None:
    class Broken:
        @property
        def value(self) -> str:
            raise ValueError(f"no {KEY}")

        def __str__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(ConfigError, match=r"Cannot fill in \{b\.value\}: ValueError: no \*\*\*"):
        interpolate("{b.value}", {"b": Broken()}, [KEY])
    with pytest.raises(ConfigError, match=r"Cannot fill in \{b\}: str\(\) failed"):
        interpolate("{b}", {"b": Broken()}, [KEY])


class Probe:
    """Counts every attribute, item and str() taken of it (and of what it hands out)."""

    def __init__(self, root: str, counts: dict[str, int], path: str = "") -> None:
        self._root, self._counts, self._path = root, counts, path or root

    def _hit(self) -> None:
        self._counts[self._root] = self._counts.get(self._root, 0) + 1

    def __getattr__(self, attr: str) -> Probe:
        if attr.startswith("_"):
            raise AttributeError(attr)
        self._hit()
        return Probe(self._root, self._counts, f"{self._path}.{attr}")

    def __getitem__(self, key: object) -> Probe:
        self._hit()
        return Probe(self._root, self._counts, f"{self._path}[{key!r}]")

    def __str__(self) -> str:
        self._hit()
        return f"<{self._path}>"


_NAMES = ["ada", "bob", "cy", "os"]  # "os" is a module holding a probe
_UNKNOWN = ["zed", "missing"]
_STEPS = st.lists(
    st.sampled_from([".shape", ".x", ".value", "[0]", "[-1]", "['k']", '["k"]', "[ 2 ]"]),
    max_size=3,
)
_LEFT_ALONE = st.sampled_from(
    [
        "{", "}", "{}", "{ }", "{1}", "{1, 2}", '{"a": 1}', "{{ada}}", "{{bob.x}}", "{ada!r}",
        "{ada:>5}", "{ ada }", "{ada[0]", "{ada()}", "{ada.x()}", "{ada[k]}", "{ada['a'+'b']}",
        "{ada + 1}", "{ada.__class__()}", "f'{x}={y}'", "{zed}", "{missing.x}",
        "def f():\n    return {1: 2}", "{os.environ}", "{os.path.sep}", "{os.environ['K']}",
    ]
)  # fmt: skip
_PLAIN = st.text(st.sampled_from("abc XYZ:,.-_\n\"'=+"), max_size=12)


@st.composite
def _segments(draw: st.DrawFn) -> list[tuple[str, str | None]]:
    """(text, the root it fills or None) pieces, joined by spaces so none merges with the next."""
    pieces: list[tuple[str, str | None]] = []
    for kind in draw(st.lists(st.sampled_from(["plain", "field", "alone"]), max_size=12)):
        if kind == "plain":
            pieces.append((draw(_PLAIN), None))
        elif kind == "alone":
            pieces.append((draw(_LEFT_ALONE), None))
        else:
            name = draw(st.sampled_from(["ada", "bob", "cy", *_UNKNOWN]))
            steps = "".join(draw(_STEPS))
            pieces.append((f"{{{name}{steps}}}", name if name not in _UNKNOWN else None))
    return pieces


@settings(max_examples=1000, deadline=None)
@given(_segments())
def test_property_interpolation_never_evaluates_and_leaves_every_other_brace(
    pieces: list[tuple[str, str | None]],
) -> None:
    import types

    counts: dict[str, int] = {}
    module = types.ModuleType("os")
    module.environ = Probe("os.environ", counts)  # type: ignore[attr-defined]
    module.path = Probe("os.path", counts)  # type: ignore[attr-defined]
    namespace: dict[str, object] = {n: Probe(n, counts) for n in _NAMES if n != "os"}
    namespace["os"] = module
    text = " ".join(piece for piece, _ in pieces)

    out = interpolate(text, namespace, [KEY])

    expected = " ".join(_filled(piece) if root else piece for piece, root in pieces)
    assert out == expected
    filled = {root for _, root in pieces if root}
    assert set(counts) == filled  # nothing left unfilled was touched: no attribute, item, str
    assert "os.environ" not in counts
    assert "os.path" not in counts


def _filled(field: str) -> str:
    """What a Probe shows for ``{root…}``: its path, indexes as the literal Python key."""
    inner = field[1:-1]
    import re

    def key(match: re.Match[str]) -> str:
        literal = match.group(1)
        value: object = int(literal) if literal.lstrip("-").isdigit() else literal[1:-1]
        return f"[{value!r}]"

    return "<" + re.sub(r"\[\s*(-?\d+|'[^']*'|\"[^\"]*\")\s*\]", key, inner) + ">"
