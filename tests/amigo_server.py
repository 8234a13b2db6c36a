"""A loopback AmigoChat server with fault switches, for tests, notebooks and benchmarks.

It is an independent implementation of the wire protocol described in
``docs/amigochat-protocol.md`` (it deliberately does not import ``amigo_magic``): a real
HTTP/1.1 server on 127.0.0.1 built on :class:`http.server.ThreadingHTTPServer`, with keep-alive
connections and hand-written chunked transfer-encoding for server-sent-event streams.

Typical use::

    with AmigoServer() as server:
        server.enqueue(Reply.stream("Hello there", fail_after=1))
        ...  # point the client at server.base_url
        assert server.requests[0].json["model"] == "gpt-4o-mini"

Run it by hand with ``python -m tests.amigo_server [--port N] [--api-key K]``; it prints
``AMIGO_BASE_URL=http://127.0.0.1:PORT/v1`` and serves until killed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json as _json
import math
import re
import select
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "CHAT_MODELS",
    "IMAGE_MODELS",
    "AmigoServer",
    "Recorded",
    "Reply",
    "main",
]

# --------------------------------------------------------------------------------------------
# Model table (copied from the protocol reference; the spellings are the server's own).
# --------------------------------------------------------------------------------------------

#: Chat models: id -> personaId.
CHAT_MODELS: dict[str, str] = {
    "gpt-4o-2024-11-20": "gpt",
    "gpt-4o": "summarizer",
    "gpt-4o-mini": "amigo",
    "o1-preview-": "openai-o-one",
    "o1-preview-2024-09-12-": "orion",
    "o1-mini-": "openai-o-one-mini",
    "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo": "llama-three-point-one",
    "meta-llama/Llama-3.2-90B-Vision-Instruct-Turbo": "llama-3-2",
    "codellama/CodeLlama-34b-Instruct-hf": "codellama-CodeLlama-34b-Instruct-hf",
    "gemini-1.5-pro": "gemini-1-5-pro",
    "gemini-1.5-flash": "gemini-1.5-flash",
    "claude-3-5-sonnet-20240620": "claude",
    "claude-3-5-sonnet-20241022": "clude-claude-3-5-sonnet-20241022",
    "claude-3-5-haiku-latest": "3-5-haiku",
    "Qwen/Qwen2.5-72B-Instruct-Turbo": "qwen-2-5",
    "google/gemma-2b-it": "google-gemma-2b-it",
    "google/gemma-7b": "google-gemma-7b",
    "Gryphe/MythoMax-L2-13b": "Gryphe-MythoMax-L2-13b",
    "mistralai/Mistral-7B-Instruct-v0.3": "mistralai-Mistral-7B-Instruct-v0.1",
    "mistralai/mistral-tiny": "mistralai-mistral-tiny",
    "mistralai/mistral-nemo": "mistralai-mistral-nemo",
    "deepseek-ai/deepseek-llm-67b-chat": "deepseek-ai-deepseek-llm-67b-chat",
    "databricks/dbrx-instruct": "databricks-dbrx-instruct",
    "NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO": "NousResearch-Nous-Hermes-2-Mixtral-8x7B-DPO",
    "x-ai/grok-beta": "x-ai-grok-beta",
    "anthracite-org/magnum-v4-72b": "anthracite-org-magnum-v4-72b",
    "cohere/command-r-plus": "cohere-command-r-plus",
    "ai21/jamba-1-5-mini": "ai21-jamba-1-5-mini",
    "zero-one-ai/Yi-34B": "zero-one-ai-Yi-34B",
}

#: Image models: id -> personaId.
IMAGE_MODELS: dict[str, str] = {
    "flux-pro/v1.1": "flux-1-1-pro",
    "flux-realism": "flux-realism",
    "flux-pro": "flux-pro",
    "flux-pro/v1.1-ultra": "flux-pro-v1.1-ultra",
    "flux-pro/v1.1-ultra-raw": "flux-pro-v1.1-ultra-raw",
    "flux/dev": "flux-dev",
    "dall-e-3": "dalle-three",
    "recraft-v3": "recraft",
}

DEFAULT_MODEL = "gpt-4o-mini"
CHAT_PATH = "/v1/chat/completions"
IMAGES_PATH = "/v1/images/generations"
MODELS_PATH = "/v1/models"
FILES_PREFIX = "/files/"
_COALESCE_BYTES = 16384

_WORDS = re.compile(r"\S+\s*|\s+")
_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_LINE_ENDINGS = ("\n", "\r\n", "\r")


def _dumps(obj: Any) -> str:
    return _json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _nest(status: int, message: str, *, with_error: bool = True) -> dict[str, Any]:
    """A NestJS-style error body: ``{"message", "error", "statusCode"}``."""
    body: dict[str, Any] = {"message": message}
    if with_error:
        body["error"] = _reason(status)
    body["statusCode"] = status
    return body


def _openai_error(status: int, message: str) -> dict[str, Any]:
    kind, code = {
        401: ("authentication_error", "invalid_api_key"),
        403: ("permission_error", None),
        404: ("not_found_error", None),
        429: ("rate_limit_error", "rate_limit_exceeded"),
    }.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _version_tuple(version: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in version.strip().split("."))
    except ValueError:
        return None


def _version_lt(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) < b + (0,) * (width - len(b))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    dicts = [m for m in messages if isinstance(m, dict)]
    for message in reversed(dicts):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return _content_text(dicts[-1].get("content")) if dicts else ""


def _prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(
        len(_content_text(m.get("content")).split()) for m in messages if isinstance(m, dict)
    )


def _make_png(prompt: str, index: int, size: tuple[int, int]) -> bytes:
    """A deterministic PNG: a vertical two-colour gradient chosen by a hash of prompt+index."""
    from PIL import Image  # imported lazily: only image replies need Pillow

    digest = hashlib.sha256(f"{index}\0{prompt}".encode()).digest()
    width, height = max(1, int(size[0])), max(1, int(size[1]))
    gradient = Image.linear_gradient("L").resize((width, height))
    bands = [
        gradient.point(lambda v, a=a, b=b: a + (b - a) * v // 255)
        for a, b in zip(digest[0:3], digest[3:6], strict=True)
    ]
    buffer = io.BytesIO()
    Image.merge("RGB", bands).save(buffer, format="PNG")
    return buffer.getvalue()


_CLOUDFLARE_BLOCK = """<!DOCTYPE html>
<!--[if lt IE 7]> <html class="no-js ie6 oldie" lang="en-US"> <![endif]-->
<!--[if gt IE 8]><!--> <html class="no-js" lang="en-US"> <!--<![endif]-->
<head>
<title>Attention Required! | Cloudflare</title>
<meta charset="UTF-8" />
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<meta http-equiv="X-UA-Compatible" content="IE=Edge" />
<meta name="robots" content="noindex, nofollow" />
<meta name="viewport" content="width=device-width,initial-scale=1" />
<link rel="stylesheet" id="cf_styles-css" href="/cdn-cgi/styles/cf.errors.css" />
</head>
<body>
  <div id="cf-wrapper">
    <div id="cf-error-details" class="cf-error-details-wrapper">
      <div class="cf-wrapper cf-header cf-error-overview">
        <h1 data-translate="block_headline">Sorry, you have been blocked</h1>
        <h2 class="cf-subheadline"><span data-translate="unable_to_access">You are unable to
          access</span> amigochat.io</h2>
      </div>
      <div class="cf-section cf-wrapper">
        <div class="cf-columns two">
          <div class="cf-column">
            <h2 data-translate="blocked_why_headline">Why have I been blocked?</h2>
            <p data-translate="blocked_why_detail">This website is using a security service to
              protect itself from online attacks. The action you just performed triggered the
              security solution.</p>
          </div>
          <div class="cf-column">
            <h2 data-translate="blocked_resolve_headline">What can I do to resolve this?</h2>
            <p data-translate="blocked_resolve_detail">You can email the site owner to let them
              know you were blocked.</p>
          </div>
        </div>
      </div>
      <div class="cf-error-footer cf-wrapper w-240 lg:w-full py-10 sm:py-4 sm:px-8 mx-auto
        text-center sm:text-left border-solid border-0 border-t border-gray-300">
        <p class="text-13">
          <span class="cf-footer-item sm:block sm:mb-1">Cloudflare Ray ID:
            <strong class="font-semibold">{ray}</strong></span>
          <span class="cf-footer-separator sm:hidden">&bull;</span>
          <span class="cf-footer-item sm:block sm:mb-1">Performance &amp; security by
            <a rel="noopener noreferrer" href="https://www.cloudflare.com/5xx-error-landing"
               target="_blank">Cloudflare</a></span>
        </p>
      </div>
    </div>
  </div>
