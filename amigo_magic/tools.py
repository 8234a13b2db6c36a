"""Notebook functions as tools (``%%amigo -T NAME``): a function → its tool schema (from the
signature, the type hints and the docstring), the model's streamed calls → :class:`ToolCall`,
and each call checked, put to a person, run and bounded before its result goes back.

Nothing here decides *how* to ask: a front end supplies the gate (the cell asks through the
kernel's input request on its own thread, the panel with buttons). A call is run by whoever
approves it (:meth:`PendingCall.approve`), so a cell's function runs on the kernel's main thread
(an ``async def`` is awaited there, on a fresh loop in a helper thread).
A result goes back as its :func:`.context.view` within the context budget — a 10 MB string is
cut to the budget with a note, like any ``{name}`` — with every key the session knows masked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .context import bound, view
from .errors import ConfigError
from .redact import scrub
from .schema import type_schema

if TYPE_CHECKING:
    from .answer import Live
    from .protocol import ToolCallDelta

__all__ = [
    "APPROVALS",
    "Outcome",
    "PendingCall",
    "Tool",
    "ToolCall",
    "Toolbox",
    "assemble",
    "tool_of",
]

APPROVALS = ("ask", "always", "never")  # AmigoMagics.approve_tools
Status = Literal["ok", "denied", "error", "unknown tool", "bad arguments"]
NO_WAY_TO_ASK = (
    "denied: this front end cannot ask (no stdin); set AmigoMagics.approve_tools = 'always' "
    "to allow tool calls without asking"
)


@dataclass(frozen=True)
class Tool:
    """One function offered to the model."""

    name: str
    function: Callable[..., Any]
    description: str
    parameters: Mapping[str, Any]

    def spec(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for: ``arguments`` is its JSON text, as streamed."""

    id: str
    name: str
    arguments: str

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class Outcome:
    """What became of a call: its status and the text the model is sent."""

    call: ToolCall
    status: Status
    result: str
    label: str  # "add(a=2, b=3)"

    def meta(self) -> dict[str, Any]:
        """As ``Turn.meta["tools"]`` keeps it (exported and replayed with the turn)."""
        return {
            "id": self.call.id,
            "name": self.call.name,
            "arguments": self.call.arguments,
            "status": self.status,
            "result": self.result,
        }


