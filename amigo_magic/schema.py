"""Typed answers (``%%amigo --schema SPEC``): what SPEC names → a JSON schema, the answer's text →
a validated object, and the message that asks the model to repair an invalid one.

SPEC is a pydantic model, a dataclass or a ``TypedDict`` from the notebook, a JSON schema held in
a dict, or llm's concise field list (``"name, age int, bio: one sentence"``). ``--many`` asks
for a list of them (the schema wraps it as ``{"items": [...]}``, as llm does).

A pydantic model is validated by pydantic itself (``model_validate``), so its own validators,
coercions and messages apply; pydantic is never imported here — the user's class brings it. The
other kinds are validated against the schema this module made for them, by a small checker of
exactly the keywords it writes (``type``, ``properties``, ``required``, ``items``, ``enum``,
``anyOf``): a general JSON-schema library (with its four dependencies) would check the same
subset.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["Checked", "Spec", "parse_concise", "resolve_spec", "rows", "type_schema"]

_CONCISE_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}
MAX_ERRORS = 8  # shown to the model (and the first to the user)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


@dataclass(frozen=True, slots=True)
class Checked:
    """The outcome of checking one answer: the typed value, or what is wrong with it."""

    value: Any = None
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Spec:
    """What ``--schema`` asks for: a name, the JSON schema sent, and the type built from it."""

    name: str
    schema: Mapping[str, Any]
    kind: str  # "pydantic" | "dataclass" | "typeddict" | "json schema" | "fields"
    target: Any = None  # the user's class (None: a dict)
    many: bool = False
    frame: bool = False  # --frame: the list as a pandas DataFrame
    wire: Mapping[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        one = dict(self.schema)
        wire = (
            {"type": "object", "properties": {"items": {"type": "array", "items": one}},
             "required": ["items"]}
            if self.many else one
        )  # fmt: skip
        object.__setattr__(self, "wire", wire)

    @property
    def label(self) -> str:
        return f"a list of {self.name}" if self.many else self.name

    def response_format(self) -> dict[str, Any]:
        """OpenAI's ``response_format`` (llama.cpp's server reads the same)."""
        name = re.sub(r"[^A-Za-z0-9_-]", "_", self.name)[:64] or "answer"
        return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(self.wire)}}

    def instruction(self) -> str:
        """The system message's part: every backend gets it, a server without a schema mode
        has only this to go by."""
        return (
            "Reply with one JSON value that matches this JSON schema, and nothing else: no prose, "
            f"no code fence.\nJSON schema: {json.dumps(self.wire, ensure_ascii=False)}"
        )

    def check(self, text: str) -> Checked:
        """``text`` as the typed value, or the errors (each ``path: what is wrong``)."""
        try:
            data = _json_of(text)
        except ValueError as error:
            return Checked(errors=(f"not JSON: {error}",))
        if self.many:
            if isinstance(data, dict) and set(data) == {"items"}:
                data = data["items"]
            if not isinstance(data, list):
                return Checked(errors=(f"expected a list of {self.name} under 'items'",))
            values: list[Any] = []
            errors: list[str] = []
            for index, item in enumerate(data):
                one = self._one(item, f"items[{index}]")
                values.append(one.value)
                errors += one.errors
            if errors:
                return Checked(errors=tuple(errors[:MAX_ERRORS]))
            return Checked(_frame(values) if self.frame else values)
        return self._one(data, "")

    def repair(self, errors: Sequence[str]) -> str:
        """The user message of the one repair round-trip."""
        listed = "\n".join(f"- {error}" for error in errors[:MAX_ERRORS])
        return (
            f"Your reply is not valid JSON for the schema ({self.label}):\n{listed}\n"
            "Reply again with only the corrected JSON."
        )

    def _one(self, data: Any, path: str) -> Checked:
        if self.kind == "pydantic":
            return _pydantic(self.target, data, path)
        errors = _check(data, self.schema, path)
        if errors:
            return Checked(errors=tuple(errors[:MAX_ERRORS]))
        if self.kind == "dataclass":
            try:
                return Checked(_build(self.target, data))
            except (TypeError, ValueError) as error:
                return Checked(errors=(f"{path or 'the object'}: {error}",))
        return Checked(data)


def resolve_spec(
    text: str, namespace: Mapping[str, Any] | None, *, many: bool = False, frame: bool = False
) -> Spec:
    """What ``--schema text`` names: a class (or schema dict) in ``namespace``, else fields."""
    text = text.strip()
    if not text:
        raise ConfigError("--schema needs a class name or fields, e.g. --schema 'name, age int'.")
    if _NAME.match(text):
        found = _lookup(text, namespace or {})
        if found is not _MISSING:
            return _spec_of(text, found, many, frame)
        if text[0].isupper() or "." in text:
            raise ConfigError(
                f"--schema {text}: no such name in the notebook. Define the class first, or "
                "give fields: --schema 'name, age int, bio: one sentence'."
            )
    return Spec("answer", parse_concise(text), "fields", None, many, frame)


def parse_concise(text: str) -> dict[str, Any]:
    """llm's concise schema: fields split by newlines (when there are any) or commas, each
    ``name [int|float|str|bool][: description]``; every field is required."""
    properties: dict[str, Any] = {}
    for part in text.split("\n" if "\n" in text else ","):
        if not part.strip():
            continue
        head, _, description = part.partition(":")
        words = head.split()
        if not words or len(words) > 2 or not words[0].isidentifier():
            raise ConfigError(
                f"--schema: cannot read the field '{part.strip()}': write `name`, `name int` or "
                "`name: what it holds` (types: int, float, str, bool)."
            )
        kind = words[1] if len(words) == 2 else "str"
        if kind not in _CONCISE_TYPES:
            raise ConfigError(
                f"--schema: field '{words[0]}' has type '{kind}'; use int, float, str or bool."
            )
        prop: dict[str, Any] = {"type": _CONCISE_TYPES[kind]}
        if description.strip():
            prop["description"] = description.strip()
        properties[words[0]] = prop
    if not properties:
        raise ConfigError("--schema needs at least one field, e.g. --schema 'name, age int'.")
    return {"type": "object", "properties": properties, "required": list(properties)}


def rows(value: Any) -> tuple[list[str], list[list[str]]]:
    """A typed answer as a small table: ``(headers, rows)`` — field and value rows for one object,
    one row per item for a list."""
    items = value if isinstance(value, list) else [value]
    dicts = [_as_dict(item) for item in items]
    if not isinstance(value, list) and dicts and isinstance(dicts[0], dict):
        return ["field", "value"], [[str(k), _cell(v)] for k, v in dicts[0].items()]
    headers: list[str] = []
    for item in dicts:
        for key in item if isinstance(item, dict) else ():
            if key not in headers:
                headers.append(str(key))
    if not headers:
        return ["value"], [[_cell(item)] for item in dicts]
    return headers, [[_cell(item.get(h, "")) for h in headers] for item in dicts]


# -- what SPEC names -----------------------------------------------------------------------------

_MISSING = object()


def _lookup(name: str, namespace: Mapping[str, Any]) -> Any:
    first, *rest = name.split(".")
    if first not in namespace:
        return _MISSING
    found = namespace[first]
    for attr in rest:
        found = getattr(found, attr, _MISSING)
        if found is _MISSING:
            return _MISSING
    return found


def _spec_of(name: str, found: Any, many: bool, frame: bool) -> Spec:
    make_schema = getattr(found, "model_json_schema", None)
    if isinstance(found, type) and callable(make_schema):
        return Spec(found.__name__, make_schema(), "pydantic", found, many, frame)
    if isinstance(found, type) and dataclasses.is_dataclass(found):
        return Spec(found.__name__, type_schema(found), "dataclass", found, many, frame)
    if _is_typeddict(found):
        return Spec(found.__name__, type_schema(found), "typeddict", None, many, frame)
    if isinstance(found, Mapping) and ("properties" in found or "type" in found):
        return Spec(name.rsplit(".", 1)[-1], dict(found), "json schema", None, many, frame)
    raise ConfigError(
        f"--schema {name} is a {type(found).__name__}: give a pydantic model, a dataclass, a "
        "TypedDict, a JSON schema dict, or fields ('name, age int')."
    )


def _is_typeddict(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, dict) and hasattr(obj, "__total__")


def type_schema(tp: Any, depth: int = 0) -> dict[str, Any]:
    """The JSON schema of a type hint (dataclasses and TypedDicts as objects)."""
    if depth > 8:
        return {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return {}
    if tp is type(None):
        return {"type": "null"}
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if tp in simple:
        return {"type": simple[tp]}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return {"anyOf": [type_schema(arg, depth + 1) for arg in args]}
    if origin in (list, set, frozenset, tuple, Sequence) or tp in (list, set, tuple):
        item = args[0] if args and args[0] is not Ellipsis else Any
        return {"type": "array", "items": type_schema(item, depth + 1)}
    if origin in (dict, Mapping) or tp is dict:
        return {"type": "object"}
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or _is_typeddict(tp)):
        hints = _hints(tp)
        if dataclasses.is_dataclass(tp):
            names = [f.name for f in dataclasses.fields(tp)]
            required = [
                f.name
                for f in dataclasses.fields(tp)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ]
        else:
            names = list(hints)
            required = sorted(getattr(tp, "__required_keys__", names), key=names.index)
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {n: type_schema(hints.get(n, Any), depth + 1) for n in names},
            "required": required,
        }
        doc = (tp.__doc__ or "").strip()
        if doc and not doc.startswith(f"{tp.__name__}("):  # a dataclass's made-up docstring
            schema["description"] = doc
        return schema
    return {"type": "string"}  # dates, paths, …: as text


# -- checking ------------------------------------------------------------------------------------


def _json_of(text: str) -> Any:
    """The JSON value in ``text``: as is, or inside a code fence or prose around it."""
    stripped = text.strip()
    fence = re.search(r"```[a-zA-Z]*\s*\n(.*?)\n\s*```", stripped, re.S)
    if fence:
        stripped = fence.group(1).strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as error:
        starts = [i for i in (stripped.find("{"), stripped.find("[")) if i >= 0]
        if starts:
            start = min(starts)
            end = max(stripped.rfind("}"), stripped.rfind("]"))
            if end > start:
                try:
                    return json.loads(stripped[start : end + 1])
                except ValueError:
                    pass
        if not stripped:
            raise ValueError("the reply is empty") from None
        raise ValueError(f"{error.msg} at line {error.lineno} column {error.colno}") from None


def _check(data: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    where = path or "the answer"
    if "anyOf" in schema:
        options = [_check(data, option, path) for option in schema["anyOf"]]
        if all(options):
            return min(options, key=len)
        return []
    if "enum" in schema and data not in schema["enum"]:
        return [f"{where}: {_show(data)} is not one of {', '.join(map(_show, schema['enum']))}"]
    kind = schema.get("type")
    if isinstance(kind, str) and kind in _JSON_TYPES:
        wanted = _JSON_TYPES[kind]
        if not isinstance(data, wanted) or (isinstance(data, bool) and kind != "boolean"):
            return [f"{where}: expected {_article(kind)}, got {_show(data)}"]
    errors: list[str] = []
    if isinstance(data, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in data:
                errors.append(f"{_join(path, name)}: missing")
        for name, value in data.items():
            if name in properties:
                errors += _check(value, properties[name], _join(path, name))
    if isinstance(data, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(data):
            errors += _check(item, schema["items"], f"{path}[{index}]")
    return errors


def _pydantic(model: Any, data: Any, path: str) -> Checked:
    try:
        return Checked(model.model_validate(data))
    except Exception as error:  # pydantic.ValidationError, known by its errors() method
        found = getattr(error, "errors", None)
        if not callable(found):
            return Checked(errors=(f"{path or 'the answer'}: {error}",))
        lines = []
        for item in found()[:MAX_ERRORS]:
            loc = ".".join(str(part) for part in item.get("loc", ()))
            lines.append(
                f"{_join(path, loc) or 'the answer'}: {item.get('msg', 'invalid')}"
                + (
                    f" (got {_show(item['input'])})"
                    if loc and item.get("type") != "missing"
                    else ""
                )
            )
        return Checked(errors=tuple(lines))


def _build(cls: Any, data: Any) -> Any:
    """A dataclass instance from checked JSON, nested dataclasses (and lists of them) too."""
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = _convert(hints.get(f.name, Any), data[f.name])
    return cls(**values)


def _convert(tp: Any, value: Any) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _build(tp, value)
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and args and isinstance(value, list):
        return [_convert(args[0], item) for item in value]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    return value


def _hints(tp: Any) -> dict[str, Any]:
    """``tp``'s type hints; a hint naming what cannot be found counts as Any."""
    try:
        return typing.get_type_hints(tp)
    except Exception:
        found = dict(getattr(tp, "__annotations__", {}))
        return {name: Any if isinstance(hint, str) else hint for name, hint in found.items()}


def _frame(values: list[Any]) -> Any:
    try:
        import pandas as pd  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError("--frame needs pandas: pip install pandas (or drop --frame).") from None
    return pd.DataFrame([_as_dict(value) for value in values])


def _as_dict(value: Any) -> Any:
    if callable(getattr(value, "model_dump", None)):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 200 else text[:199] + "…"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:59] + "…"


def _article(kind: str) -> str:
    return {"integer": "an integer", "array": "an array", "object": "an object"}.get(kind, kind)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path and name else path or name
