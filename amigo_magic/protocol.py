"""The wire format: request bodies, and replies parsed into typed events.

Pure: works on dicts and bytes. Chat chunks are OpenAI-shaped on every backend, so the parsing
here serves all of them; the AmigoChat-only parts are the body fields ``chatId`` and
``personaId``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from .catalog import Model
from .config import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from .errors import ConfigError, InvalidResponseError, StreamError

__all__ = [
    "ChatParams",
    "Event",
    "Finish",
    "Image",
    "ImageResult",
    "Message",
    "Progress",
    "ReasoningDelta",
    "StreamWarning",
    "TextDelta",
    "ToolCallDelta",
    "Usage",
    "chat_body",
    "error_event_message",
    "error_message_from_body",
    "image_body",
    "image_prompt",
    "in_band_error",
    "parse_chunk",
    "parse_completion",
    "parse_image_reply",
]


class Message(TypedDict):
    """An OpenAI-style chat message; ``content`` is passed through unchanged."""

    role: str
    content: Any


@dataclass(frozen=True, slots=True)
class ChatParams:
    """Sampling parameters, with the reference's defaults; ``extra`` are any others (``-p
    KEY=VALUE``, ``AmigoMagics.params``), put into the request body as given, over these."""

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    max_tokens: int = 4000
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts, as the server reported them."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """Why the model stopped: "stop", "length", …"""

    reason: str


@dataclass(frozen=True, slots=True)
class StreamWarning:
    """Something the user should know that did not stop the answer (e.g. skipped chunks)."""

    message: str


@dataclass(frozen=True, slots=True)
class Progress:
    """The backend is busy before its first token (e.g. "loading" a local model)."""

    phase: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of a thinking model's reasoning (``reasoning_content`` / ``reasoning``), shown
    apart from the answer and never part of its text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call the model makes (OpenAI ``tool_calls``): pieces with the same
    ``index`` build one call — its ``id`` and ``name`` come first, ``arguments`` (JSON text) in
    pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


Event = TextDelta | Usage | Finish | StreamWarning | Progress | ReasoningDelta | ToolCallDelta


@dataclass(frozen=True, slots=True)
class Image:
    """One generated picture: a URL, or base64 bytes from OpenAI-style servers."""

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class ImageResult:
    """The pictures of one image request; ``prompt`` doubles as their alt text."""

    images: tuple[Image, ...]
    prompt: str
    model: str


def chat_body(
    model: Model,
    messages: Sequence[Mapping[str, Any]],
    params: ChatParams,
    *,
    chat_id: str,
    stream: bool,
) -> dict[str, Any]:
    """The AmigoChat chat body, fields as the reference lists them (then ``params.extra``)."""
    return {
        "chatId": chat_id,
        "frequency_penalty": params.frequency_penalty,
        "max_tokens": params.max_tokens,
        "messages": list(messages),
        "model": model.id,
        "personaId": model.persona_id,
        "presence_penalty": params.presence_penalty,
        "stream": stream,
        "temperature": params.temperature,
        "top_p": params.top_p,
        **params.extra,
    }


def image_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt of an image request: the text of the *last* user message."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = _content_text(message.get("content"))
            if text.strip():
                return text
    raise ConfigError("An image request needs a prompt: no user message with text was given.")


def image_body(model: Model, prompt: str) -> dict[str, Any]:
    """The AmigoChat image body."""
    return {"prompt": prompt, "model": model.id, "personaId": model.persona_id}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return "" if content is None else str(content)


def in_band_error(payload: Any) -> str | None:
    """The message of an ``{"error": ...}`` payload, or None when it is not one."""
    if not isinstance(payload, dict) or not payload.get("error"):
        return None
    error = payload["error"]
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or json.dumps(error))
    return str(error)


def error_event_message(data: str) -> str:
    """The message of an SSE ``event: error``, whose data may be JSON (``{"error": ...}``,
    ``{"message": ...}``, ``{"detail": ...}``, a JSON string) or plain text; one line, at most
    300 characters, "no details" when it says nothing."""
    text = data
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if isinstance(payload, str):
        text = payload
    elif isinstance(payload, dict):
        found = in_band_error(payload)
        if found is None:
            for key in ("message", "detail", "msg"):
                if isinstance(payload.get(key), str) and payload[key]:
                    found = payload[key]
                    break
        text = found if found is not None else _preview(payload)
    words = " ".join(text.split()).rstrip(".")
    return _one_line(words, 300) if words else "no details"


def parse_chunk(payload: Any) -> list[Event]:
    """One streamed chunk (the JSON of an SSE ``data`` field) → events.

    A role-only first chunk yields nothing; usage chunks may have empty ``choices``.
    This runs once per chunk of every answer, so the usual chunk (text only) takes the shortest
    path.
    """
    if not isinstance(payload, dict):
        return []
    if payload.get("error"):  # in_band_error's test, inline
        message = in_band_error(payload)
        raise StreamError(f"The server sent an error in the middle of the answer: {message}")
    choices = payload.get("choices")
    usage = payload.get("usage")
    events: list[Event] = []
    if (
        choices
        and isinstance(choices, list)
        and isinstance(choices[0], dict)
        and not choices[0].get("index")  # another choice's (-p n=2): the answer is the first
    ):
        choice = choices[0]
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        if text is None:
            text = choice.get("text")
        reason = choice.get("finish_reason")
        if not text and isinstance(delta, dict):  # a thinking model's reasoning comes alone
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if thought and isinstance(thought, str):
                events.append(ReasoningDelta(thought))
        if text and isinstance(text, str):
            if reason is None and usage is None:
                return [_text_delta(text)]  # the usual chunk
            events.append(TextDelta(text))
        if isinstance(delta, dict) and delta.get("tool_calls"):
            events += _tool_call_deltas(delta["tool_calls"])
        if reason and isinstance(reason, str):
            events.append(Finish(reason))
    if isinstance(usage, dict):
        events.append(_usage(usage))
    return events


def _tool_call_deltas(calls: Any) -> list[Event]:
    """``tool_calls`` of a delta (or of a whole message) → one event per call piece."""
    events: list[Event] = []
    for position, call in enumerate(calls if isinstance(calls, list) else []):
        if not isinstance(call, dict):
            continue
        function = call["function"] if isinstance(call.get("function"), dict) else {}
        index, name = call.get("index", position), function.get("name")
        arguments = function.get("arguments")
        if isinstance(arguments, (dict, list)):  # a server that sends the object itself
            arguments = json.dumps(arguments)
        events.append(
            ToolCallDelta(
                index if isinstance(index, int) else position,
                call["id"] if isinstance(call.get("id"), str) else None,
                name if isinstance(name, str) else None,
                arguments if isinstance(arguments, str) else "",
            )
        )
    return events


def _text_delta(text: str) -> TextDelta:
    """``TextDelta(text)`` without the frozen dataclass's ``object.__setattr__`` (hot path)."""
    event: TextDelta = _new(TextDelta)
    _set_text(event, text)
    return event