def tool_of(name: str, function: Any) -> Tool:
    """``function`` as a tool: its parameters from the signature and hints, its description
    and each parameter's from the docstring (Google ``Args:`` or Sphinx ``:param x:``)."""
    if not callable(function) or isinstance(function, type):
        raise ConfigError(f"-T {name}: '{name}' is a {type(function).__name__}, not a function.")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        raise ConfigError(f"-T {name}: its signature cannot be read.") from None
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # a hint naming what the notebook no longer has: the parameter is Any
        hints = {}
    doc = inspect.getdoc(function) or ""
    described = _param_docs(doc)
    properties: dict[str, Any] = {}
    required = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        prop = type_schema(hints.get(param.name, Any))
        if param.name in described:
            prop["description"] = described[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif _jsonable(param.default):
            prop["default"] = param.default
        properties[param.name] = prop
    summary = doc.split("\n\n", 1)[0].strip() or f"The notebook function {name}."
    parameters = {"type": "object", "properties": properties, "required": required}
    return Tool(name, function, " ".join(summary.split()), parameters)


def assemble(deltas: Sequence[ToolCallDelta]) -> list[ToolCall]:
    """Streamed pieces → whole calls, in the model's order (pieces of one share an index)."""
    calls: dict[int, list[Any]] = {}
    for delta in deltas:
        entry = calls.setdefault(delta.index, [None, None, []])
        entry[0] = entry[0] or delta.id
        entry[1] = entry[1] or delta.name
        entry[2].append(delta.arguments)
    return [
        ToolCall(cid or f"call_{index}", name or "", "".join(parts))
        for index, (cid, name, parts) in sorted(calls.items())
    ]


class PendingCall:
    """A call waiting for a decision; :meth:`approve` (which runs it, on the caller's thread)
    or :meth:`deny`, from any thread, once."""

    def __init__(self, box: Toolbox, call: ToolCall, tool: Tool, kwargs: dict[str, Any]) -> None:
        self.box = box
        self.call = call
        self.tool = tool
        self.kwargs = kwargs
        self.future: concurrent.futures.Future[Outcome] = concurrent.futures.Future()

    @property
    def label(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.kwargs.items())
        return f"{self.call.name}({args})"

    @property
    def question(self) -> str:
        return f"Run {self.label}? [y]es / [n]o / [a]lways for this cell: "

    def approve(self) -> None:
        if self.future.running() or not self.future.set_running_or_notify_cancel():
            return  # the answer was stopped meanwhile
        try:
            value = self.tool.function(**self.kwargs)
            if inspect.isawaitable(value):  # an async def: run to its end, here
                value = _await(value)
        except Exception as error:  # the model hears the function's error, in one line
            message = " ".join(f"{type(error).__name__}: {error}".split())
            said = self.box.scrubbed(f"Error: {message}")
            self.future.set_result(Outcome(self.call, "error", said, self.label))
            return
        except BaseException as error:  # an interrupt: the answer stops
            self.future.set_exception(error)
            raise
        self.future.set_result(Outcome(self.call, "ok", self.box.bounded(value), self.label))

    def deny(self, reason: str = "denied by the user") -> None:
        if not self.future.running() and self.future.set_running_or_notify_cancel():
            text = f"The user did not allow this call ({reason}). Do not call it again; answer " \
                "without it."  # fmt: skip
            self.future.set_result(Outcome(self.call, "denied", text, self.label))

    def settle(self, ask: Callable[[PendingCall], str | None]) -> None:
        """Decide by the policy, asking through ``ask`` (a reply, or None: cannot ask)."""
        if self.box.policy == "always" or self.box.always:
            self.approve()
            return
        if self.box.policy == "never":
            self.deny("AmigoMagics.approve_tools is 'never'")
            return
        reply = ask(self)
        if reply is None:
            self.deny(NO_WAY_TO_ASK)
            return
        word = reply.strip().lower()
        if word in ("a", "always"):
            self.box.always = True
        if word in ("y", "yes", "a", "always"):
            self.approve()
        else:
            self.deny()


Gate = Callable[[PendingCall, "Live"], None]


@dataclass
class Toolbox:
    """The tools of one request, how calls are decided, and the bounds."""

    tools: dict[str, Tool]
    gate: Gate
    policy: str = "ask"
    budget: int = 2000
    max_rounds: int = 8
    always: bool = False  # [a]lways for this cell
    secrets: Sequence[str] = ()  # every key the session knows: never sent in a result
    outcomes: list[Outcome] = field(default_factory=list)

    def specs(self) -> list[dict[str, Any]]:
        return [tool.spec() for tool in self.tools.values()]

    def bounded(self, value: Any) -> str:
        """A result as the model gets it: its view, within the budget, no known key in it."""
        text, _ = view(value, self.budget)
        return self.scrubbed(bound(text, self.budget))

    def scrubbed(self, text: str) -> str:
        return scrub(text, self.secrets) if self.secrets else text

    async def handle(self, call: ToolCall, live: Live) -> Outcome:
        """Check ``call``, put it to the gate, and wait for what became of it. A key the
        session knows in its arguments is masked before anything shows, keeps or runs them."""
        call = ToolCall(call.id, call.name, self.scrubbed(call.arguments))
        tool = self.tools.get(call.name)
        if tool is None:
            offered = ", ".join(self.tools) or "none"
            outcome = Outcome(
                call, "unknown tool",
                f"Error: there is no tool named {call.name!r}; the tools are: {offered}.",
                f"{call.name}(…)",
            )  # fmt: skip
        else:
            kwargs, problem = _arguments(call.arguments, tool)
            if problem is not None:
                outcome = Outcome(call, "bad arguments", f"Error: {problem}", f"{call.name}(…)")
            else:
                pending = PendingCall(self, call, tool, kwargs)
                self.gate(pending, live)
                outcome = await asyncio.wrap_future(pending.future)
        self.outcomes.append(outcome)
        return outcome


def _await(awaitable: Any) -> Any:
    """An ``async def`` tool's result: the coroutine on a fresh loop in a helper thread while
    this (the caller's) thread waits in short slices, so an interrupt stops it at once."""
    import threading

    box: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    async def main() -> Any:
        box["task"] = asyncio.current_task()
        return await awaitable

    def target() -> None:
        try:
            box["value"] = loop.run_until_complete(main())
        except BaseException as error:  # handed to the waiting caller
            box["error"] = error
        finally:
            loop.close()

    thread = threading.Thread(target=target, name="amigo tool", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.05)
    except KeyboardInterrupt:
        if "task" in box and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # it ended meanwhile
                loop.call_soon_threadsafe(box["task"].cancel)
        thread.join(5)
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


def _arguments(text: str, tool: Tool) -> tuple[dict[str, Any], str | None]:
    try:
        kwargs = json.loads(text) if text.strip() else {}
    except ValueError as error:
        return {}, f"the arguments are not valid JSON ({error}); call {tool.name} again with a " \
            "JSON object."  # fmt: skip
    if not isinstance(kwargs, dict):
        return {}, f"the arguments must be a JSON object, got {type(kwargs).__name__}."
    try:
        inspect.signature(tool.function).bind(**kwargs)
    except TypeError as error:
        return {}, f"{error}; {tool.name} takes {', '.join(tool.parameters['properties'])}."
    return kwargs, None


def _param_docs(doc: str) -> dict[str, str]:
    found = {m[0]: m[1] for m in re.findall(r":param\s+(?:\w+\s+)?(\w+):\s*(.+)", doc)}
    section = re.search(r"^(?:Args|Arguments|Parameters):\s*\n((?:[ \t]+.+\n?)+)", doc, re.M)
    if section:
        for name, text in re.findall(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)$", section[1], re.M):
            found.setdefault(name, text.strip())
    return found


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