</body>
</html>
"""

_CLOUDFLARE_CHALLENGE = """<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
<meta http-equiv="X-UA-Compatible" content="IE=Edge">
<meta name="robots" content="noindex,nofollow">
<meta name="viewport" content="width=device-width,initial-scale=1">
</head><body><div class="main-wrapper" role="main"><div class="main-content">
<h1 class="zone-name-title h1">amigochat.io</h1>
<h2 class="h2" id="challenge-running">Checking if the site connection is secure</h2>
<noscript><div class="h2"><span id="challenge-error-text">Enable JavaScript and cookies to
continue</span></div></noscript>
<div id="challenge-body-text" class="core-msg spacer">amigochat.io needs to review the security
of your connection before proceeding.</div>
</div></div>
<div class="footer" role="contentinfo"><div class="footer-inner"><div class="clearfix
diagnostic-wrapper"><div class="ray-id">Ray ID: <code>{ray}</code></div></div>
<div class="text-center" id="footer-text">Performance &amp; security by Cloudflare</div></div>
</div></body></html>
"""


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int = 0  # the client's source port: one per TCP connection
    received: float = 0.0  # time.monotonic() when its headers were read

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or ``None`` when it is empty or not JSON."""
        try:
            return _json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


def _header_pairs(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in (headers or {}).items())


