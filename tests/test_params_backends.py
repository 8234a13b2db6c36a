"""``-p KEY=VALUE`` reaches every backend: the OpenAI-compatible endpoint's body on the wire,
and the local model (llama.cpp in-process), where a seed makes a hot sampler repeat itself."""

from __future__ import annotations

import asyncio
from typing import Any

from amigo_magic.backends.base import ChatRequest
from amigo_magic.backends.local import LocalBackend
from amigo_magic.protocol import ChatParams, TextDelta
from tests.amigo_server import AmigoServer
from tests.shell import TestingShell


def test_an_endpoint_gets_the_params_in_its_body(ip: TestingShell) -> None:
    with AmigoServer(strict_headers=False, success_status=200) as server:  # OpenAI-compatible
        ask_the_endpoint(ip, server)


def ask_the_endpoint(ip: TestingShell, server: AmigoServer) -> None:
    ip.run_cell(f"%config AmigoMagics.endpoints = {{'loop': {{'url': {server.base_url!r}}}}}")
    try:
        ip.run_cell("%%amigo -m loop:some-model -p seed=7 -p stop='[\"\\n\\n\"]' -p min_p=0.05\nq")
    finally:
        ip.run_cell("%config AmigoMagics.endpoints = {}")
    (body,) = [r.json for r in server.requests if r.path == "/v1/chat/completions"]
    assert (body["model"], body["seed"], body["stop"], body["min_p"]) == (
        "some-model", 7, ["\n\n"], 0.05
    )  # fmt: skip
    assert "personaId" not in body  # the OpenAI body, not AmigoChat's


def test_the_local_model_takes_a_seed() -> None:
    backend = LocalBackend()

    async def poem(seed: int) -> str:
        hot = ChatParams(temperature=1.5, top_p=1.0, max_tokens=24, extra={"seed": seed})
        messages = [{"role": "user", "content": "Write a short poem about rain."}]
        pieces: list[Any] = [e async for e in backend.chat(ChatRequest("", messages, hot))]
        return "".join(e.text for e in pieces if isinstance(e, TextDelta))

    async def three() -> tuple[str, str, str]:
        return await poem(7), await poem(7), await poem(8)

    first, again, other = asyncio.run(three())
    assert first == again  # the seed reached llama.cpp's sampler
    assert first != other