_new = object.__new__
_set_text = TextDelta.__dict__["text"].__set__


def parse_completion(payload: Any) -> list[Event]:
    """A non-streamed JSON reply, OpenAI-shaped or wrapped in ``{"message": {...}}``."""
    message = in_band_error(payload)
    if message is not None:
        raise InvalidResponseError(f"The server answered with an error: {message}")
    if isinstance(payload, dict) and isinstance(payload.get("message"), dict):
        payload = payload["message"]
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InvalidResponseError(
            f"The server's reply has no answer in it (no choices): {_preview(payload)}"
        )
    choice = choices[0]
    inner = choice.get("message")
    text = inner.get("content") if isinstance(inner, dict) else choice.get("text")
    calls = _tool_call_deltas(inner.get("tool_calls")) if isinstance(inner, dict) else []
    if text is None and calls:
        text = ""
    if not isinstance(text, str):
        raise InvalidResponseError(
            f"The server's reply has no answer text in it: {_preview(payload)}"
        )
    events: list[Event] = [TextDelta(text)] if text else []
    thought = inner.get("reasoning_content") or inner.get("reasoning") if inner else None
    if isinstance(thought, str) and thought:
        events.insert(0, ReasoningDelta(thought))
    events += calls
    if isinstance(choice.get("finish_reason"), str):
        events.append(Finish(choice["finish_reason"]))
    usage = payload.get("usage")
    if isinstance(usage, dict):
        events.append(_usage(usage))
    return events