@dataclass(frozen=True)
class Reply:
    """A scripted answer for one request; build it with the classmethod constructors.

    ``kind`` is one of ``"stream"``, ``"json"``, ``"completion"``, ``"raw"`` or ``"image"``.
    ``stall_before`` (seconds) applies to every kind: the server sleeps before the status line.
    """

    kind: str
    status: int | None = None
    payload: Any = None
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    stall_before: float = 0.0
    # -- stream ------------------------------------------------------------------------------
    text: str | None = None
    chunks: tuple[str, ...] | None = None
    role_chunk: bool = True
    usage: bool = True
    finish_reason: str | None = "stop"
    done: bool = True
    fail_after: int | None = None
    stall_after: tuple[int, float] | None = None
    delay: float = 0.0
    drip: float = 0.0
    split: int | None = None
    line_ending: str = "\n"
    malformed_after: int | None = None
    keepalive_every: int | None = None
    error_after: int | None = None
    in_band_error: dict[str, Any] | None = None
    error_event: str | None = None
    content_encoding: str | None = None
    invalid_utf8: bool = False
    text_field: str = "delta"
    batch: int = 1
    coalesce: bool = True
    # -- completion --------------------------------------------------------------------------
    wrapped: bool = False
    # -- image -------------------------------------------------------------------------------
    n: int = 1
    b64: bool = False
    size: tuple[int, int] = (64, 64)
    image_status: int = 200
    image_content_type: str = "image/png"
    image_bytes: bytes | None = None
    url: str | None = None

    # ---------------------------------------------------------------------------- constructors

    @classmethod
    def stream(
        cls,
        text: str | None = None,
        *,
        chunks: Iterable[str] | None = None,
        role_chunk: bool = True,
        usage: bool = True,
        finish_reason: str | None = "stop",
        done: bool = True,
        fail_after: int | None = None,
        stall_before: float = 0.0,
        stall_after: tuple[int, float] | None = None,
        delay: float = 0.0,
        drip: float = 0.0,
        split: int | None = None,
        line_ending: str = "\n",
        malformed_after: int | None = None,
        keepalive_every: int | None = None,
        error_after: int | None = None,
        in_band_error: dict[str, Any] | None = None,
        error_event: str | None = None,
        content_encoding: str | None = None,
        invalid_utf8: bool = False,
        text_field: str = "delta",
        batch: int = 1,
        coalesce: bool = True,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An SSE chat answer.

        ``text`` is cut into word chunks (whitespace kept); ``chunks`` gives them explicitly;
        with neither, the server streams its default ``"Echo: <last user message>"``.
        Every ``*_after=N`` switch fires after N text chunks (clamped to the chunk count, so it
        always fires). ``in_band_error`` alone means ``error_after=0``.

        ``error_event`` sends an SSE ``event: error`` whose data is that text (each line a
        ``data:`` line; JSON or plain) at ``error_after``, then ``data: [DONE]`` (with
        ``done``): a server that reports a failure in-band and ends the stream "well".

        ``content_encoding`` sends the whole body at once, labelled with that coding:
        ``"gzip"`` really compressed; ``"br"`` as a valid brotli stream of stored
        (uncompressed) meta-blocks, which is what a client without brotli then misreads; any
        other name, the plain body under that label.

        Framing: each HTTP chunk holds ``batch`` events (``split``: fixed-size pieces of the
        byte stream; ``drip``: one byte per chunk). With ``batch=1`` and nothing timed between
        events, consecutive chunks share one socket write (up to 16 KiB) for speed;
        ``coalesce=False`` forces one socket write per HTTP chunk.
        """
        if line_ending not in _LINE_ENDINGS:
            raise ValueError(f"line_ending must be one of {_LINE_ENDINGS!r}")
        if text_field not in ("delta", "text"):
            raise ValueError("text_field must be 'delta' or 'text'")
        if batch < 1:
            raise ValueError("batch must be >= 1")
        if split is not None and split < 1:
            raise ValueError("split must be >= 1")
        if keepalive_every is not None and keepalive_every < 1:
            raise ValueError("keepalive_every must be >= 1")
        if (in_band_error is not None or error_event is not None) and error_after is None:
            error_after = 0
        return cls(
            kind="stream",
            status=status,
            headers=_header_pairs(headers),
            text=text,
            chunks=tuple(chunks) if chunks is not None else None,
            role_chunk=role_chunk,
            usage=usage,
            finish_reason=finish_reason,
            done=done,
            fail_after=fail_after,
            stall_before=stall_before,
            stall_after=stall_after,
            delay=delay,
            drip=drip,
            split=split,
            line_ending=line_ending,
            malformed_after=malformed_after,
            keepalive_every=keepalive_every,
            error_after=error_after,
            in_band_error=in_band_error,
            error_event=error_event,
            content_encoding=content_encoding,
            invalid_utf8=invalid_utf8,
            text_field=text_field,
            batch=batch,
            coalesce=coalesce,
        )

    @classmethod
    def json(
        cls,
        body: Any,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        stall_before: float = 0.0,
    ) -> Reply:
        """``body`` as JSON (``str``/``bytes`` are sent verbatim); status defaults to success."""
        return cls(
            kind="json",
            payload=body,
            status=status,
            content_type="application/json; charset=utf-8",
            headers=_header_pairs(headers),
            stall_before=stall_before,
        )

    @classmethod
    def completion(
        cls,
        text: str,
        *,
        wrapped: bool = False,
        status: int | None = None,
        stall_before: float = 0.0,
    ) -> Reply:
        """A non-streaming OpenAI ``chat.completion`` body, or ``{"message": <it>}``."""
        return cls(
            kind="completion",
            text=text,
            wrapped=wrapped,
            status=status,
            content_type="application/json; charset=utf-8",
            stall_before=stall_before,
        )

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        retry_after: str | None = None,
        shape: str = "nest",
        headers: Mapping[str, str] | None = None,
        stall_before: float = 0.0,
    ) -> Reply:
        """An error body: ``shape`` is ``"nest"``, ``"error"`` or ``"openai"``."""
        if shape == "nest":
            payload: dict[str, Any] = _nest(status, message)
        elif shape == "error":
            payload = {"error": message}
        elif shape == "openai":
            payload = _openai_error(status, message)
        else:
            raise ValueError("shape must be 'nest', 'error' or 'openai'")
        pairs = _header_pairs(headers)
        if retry_after is not None:
            pairs += (("retry-after", str(retry_after)),)
        return cls(
            kind="json",
            payload=payload,
            status=status,
            content_type="application/json; charset=utf-8",
            headers=pairs,
            stall_before=stall_before,
        )

    @classmethod
    def cloudflare(cls, status: int = 403, *, challenge: bool = False) -> Reply:
        """A Cloudflare HTML page: the "Attention Required!" block page, or with
        ``challenge=True`` the "Just a moment..." JavaScript challenge."""
        ray = hashlib.sha256(f"{status}{challenge}".encode()).hexdigest()[:16]
        template = _CLOUDFLARE_CHALLENGE if challenge else _CLOUDFLARE_BLOCK
        headers: dict[str, str] = {"server": "cloudflare", "cf-ray": f"{ray}-AMS"}
        if challenge:
            headers["cf-mitigated"] = "challenge"
        return cls(
            kind="raw",
            status=status,
            body=template.replace("{ray}", ray).encode(),
            content_type="text/html; charset=UTF-8",
            headers=_header_pairs(headers),
        )

    @classmethod
    def raw(
        cls,
        body: bytes,
        *,
        status: int = 200,
        content_type: str | None = "application/json",
        headers: Mapping[str, str] | None = None,
        stall_before: float = 0.0,
    ) -> Reply:
        """Exactly these bytes (``content_type=None`` sends no content-type header)."""
        return cls(
            kind="raw",
            status=status,
            body=bytes(body),
            content_type=content_type,
            headers=_header_pairs(headers),
            stall_before=stall_before,
        )

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Reply:
        """A redirect to ``location`` with an empty body."""
        return cls(kind="raw", status=status, headers=(("location", location),))

    @classmethod
    def image(
        cls,
        *,
        n: int = 1,
        b64: bool = False,
        size: tuple[int, int] = (64, 64),
        image_status: int = 200,
        image_content_type: str = "image/png",
        image_bytes: bytes | None = None,
        url: str | None = None,
        status: int | None = None,
        stall_before: float = 0.0,
    ) -> Reply:
        """An images answer ``{"created", "data": [{"url"|"b64_json", "revised_prompt"}]}``.

        The PNGs are served at ``GET /files/<name>.png`` with ``image_status`` and
        ``image_content_type``; ``image_bytes`` replaces the generated PNG, ``url`` replaces the
        URL written into the JSON.
        """
        return cls(
            kind="image",
            n=n,
            b64=b64,
            size=size,
            image_status=image_status,
            image_content_type=image_content_type,
            image_bytes=image_bytes,
            url=url,
            status=status,
            content_type="application/json; charset=utf-8",
            stall_before=stall_before,
        )


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``sock`` to become readable (data, EOF or error)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(math.ceil(timeout * 1000)))
    return bool(select.select([sock], [], [], timeout)[0])  # pragma: no cover - non-POSIX


class _ClientGone(Exception):
    """The peer closed the connection (or the server is stopping) while we were writing."""


class _Sleep:
    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class _Abort:
    __slots__ = ()


_ABORT = _Abort()


@dataclass
class _Ctx:
    """What a reply needs to know about the request it answers."""

    endpoint: str  # "chat" or "images"
    body: Any
    model: str
    prompt: str
    messages: Any


@dataclass
class _FileEntry:
    status: int
    content_type: str


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # AmigoServer.stop joins the connection threads itself
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, owner: AmigoServer, port: int) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn (a reverse lookup); skip it.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="amigo-server-conn",
            daemon=True,
        )
        self.owner._track_thread(thread)
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, _ClientGone)) or (
            isinstance(exc, OSError) and self.owner._stop_event.is_set()
        ):
            return  # client went away / server stopping: not worth a traceback
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    server_version = "amigo-test-server"

    # ---------------------------------------------------------------------------- plumbing

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._unregister(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request logging."""

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as exc:
            raise _ClientGone from exc

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up (raising _ClientGone) if the client hangs up or we stop."""
        if seconds <= 0:
            return
        owner = self.server.owner
        sock = self.connection
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if owner._stop_event.is_set():
                raise _ClientGone("server stopping")
            try:
                if remaining < 0.002:
                    # Too short for poll's millisecond resolution: check once, then sleep.
                    readable = _readable(sock, 0.0)
                    if not readable:
                        time.sleep(remaining)
                        continue
                else:
                    readable = _readable(sock, remaining)
                if readable:
                    if not sock.recv(1, socket.MSG_PEEK):
                        raise _ClientGone("client closed the connection")
                    # The client pipelined more bytes: plain wait for the rest.
                    owner._stop_event.wait(max(0.0, deadline - time.monotonic()))
            except (OSError, ValueError) as exc:
                raise _ClientGone from exc

    def _head(
        self,
        status: int,
        content_type: str | None,
        headers: Iterable[tuple[str, str]],
        *,
        length: int | None,
    ) -> bytes:
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        if content_type:
            lines.append(f"content-type: {content_type}")
        if length is None:
            lines.append("transfer-encoding: chunked")
        else:
            lines.append(f"content-length: {length}")
        lines.extend(f"{k}: {v}" for k, v in headers)
        if self.close_connection:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    def _respond(
        self,
        status: int,
        body: bytes,
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._write(self._head(status, content_type, headers, length=len(body)) + body)

    def _respond_json(
        self, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        if isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode()
        else:
            data = _dumps(payload).encode()
        self._respond(status, data, "application/json; charset=utf-8", headers)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    break
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # ---------------------------------------------------------------------------- dispatch

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        owner = self.server.owner
        try:
            try:
                body = self._read_body()
            except ValueError:
                self.close_connection = True
                self._respond_json(400, _nest(400, "Bad request body"))
                return
            headers: dict[str, str] = {}
            for name, value in self.headers.items():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            port = self.client_address[1] if self.client_address else 0
            owner._record(Recorded(self.command, self.path, headers, body, port, time.monotonic()))
            self._route(owner, self.command, urlsplit(self.path).path, headers, body)
        except _ClientGone:
            self.close_connection = True
            if not owner._stop_event.is_set():
                owner._count_disconnect()

    def _route(
        self, owner: AmigoServer, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        norm = path.rstrip("/") or "/"
        parsed: Any = None
        parsed_ok = False
        try:
            parsed = _json.loads(body) if body else None
            parsed_ok = body != b""
        except (ValueError, UnicodeDecodeError):
            pass

        if method == "POST" and norm.startswith("/v1/") and owner.strict_headers:
            problem = owner._check_request(headers, parsed_ok)
            if problem is not None:
                self._respond_json(problem[0], problem[1])
                return

        if method == "POST" and norm in (CHAT_PATH, IMAGES_PATH):
            endpoint = "chat" if norm == CHAT_PATH else "images"
            data = parsed if isinstance(parsed, dict) else {}
            messages = data.get("messages")
            prompt = data.get("prompt")
            ctx = _Ctx(
                endpoint=endpoint,
                body=parsed,
                model=str(data.get("model") or DEFAULT_MODEL),
                prompt=prompt if isinstance(prompt, str) else _last_user_text(messages),
                messages=messages,
            )
            reply = owner._next_reply()
            if reply is None:
                reply = self._default_reply(owner, ctx, parsed)
                if reply is None:
                    return  # an error was already sent
            self._serve(owner, reply, ctx)
        elif method == "GET" and norm == MODELS_PATH:
            ids = [*CHAT_MODELS, *IMAGE_MODELS]
            self._respond_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": i, "object": "model", "owned_by": "amigo"} for i in ids],
                },
            )
        elif method == "GET" and path.startswith(FILES_PREFIX):
            found = owner._file(path)
            if found is None:
                self._respond_json(404, _nest(404, f"Cannot GET {path}"))
                return
            data_bytes, entry = found
            if entry.status >= 400:
                self._respond_json(entry.status, _nest(entry.status, _reason(entry.status)))
            else:
                self._respond(entry.status, data_bytes, entry.content_type)
        else:
            self._respond_json(404, _nest(404, f"Cannot {method} {path}"))

    def _default_reply(self, owner: AmigoServer, ctx: _Ctx, parsed: Any) -> Reply | None:
        if not isinstance(parsed, dict):
            self._respond_json(400, _nest(400, "Request body must be a JSON object"))
            return None
        if ctx.endpoint == "images":
            if owner.strict_headers:
                prompt = parsed.get("prompt")
                if not isinstance(prompt, str) or not prompt.strip():
                    self._respond_json(400, _nest(400, "prompt must be a non-empty string"))
                    return None
                model = parsed.get("model")
                if not isinstance(model, str) or IMAGE_MODELS.get(model) != parsed.get("personaId"):
                    msg = f"Invalid persona for model {model}"
                    self._respond_json(400, _nest(400, msg, with_error=False))
                    return None
            return Reply.image()
        if owner.strict_headers:
            model = parsed.get("model")
            if not isinstance(model, str) or CHAT_MODELS.get(model) != parsed.get("personaId"):
                msg = f"Invalid persona for model {model}"
                self._respond_json(400, _nest(400, msg, with_error=False))
                return None
            messages = parsed.get("messages")
            if (
                not isinstance(messages, list)
                or not messages
                or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m
                    for m in messages
                )
            ):
                self._respond_json(
                    400, _nest(400, "messages must be a non-empty list of {role, content}")
                )
                return None
            chat_id = parsed.get("chatId")
            if not isinstance(chat_id, str) or not _UUID4.match(chat_id):
                self._respond_json(400, _nest(400, "chatId must be a uuid4 string"))
                return None
        if parsed.get("stream") is True:
            return Reply.stream()
        return Reply.completion("Echo: " + _last_user_text(parsed.get("messages")))

    # ---------------------------------------------------------------------------- replies

    def _serve(self, owner: AmigoServer, reply: Reply, ctx: _Ctx) -> None:
        if reply.kind == "stream":
            self._serve_stream(owner, reply, ctx)
            return
        if reply.stall_before:
            self._sleep(reply.stall_before)
        status = reply.status if reply.status is not None else owner.success_status
        if reply.kind == "raw":
            self._respond(status, reply.body, reply.content_type, reply.headers)
        elif reply.kind == "json":
            self._respond_json(status, reply.payload, reply.headers)
        elif reply.kind == "completion":
            self._respond_json(status, self._completion_body(reply, ctx), reply.headers)
        elif reply.kind == "image":
            self._respond_json(status, owner._make_images(reply, ctx.prompt), reply.headers)
        else:  # pragma: no cover - constructors only make the kinds above
            raise ValueError(f"unknown reply kind {reply.kind!r}")

    @staticmethod
    def _completion_body(reply: Reply, ctx: _Ctx) -> dict[str, Any]:
        text = reply.text or ""
        prompt_tokens = _prompt_tokens(ctx.messages)
        completion_tokens = len(_WORDS.findall(text))
        body: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": ctx.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return {"message": body} if reply.wrapped else body

    def _serve_stream(self, owner: AmigoServer, reply: Reply, ctx: _Ctx) -> None:
        owner._stream_delta(+1)
        finished = False

        def finish() -> None:
            # Called just before the last byte leaves (or the cut), so a client that has read
            # the whole stream always sees active_streams already decremented.
            nonlocal finished
            if not finished:
                finished = True
                owner._stream_delta(-1)

        try:
            if reply.stall_before:
                self._sleep(reply.stall_before)
            status = reply.status if reply.status is not None else owner.success_status
            headers = (("cache-control", "no-cache"), *reply.headers)
            if reply.content_encoding is not None:
                raw = b"".join(i for i in self._stream_items(reply, ctx) if type(i) is bytes)
                body = _encode_body(raw, reply.content_encoding)
                headers += (("content-encoding", reply.content_encoding),)
                self._write(self._head(status, "text/event-stream", headers, length=None))
                finish()
                self._write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body))
                return
            self._write(self._head(status, "text/event-stream", headers, length=None))
            items = self._stream_items(reply, ctx)
            if reply.batch == 1 and reply.split is None and reply.drip <= 0:
                # Fast path: one HTTP chunk per event. Back-to-back chunks (nothing timed
                # between them) share a socket write of up to _COALESCE_BYTES unless
                # coalesce=False; every sleep/abort flushes what is pending first.
                write = self.wfile.write
                limit = _COALESCE_BYTES if reply.coalesce else 0
                pending: list[bytes] = []
                size = 0
                try:
                    for item in items:
                        if type(item) is bytes:
                            frame = b"%x\r\n%b\r\n" % (len(item), item)
                            if not limit:
                                write(frame)
                                continue
                            pending.append(frame)
                            size += len(frame)
                            if size >= limit:
                                write(b"".join(pending))
                                pending.clear()
                                size = 0
                            continue
                        if pending:
                            write(b"".join(pending))
                            pending.clear()
                            size = 0
                        if isinstance(item, _Sleep):
                            self._sleep(item.seconds)
                        else:
                            finish()
                            self._abort()
                            return
                    pending.append(b"0\r\n\r\n")
                    finish()
                    write(b"".join(pending))
                except OSError as exc:
                    raise _ClientGone from exc
                return
            out = _ChunkedOut(self, reply.batch, reply.split, reply.drip)
            for item in items:
                if type(item) is bytes:
                    out.add(item)
                elif isinstance(item, _Sleep):
                    out.flush(final=True)
                    self._sleep(item.seconds)
                else:
                    out.flush(final=True)
                    finish()
                    self._abort()
                    return
            out.flush(final=True)
            finish()
            self._write(b"0\r\n\r\n")
        finally:
            finish()

    def _abort(self) -> None:
        """Cut the connection mid-body: no terminating chunk, socket shut down."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _stream_items(self, reply: Reply, ctx: _Ctx) -> Iterator[bytes | _Sleep | _Abort]:
        raw = self._raw_events(reply, ctx)
        delay, every = reply.delay, reply.keepalive_every
        if delay <= 0 and not every:
            return raw
        return self._paced(raw, delay, every, reply.line_ending.encode())

    @staticmethod
    def _paced(
        raw: Iterator[bytes | _Sleep | _Abort], delay: float, every: int | None, le: bytes
    ) -> Iterator[bytes | _Sleep | _Abort]:
        comment = b": keep-alive" + le + le
        count = 0
        for item in raw:
            if type(item) is bytes:
                if count and delay > 0:
                    yield _Sleep(delay)
                yield item
                count += 1
                if every and count % every == 0:
                    yield comment
            else:
                yield item

    def _raw_events(self, reply: Reply, ctx: _Ctx) -> Iterator[bytes | _Sleep | _Abort]:
        le = reply.line_ending.encode()
        end = le + le
        if reply.chunks is not None:
            pieces: list[str] = list(reply.chunks)
        else:
            text = reply.text if reply.text is not None else "Echo: " + ctx.prompt
            pieces = _WORDS.findall(text)
        count = len(pieces)

        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        head = (
            f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{int(time.time())},'
            f'"model":{_dumps(ctx.model)},"choices":[{{"index":0,'
        ).encode()
        if reply.text_field == "delta":
            prefix = head + b'"delta":{"content":'
            suffix = b'},"finish_reason":null}]}' + end
        else:
            prefix = head + b'"text":'
            suffix = b',"finish_reason":null}]}' + end

        # Checkpoint i fires after i text chunks, before chunk i (clamped to the count).
        actions: dict[int, list[bytes | _Sleep | _Abort]] = {}
        stop_at: int | None = None
        if reply.stall_after is not None:
            actions.setdefault(min(reply.stall_after[0], count), []).append(
                _Sleep(reply.stall_after[1])
            )
        if reply.malformed_after is not None:
            actions.setdefault(min(reply.malformed_after, count), []).append(
                b'data: {"choices": [' + end
            )
        if reply.error_after is not None and reply.error_event is not None:
            at = min(reply.error_after, count)
            lines = [b"data: " + line.encode() for line in reply.error_event.split("\n")]
            event = le.join([b"event: error", *lines]) + end
            actions.setdefault(at, []).append(event)
            if reply.done:
                actions[at].append(b"data: [DONE]" + end)
            stop_at = at
        elif reply.error_after is not None:
            at = min(reply.error_after, count)
            error = reply.in_band_error or {"message": "Internal error", "type": "server_error"}
            actions.setdefault(at, []).append(b"data: " + _dumps({"error": error}).encode() + end)
            stop_at = at
        if reply.fail_after is not None:
            at = min(reply.fail_after, count)
            if stop_at is None or at < stop_at:
                actions.setdefault(at, []).append(_ABORT)
                stop_at = at

        if reply.role_chunk:
            yield (
                head + b'"delta":{"role":"assistant","content":""},"finish_reason":null}]}' + end
            )
        for i in range(count + 1):
            if actions and i in actions:
                yield from actions[i]
                if i == stop_at:
                    return
            if i == count:
                break
            encoded = _dumps(pieces[i]).encode()
            if reply.invalid_utf8 and i == 0:
                encoded = b'"\xff\xfe' + encoded[1:]
            yield prefix + encoded + suffix

        if reply.usage or reply.finish_reason is not None:
            final: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": ctx.model,
            }
            choice: dict[str, Any] = {"index": 0}
            if reply.text_field == "delta":
                choice["delta"] = {}
            else:
                choice["text"] = ""
            choice["finish_reason"] = reply.finish_reason
            final["choices"] = [choice]
            if reply.usage:
                prompt_tokens = _prompt_tokens(ctx.messages)
                final["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": count,
                    "total_tokens": prompt_tokens + count,
                }
            yield b"data: " + _dumps(final).encode() + end
        if reply.done:
            yield b"data: [DONE]" + end


