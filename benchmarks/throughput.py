"""Client throughput: one answer of many small SSE chunks, sent as fast as the server can, read
by three clients in turn — the raw floor (httpx + ``json.loads``), ours, and the openai SDK.

All three run on one asyncio loop in this process, each with its own warm (pooled) connection;
the order rotates every repeat so that machine noise hits them alike, and the ratios are taken
within a repeat. Before timing, the bytes each server sends for the answer are compared (ids and
timestamps aside): every client parses the same stream.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from benchmarks.common import MODEL, RATIO, Context, Row, rotate

NAME = "throughput"
TITLE = "Client throughput"

MESSAGES = [{"role": "user", "content": "stream"}]
CLIENTS = ["raw", "ours", "openai"]


def run(ctx: Context) -> list[Row]:
    n = 2_000 if ctx.quick else 50_000
    return asyncio.run(_run(ctx, n))


async def _run(ctx: Context, n: int) -> list[Row]:
    from openai import AsyncOpenAI

    from amigo_magic.backends.amigo import AmigoBackend
    from amigo_magic.config import Settings

    server = ctx.server
    backend = AmigoBackend(Settings(base_url=server.amigo_url))
    raw_client = httpx.AsyncClient(timeout=60)
    sdk = AsyncOpenAI(base_url=server.openai_url, api_key="x", max_retries=0, timeout=60)
    try:
        size = await _same_bytes(ctx, raw_client, backend, n)
        readers: dict[str, Callable[[], Awaitable[int]]] = {
            "raw": lambda: _raw(raw_client, backend),
            "ours": lambda: _ours(backend),
            "openai": lambda: _openai(sdk),
        }
        targets = {"raw": "amigo", "ours": "amigo", "openai": "openai"}
        for name in CLIENTS:  # warm up: imports, connections, first-call caches
            server.enqueue(targets[name], n=min(n, 2_000))
            await readers[name]()
        seconds: dict[str, list[float]] = {name: [] for name in CLIENTS}
        drain: list[float] = []
        for turn in range(ctx.repeat):
            ctx.log(f"throughput: repeat {turn + 1}/{ctx.repeat}")
            for name in rotate(CLIENTS, turn):
                server.enqueue(targets[name], n=n)
                start = time.perf_counter()
                count = await readers[name]()
                seconds[name].append(time.perf_counter() - start)
                if count != n:
                    raise RuntimeError(f"{name} read {count} text chunks of {n}")
            server.enqueue("amigo", n=n)
            drain.append(await _socket_drain(server.amigo_url, backend))
    finally:
        await backend.aclose()
        await raw_client.aclose()
        await sdk.close()

    def rate(name: str) -> list[float]:
        return [n / s for s in seconds[name]]

    ours, raw, sdk_s = seconds["ours"], seconds["raw"], seconds["openai"]
    return [
        Row(NAME, f"answer: {n:,} chunks, {size:,} bytes of SSE", [], text="same bytes for all"),
        Row(NAME, "wire: server → socket, read and dropped", [n / s for s in drain], "chunks/s"),
        Row(NAME, "raw httpx + json.loads (the floor)", rate("raw"), "chunks/s"),
        Row(NAME, "ours (AmigoBackend.chat)", rate("ours"), "chunks/s"),
        Row(NAME, "openai SDK (AsyncOpenAI, stream=True)", rate("openai"), "chunks/s"),
        Row(
            NAME,
            "ours ÷ raw, time",
            [o / r for o, r in zip(ours, raw, strict=True)],
            RATIO,
            ("<=", 1.25),
        ),
        Row(
            NAME,
            "ours ÷ openai, throughput",
            [s / o for o, s in zip(ours, sdk_s, strict=True)],
            RATIO,
            (">=", 1.0),
        ),
    ]


# -- the three readers ----------------------------------------------------------------------------


async def _raw(client: httpx.AsyncClient, backend: Any) -> int:
    """The least a client can do: lines, ``data:`` prefix, ``json.loads``, take the text."""
    from amigo_magic import catalog
    from amigo_magic.protocol import ChatParams, chat_body

    body = chat_body(catalog.resolve(MODEL), MESSAGES, ChatParams(), chat_id=_uuid(), stream=True)
    count = 0
    async with client.stream(
        "POST", backend.chat_url, content=json.dumps(body).encode(), headers=backend.headers()
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            choices = json.loads(data)["choices"]
            if choices and choices[0]["delta"].get("content"):
                count += 1
    return count


async def _ours(backend: Any) -> int:
    from amigo_magic.backends.base import ChatRequest
    from amigo_magic.protocol import TextDelta

    count = 0
    async for event in backend.chat(ChatRequest(MODEL, MESSAGES)):
        if type(event) is TextDelta:
            count += 1
    return count


async def _openai(sdk: Any) -> int:
    count = 0
    stream = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            count += 1
    return count


# -- checks and the wire's own speed --------------------------------------------------------------

_VOLATILE = re.compile(rb'"id":"chatcmpl-[0-9a-f]+"|"created":\d+')


async def _same_bytes(ctx: Context, client: httpx.AsyncClient, backend: Any, n: int) -> int:
    """The SSE bytes of the answer from both servers, as each client asks for it, must match."""
    from amigo_magic import catalog
    from amigo_magic.protocol import ChatParams, chat_body

    bodies = []
    for server, url, headers, body in (
        (
            "amigo",
            backend.chat_url,
            backend.headers(),
            chat_body(catalog.resolve(MODEL), MESSAGES, ChatParams(), chat_id=_uuid(), stream=True),
        ),
        (
            "openai",
            ctx.server.openai_url + "/chat/completions",
            {"authorization": "Bearer x", "content-type": "application/json"},
            {"model": MODEL, "messages": MESSAGES, "stream": True},
        ),
    ):
        ctx.server.enqueue(server, n=n)
        response = await client.post(url, content=json.dumps(body).encode(), headers=headers)
        bodies.append(_VOLATILE.sub(b"", response.content))
    if bodies[0] != bodies[1]:
        raise RuntimeError("the two servers sent different bytes for the same answer")
    return len(bodies[0])


async def _socket_drain(base_url: str, backend: Any) -> float:
    """Seconds for the server to deliver the whole answer to a socket that only reads."""
    from amigo_magic import catalog
    from amigo_magic.protocol import ChatParams, chat_body

    url = httpx.URL(backend.chat_url)
    body = json.dumps(
        chat_body(catalog.resolve(MODEL), MESSAGES, ChatParams(), chat_id=_uuid(), stream=True)
    ).encode()
    headers = {**backend.headers(), "content-length": str(len(body)), "connection": "close"}
    head = f"POST {url.raw_path.decode()} HTTP/1.1\r\nhost: {url.netloc.decode()}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(head.encode() + body)
    await writer.drain()
    tail = b""
    while True:
        data = await reader.read(1 << 16)
        if not data:
            break
        tail = (tail + data)[-5:]
        if tail == b"0\r\n\r\n":
            break
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())