def parse_image_reply(payload: Any, *, prompt: str, model: str) -> ImageResult:
    """``{"data": [{"url"| "b64_json", "revised_prompt"}]}`` → an :class:`ImageResult`.

    An item with neither a URL nor bytes is an error, not silently dropped.
    """
    message = in_band_error(payload)
    if message is not None:
        raise InvalidResponseError(f"The image server answered with an error: {message}")
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not data:
        raise InvalidResponseError(f"The image reply holds no pictures: {_preview(payload)}")
    images: list[Image] = []
    for index, item in enumerate(data):
        url = item.get("url") if isinstance(item, dict) else None
        b64 = item.get("b64_json") if isinstance(item, dict) else None
        if not (isinstance(url, str) and url) and not (isinstance(b64, str) and b64):
            raise InvalidResponseError(
                f"Picture {index + 1} of the image reply has neither a url nor b64_json: "
                f"{_preview(item)}"
            )
        revised = item.get("revised_prompt")
        images.append(
            Image(
                url=url if isinstance(url, str) and url else None,
                b64_json=b64 if isinstance(b64, str) and b64 else None,
                revised_prompt=revised if isinstance(revised, str) else None,
            )
        )
    return ImageResult(tuple(images), prompt, model)


def _usage(usage: Mapping[str, Any]) -> Usage:
    def count(key: str) -> int | None:
        value = usage.get(key)
        return value if isinstance(value, int) else None

    return Usage(count("prompt_tokens"), count("completion_tokens"), count("total_tokens"))


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_CLOUDFLARE = (b"cloudflare", b"attention required", b"just a moment", b"cf-ray", b"cf-chl")


def error_message_from_body(body: bytes, content_type: str = "") -> tuple[str, bool]:
    """The server's own words from an error body, and whether Cloudflare sent it.

    Knows ``{"message": ..., "statusCode": ...}``, ``{"error": "..."}``,
    ``{"error": {"message": ...}}``, HTML pages (their title) and plain text.
    """
    stripped = body.strip()
    if not stripped:
        return "", False
    lowered = stripped[:20000].lower()
    if b"<html" in lowered or b"<!doctype" in lowered or "html" in content_type:
        cloudflare = any(marker in lowered for marker in _CLOUDFLARE)
        match = _TITLE.search(stripped)
        title = match.group(1).decode("utf-8", "replace") if match else "an HTML page"
        return _one_line(html.unescape(title)), cloudflare
    try:
        payload = json.loads(stripped)
    except ValueError:
        return _one_line(stripped.decode("utf-8", "replace")), False
    if isinstance(payload, dict):
        message = payload.get("message")
        error = payload.get("error")
        if isinstance(message, str) and message:
            return _one_line(message), False
        if isinstance(error, dict) and error.get("message"):
            return _one_line(str(error["message"])), False
        if isinstance(error, str) and error:
            return _one_line(error), False
        if isinstance(payload.get("detail"), str):
            return _one_line(payload["detail"]), False
    return _one_line(_preview(payload)), False


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _preview(payload: Any) -> str:
    try:
        text = json.dumps(payload, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(payload)
    return _one_line(text, 120)