def _encode_body(data: bytes, coding: str) -> bytes:
    """``data`` in a content coding: gzip for real, brotli as stored meta-blocks, else as is."""
    if coding == "gzip":
        compressor = zlib.compressobj(wbits=31)
        return compressor.compress(data) + compressor.flush()
    if coding != "br":
        return data
    # RFC 7932: WBITS=16 (one 0 bit); per meta-block ISLAST=0, MNIBBLES=4 (00), MLEN-1 in 16
    # bits, ISUNCOMPRESSED=1, zero padding to a byte, then the bytes; last ISLAST=1, ISEMPTY=1.
    out = bytearray()
    bits = 0
    nbits = 0

    def put(value: int, width: int) -> None:
        nonlocal bits, nbits
        bits |= value << nbits
        nbits += width

    def align() -> None:
        nonlocal bits, nbits
        while nbits > 0:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
        bits = nbits = 0

    put(0, 1)  # WBITS = 16
    for start in range(0, len(data), 65536):
        block = data[start : start + 65536]
        put(0, 1)  # ISLAST
        put(0, 2)  # MNIBBLES = 4
        put(len(block) - 1, 16)
        put(1, 1)  # ISUNCOMPRESSED
        align()
        out += block
    put(1, 1)  # ISLAST
    put(1, 1)  # ISLASTEMPTY
    align()
    return bytes(out)


