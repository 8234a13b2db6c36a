"""The request loop of a typed answer or a tool-using one: each round is one ordinary streamed
request (the session's ``_stream``, so the replay cache and the answer's display apply to each);
between rounds the model's tool calls are decided and run, or an invalid typed answer is sent
back once with what failed.

Bounded: at most ``Toolbox.max_rounds`` rounds of tool calls and one repair. What happened is
kept in the answer's ``meta`` (``"tools"``: each call, its arguments, status and result;
``"schema"``: the spec and whether it was repaired), so history, export and replay have it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from .errors import AnswerFormatError, ConfigError, StreamError
from .tools import PendingCall, Toolbox, assemble, tool_of
from .usage import estimate_prompt_tokens

if TYPE_CHECKING:
    from .answer import Answer, Live
    from .backends import ChatRequest
    from .config import Preferences
    from .schema import Spec
    from .session import AskOptions
    from .tools import Outcome, ToolCall

__all__ = ["ToolRoundsError", "converse", "equip", "rounds"]


def equip(
    options: AskOptions,
    namespace: Mapping[str, Any],
    prefs: Preferences,
    spec: tuple[str | None, bool, bool],
    tools: Sequence[str],
    ask: Callable[[PendingCall], str | None] | None,
    gate: Callable[[PendingCall, Live], None] | None,
    secrets: Sequence[str] = (),
) -> AskOptions:
    """``options`` with the typed answer's spec (its instruction joins the system message) and
    the toolbox of the named functions (see :meth:`.session.ChatSession.equip`)."""
    text, many, frame = spec
    changes: dict[str, Any] = {}
    if text is not None:
        from .schema import resolve_spec

        found = resolve_spec(text, namespace, many=many, frame=frame)
        system = "\n\n".join(part for part in (options.system, found.instruction()) if part)
        changes.update(schema=found, system=system)
    elif many or frame:
        raise ConfigError("--many and --frame go with --schema SPEC (what each item holds).")
    if tools:
        offered = {}
        for name in tools:
            if name not in namespace:
                raise ConfigError(f"-T {name}: no function named '{name}' in the notebook.")
            offered[name] = tool_of(name, namespace[name])
        changes["toolbox"] = Toolbox(
            offered,
            gate or partial(_on_follower, ask or _cannot_ask),
            policy=prefs.approve_tools,
            budget=prefs.context_budget,
            max_rounds=prefs.max_tool_rounds,
            secrets=tuple(secrets),
        )
    return dataclasses.replace(options, **changes) if changes else options


async def rounds(
    answer: Answer,
    request: ChatRequest,
    work: Callable[[ChatRequest], Awaitable[None]],
    backend: str,
    options: AskOptions,
) -> None:
    """:func:`converse` for ``options``: a schema goes as ``response_format`` too, except to
    AmigoChat (which has no such mode: the instruction and the check do it there)."""
    spec = options.schema
    if spec is not None and backend != "amigo":
        request = dataclasses.replace(request, response_format=spec.response_format())
    await converse(answer, request, work, spec=spec, toolbox=options.toolbox)


def _on_follower(
    ask: Callable[[PendingCall], str | None], pending: PendingCall, live: Live
) -> None:
    live.errand(partial(pending.settle, ask))


def _cannot_ask(pending: PendingCall) -> None:
    return None


class ToolRoundsError(StreamError):
    """The model kept calling tools past ``AmigoMagics.max_tool_rounds``."""


async def converse(
    answer: Answer,
    request: ChatRequest,
    work: Callable[[ChatRequest], Awaitable[None]],
    *,
    spec: Spec | None,
    toolbox: Toolbox | None,
) -> None:
    """Ask, run the tool calls and ask again, until a plain (and, with ``spec``, valid) answer."""
    messages: list[Any] = list(request.messages)
    tools = toolbox.specs() if toolbox is not None else []
    rounds, repaired = 0, False
    while True:
        start = answer.length
        await work(dataclasses.replace(request, messages=tuple(messages), tools=tools))
        calls = assemble(answer.take_tool_deltas())
        if calls and toolbox is not None:
            if rounds >= toolbox.max_rounds:
                raise ToolRoundsError(
                    f"The model still called tools after {rounds} rounds, so it was stopped "
                    "there; raise AmigoMagics.max_tool_rounds if it needs more."
                )
            rounds += 1
            outcomes = [await toolbox.handle(call, answer) for call in calls]
            messages.append(_assistant(answer.text[start:], calls))
            messages += [_tool_message(outcome) for outcome in outcomes]
            answer.another_request(estimate_prompt_tokens(messages))  # each round counts
            answer.meta["tools"] = [outcome.meta() for outcome in toolbox.outcomes]
            answer.meta["tool_rounds"] = rounds
            continue
        if calls:
            answer.warn("the model asked to call a tool, but none was offered (-T NAME)")
        if spec is None:
            return
        checked = spec.check(answer.text)
        answer.meta["schema"] = {"name": spec.label, "kind": spec.kind, "repaired": repaired}
        if checked.ok:
            answer.set_value(checked.value)
            return
        if repaired:
            more = len(checked.errors) - 1
            raise AnswerFormatError(
                f"The answer is not {spec.label} even after one repair: {checked.errors[0]}"
                + (f" (and {more} more)" if more else "")
                + "; its text is kept, -o was not set."
            )
        repaired = True
        messages.append({"role": "assistant", "content": answer.text})
        messages.append({"role": "user", "content": spec.repair(checked.errors)})
        answer.another_request(estimate_prompt_tokens(messages))  # the repair counts too
        answer.restart(f"repaired once ({checked.errors[0]})")


def _assistant(text: str, calls: list[ToolCall]) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "tool_calls": [call.wire() for call in calls]}


def _tool_message(outcome: Outcome) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": outcome.call.id, "content": outcome.result}