class _ChunkedOut:
    """Groups SSE events into HTTP chunks: ``batch`` events per chunk, or fixed ``split``-byte
    pieces of the continuous byte stream, or one byte per chunk with ``drip`` seconds between."""

    def __init__(self, handler: _Handler, batch: int, split: int | None, drip: float) -> None:
        self.handler = handler
        self.batch = batch
        self.split = split
        self.drip = drip
        self.pending: list[bytes] = []
        self.carry = b""
        self.sent_any = False

    def add(self, event: bytes) -> None:
        self.pending.append(event)
        if len(self.pending) >= self.batch:
            self.flush(final=False)

    def _chunk(self, data: bytes) -> None:
        self.handler._write(b"%x\r\n%b\r\n" % (len(data), data))

    def flush(self, *, final: bool) -> None:
        data = self.carry + b"".join(self.pending)
        self.pending.clear()
        self.carry = b""
        if not data:
            return
        if self.drip > 0:
            for i in range(len(data)):
                if self.sent_any:
                    self.handler._sleep(self.drip)
                self._chunk(data[i : i + 1])
                self.sent_any = True
        elif self.split:
            n = self.split
            full = len(data) if final else len(data) - len(data) % n
            for i in range(0, full, n):
                self._chunk(data[i : i + n])
            self.carry = data[full:]
        else:
            self._chunk(data)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class AmigoServer:
    """A loopback AmigoChat API server (``http://127.0.0.1:PORT/v1``) with scripted replies.

    Without queued replies it behaves like the real service: device-version gate (406), token
    check when ``api_key`` is set (401), JSON body check (400), model/persona validation (400),
    echo answers (``"Echo: <last user message>"``) as SSE or JSON, and generated PNG images.
    ``strict_headers=False`` turns the gates and validation off (OpenAI-compatible clients).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        success_status: int = 201,
        min_device_version: str = "1.0.45",
        strict_headers: bool = True,
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.success_status = success_status
        self.min_device_version = min_device_version
        self.strict_headers = strict_headers
        self.port = port
        self.requests: list[Recorded] = []
        self.images: dict[str, bytes] = {}
        self._files: dict[str, _FileEntry] = {}
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._active_streams = 0
        self._client_disconnects = 0
        self._image_seq = 0
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._origin: str | None = None
        min_version = _version_tuple(min_device_version)
        if min_version is None:
            raise ValueError(f"min_device_version must be dotted integers: {min_device_version!r}")
        self._min_version = min_version

    # ---------------------------------------------------------------------------- lifecycle

    def start(self) -> AmigoServer:
        """Bind 127.0.0.1 (port 0 = any free port) and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("AmigoServer already started")
        self._stop_event.clear()
        httpd = _HTTPServer(self, self.port)
        self._httpd = httpd
        self._origin = f"http://127.0.0.1:{httpd.server_port}"
        self._serve_thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="amigo-server",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and join the connection threads."""
        httpd = self._httpd
        if httpd is None:
            return
        with self._lock:
            self._stop_event.set()
        httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout=5)
        with self._lock:
            threads = list(self._threads)
            self._threads.clear()
        for thread in threads:
            thread.join(timeout=5)
        self._httpd = None
        self._serve_thread = None

    def __enter__(self) -> AmigoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (only after :meth:`start`)."""
        if self._origin is None:
            raise RuntimeError("AmigoServer not started")
        return self._origin

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (only after :meth:`start`)."""
        return self.origin + "/v1"

    @property
    def active_streams(self) -> int:
        """Streaming responses currently being written."""
        return self._active_streams

    @property
    def client_disconnects(self) -> int:
        """Responses aborted because the client closed the connection (write failed, or hung
        up during a stall)."""
        return self._client_disconnects

    # ---------------------------------------------------------------------------- scripting

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies for the next requests to the chat or images endpoint (FIFO)."""
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"expected Reply, got {type(reply).__name__}")
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        """Clear the reply queue, the recorded requests and the disconnect counter."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self._client_disconnects = 0

    # ---------------------------------------------------------------------------- internals

    def _record(self, recorded: Recorded) -> None:
        with self._lock:
            self.requests.append(recorded)

    def _next_reply(self) -> Reply | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _count_disconnect(self) -> None:
        with self._lock:
            self._client_disconnects += 1

    def _stream_delta(self, delta: int) -> None:
        with self._lock:
            self._active_streams += delta

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            stopping = self._stop_event.is_set()
        if stopping:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _track_thread(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _check_request(
        self, headers: Mapping[str, str], parsed_ok: bool
    ) -> tuple[int, dict[str, Any]] | None:
        version = _version_tuple(headers.get("x-device-version", ""))
        if version is None or _version_lt(version, self._min_version):
            return 406, {"message": "not implemented", "error": "Not Acceptable", "statusCode": 406}
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"message": "Unauthorized", "statusCode": 401}
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return 400, _nest(400, "Content-Type must be application/json")
        if not parsed_ok:
            return 400, _nest(400, "Request body is not valid JSON")
        return None

    def _file(self, path: str) -> tuple[bytes, _FileEntry] | None:
        with self._lock:
            data = self.images.get(path)
            entry = self._files.get(path)
        if data is None or entry is None:
            return None
        return data, entry

    def _make_images(self, reply: Reply, prompt: str) -> dict[str, Any]:
        with self._lock:
            self._image_seq += 1
            seq = self._image_seq
        tag = hashlib.sha256(prompt.encode()).hexdigest()[:12]
        items = []
        for index in range(max(0, reply.n)):
            data = (
                reply.image_bytes
                if reply.image_bytes is not None
                else _make_png(prompt, index, reply.size)
            )
            path = f"{FILES_PREFIX}{tag}-{seq}-{index}.png"
            with self._lock:
                self.images[path] = data
                self._files[path] = _FileEntry(reply.image_status, reply.image_content_type)
            item: dict[str, Any] = {}
            if reply.b64:
                item["b64_json"] = base64.b64encode(data).decode("ascii")
            else:
                item["url"] = reply.url if reply.url is not None else self.origin + path
            item["revised_prompt"] = prompt
            items.append(item)
        return {"created": int(time.time()), "data": items}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run a server until interrupted; print ``AMIGO_BASE_URL=...`` first."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.amigo_server", description="Loopback AmigoChat test server."
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any)")
    parser.add_argument("--api-key", default=None, help="require 'Bearer <key>'")
    parser.add_argument("--min-device-version", default="1.0.45")
    parser.add_argument("--success-status", type=int, default=201)
    parser.add_argument(
        "--no-strict", action="store_true", help="skip header gates and body validation"
    )
    args = parser.parse_args(argv)
    server = AmigoServer(
        api_key=args.api_key,
        success_status=args.success_status,
        min_device_version=args.min_device_version,
        strict_headers=not args.no_strict,
        port=args.port,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)  # also when started in the background (SIG_IGN)
    server.start()
    print(f"AMIGO_BASE_URL={server.base_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
