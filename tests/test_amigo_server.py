"""Tests of the loopback AmigoChat server used by the rest of the suite."""

from __future__ import annotations

import base64
import http.client
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.amigo_server import CHAT_MODELS, IMAGE_MODELS, AmigoServer, Reply

ROOT = Path(__file__).resolve().parent.parent

HEADERS = {
    "accept": "*/*",
    "content-type": "application/json",
    "x-device-platform": "web",
    "x-device-language": "en-US",
    "x-device-version": "1.0.45",
    "authorization": "Bearer",
}


def chat_body(
    text: str = "hello world", *, stream: bool = True, model: str = "gpt-4o-mini"
) -> dict[str, Any]:
    return {
        "chatId": str(uuid.uuid4()),
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": text},
        ],
        "model": model,
        "personaId": CHAT_MODELS.get(model, "amigo"),
        "stream": stream,
        "temperature": 0.5,
        "top_p": 0.95,
        "max_tokens": 4000,
        "frequency_penalty": 0,
        "presence_penalty": 0,
    }


def image_body(prompt: str = "a red fox", model: str = "flux-realism") -> dict[str, Any]:
    return {"prompt": prompt, "model": model, "personaId": IMAGE_MODELS[model]}


def sse_data(raw: bytes) -> list[str]:
    """Minimal byte-level SSE parser: the data of each dispatched event, in order."""
    events: list[str] = []
    data: list[bytes] = []
    for line in re.split(rb"\r\n|\r|\n", raw):
        if not line:
            if data:
                events.append(b"\n".join(data).decode("utf-8", "replace"))
                data = []
            continue
        if line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if field == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    return events


def text_of(events: list[str]) -> str:
    out = []
    for event in events:
        if event == "[DONE]":
            break
        choice = json.loads(event)["choices"][0]
        out.append(choice.get("delta", {}).get("content") or choice.get("text") or "")
    return "".join(out)


@pytest.fixture
def server() -> Iterator[AmigoServer]:
    with AmigoServer() as srv:
        yield srv


@pytest.fixture
def client(server: AmigoServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=5) as c:
        yield c


def test_default_stream(server: AmigoServer, client: httpx.Client) -> None:
    response = client.post("/chat/completions", json=chat_body("hello big world"))
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    events = sse_data(response.content)
    assert events[-1] == "[DONE]"
    first = json.loads(events[0])["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": ""}
    chunks = [json.loads(e) for e in events[1:-2]]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == [
        "Echo: ",
        "hello ",
        "big ",
        "world",
    ]
    final = json.loads(events[-2])
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"]["completion_tokens"] == 4
    assert final["usage"]["total_tokens"] == (
        final["usage"]["prompt_tokens"] + final["usage"]["completion_tokens"]
    )
    assert text_of(events) == "Echo: hello big world"
    assert server.active_streams == 0


def test_default_completion_and_models(server: AmigoServer, client: httpx.Client) -> None:
    response = client.post("/chat/completions", json=chat_body("hi", stream=False))
    assert response.status_code == 201
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Echo: hi"}
    models = client.get("/models").json()
    ids = {m["id"] for m in models["data"]}
    assert ids == set(CHAT_MODELS) | set(IMAGE_MODELS)
    missing = client.post("/nope", json={})
    assert missing.status_code == 404
    assert missing.json()["statusCode"] == 404


def test_device_version_gate(client: httpx.Client) -> None:
    no_version = {k: v for k, v in HEADERS.items() if k != "x-device-version"}
    response = client.post("/chat/completions", json=chat_body(), headers={"x-device-version": ""})
    assert response.status_code == 406
    with httpx.Client(headers=no_version, timeout=5) as bare:
        response = bare.post(str(client.base_url) + "/chat/completions", json=chat_body())
    assert response.status_code == 406
    assert response.json() == {
        "message": "not implemented",
        "error": "Not Acceptable",
        "statusCode": 406,
    }
    old = client.post("/chat/completions", json=chat_body(), headers={"x-device-version": "1.0.9"})
    assert old.status_code == 406
    newer = client.post(
        "/chat/completions", json=chat_body(), headers={"x-device-version": "1.0.100"}
    )
    assert newer.status_code == 201


def test_api_key() -> None:
    with AmigoServer(api_key="s3cret") as srv, httpx.Client(headers=HEADERS, timeout=5) as c:
        url = srv.base_url + "/chat/completions"
        assert c.post(url, json=chat_body()).status_code == 401  # bare "Bearer"
        wrong = c.post(url, json=chat_body(), headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json() == {"message": "Unauthorized", "statusCode": 401}
        ok = c.post(url, json=chat_body(), headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 201


def test_body_validation(client: httpx.Client) -> None:
    body = chat_body(model="gpt-4o")
    body["personaId"] = "amigo"
    response = client.post("/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json() == {"message": "Invalid persona for model gpt-4o", "statusCode": 400}
    body = chat_body()
    body["chatId"] = "not-a-uuid"
    assert client.post("/chat/completions", json=body).status_code == 400
    body = chat_body()
    body["messages"] = []
    assert client.post("/chat/completions", json=body).status_code == 400
    bad_json = client.post("/chat/completions", content=b"{nope")
    assert bad_json.status_code == 400
    assert bad_json.json()["error"] == "Bad Request"
    wrong_type = client.post(
        "/chat/completions", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 400
    image = image_body()
    image["personaId"] = "nope"
    assert client.post("/images/generations", json=image).status_code == 400


def test_lenient_server_accepts_any_model() -> None:
    with (
        AmigoServer(strict_headers=False, success_status=200) as srv,
        httpx.Client(timeout=5) as c,
    ):
        body = {"model": "whatever", "messages": [{"role": "user", "content": "x"}]}
        response = c.post(srv.base_url + "/chat/completions", json=body)
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "Echo: x"


def test_queue_fifo_then_default(server: AmigoServer, client: httpx.Client) -> None:
    server.enqueue(
        Reply.error(429, "slow down", retry_after="3"),
        Reply.completion("wrapped!", wrapped=True, status=200),
        Reply.error(500, "boom", shape="openai"),
        Reply.error(400, "bad", shape="error"),
    )
    server.enqueue(Reply.json({"x": 1}), Reply.cloudflare(), Reply.raw(b"\x00oops", status=502))
    first = client.post("/chat/completions", json=chat_body())
    assert first.status_code == 429
    assert first.headers["retry-after"] == "3"
    assert first.json() == {"message": "slow down", "error": "Too Many Requests", "statusCode": 429}
    second = client.post("/chat/completions", json=chat_body())
    assert second.status_code == 200
    assert second.json()["message"]["choices"][0]["message"]["content"] == "wrapped!"
    third = client.post("/chat/completions", json=chat_body())
    assert third.json()["error"]["message"] == "boom"
    assert third.json()["error"]["type"] == "server_error"
    assert client.post("/chat/completions", json=chat_body()).json() == {"error": "bad"}
    fifth = client.post("/chat/completions", json=chat_body())
    assert (fifth.status_code, fifth.json()) == (201, {"x": 1})
    blocked = client.post("/chat/completions", json=chat_body())
    assert blocked.status_code == 403
    assert "Attention Required! | Cloudflare" in blocked.text
    assert blocked.headers["content-type"].startswith("text/html")
    raw = client.post("/chat/completions", json=chat_body())
    assert (raw.status_code, raw.content) == (502, b"\x00oops")
    default = client.post("/chat/completions", json=chat_body("again"))
    assert default.status_code == 201
    assert text_of(sse_data(default.content)) == "Echo: again"


def test_redirect(server: AmigoServer, client: httpx.Client) -> None:
    server.enqueue(Reply.redirect("https://example.invalid/elsewhere"))
    response = client.post("/chat/completions", json=chat_body())
    assert response.status_code == 302
    assert response.headers["location"] == "https://example.invalid/elsewhere"


def test_images(server: AmigoServer, client: httpx.Client) -> None:
    response = client.post("/images/generations", json=image_body("a red fox"))
    assert response.status_code == 201
    body = response.json()
    assert isinstance(body["created"], int)
    [item] = body["data"]
    assert item["revised_prompt"] == "a red fox"
    assert item["url"].startswith(server.origin + "/files/")
    png = client.get(item["url"])
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    path = item["url"][len(server.origin) :]
    assert png.content == server.images[path]
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")

    server.enqueue(
        Reply.image(n=2, b64=True, size=(8, 4)),
        Reply.image(image_status=404),
        Reply.image(image_content_type="text/html", image_bytes=b"<html>"),
        Reply.image(url="file:///etc/passwd"),
    )
    b64 = client.post("/images/generations", json=image_body("a red fox")).json()["data"]
    assert len(b64) == 2
    decoded = [base64.b64decode(d["b64_json"]) for d in b64]
    assert decoded[0] != decoded[1]
    assert decoded[0] in server.images.values()
    missing = client.post("/images/generations", json=image_body()).json()["data"][0]["url"]
    assert client.get(missing).status_code == 404
    wrong = client.post("/images/generations", json=image_body()).json()["data"][0]["url"]
    served = client.get(wrong)
    assert (served.headers["content-type"], served.content) == ("text/html", b"<html>")
    evil = client.post("/images/generations", json=image_body()).json()["data"][0]["url"]
    assert evil == "file:///etc/passwd"
    # deterministic: same prompt and index give the same bytes
    again = client.post("/images/generations", json=image_body("a red fox")).json()["data"][0]
    assert client.get(again["url"]).content == png.content


@pytest.mark.parametrize(
    ("split", "line_ending", "batch", "drip"),
    [
        (None, "\n", 1, 0.0),
        (1, "\r\n", 1, 0.0),
        (3, "\r", 1, 0.0),
        (7, "\r\n", 4, 0.0),
        (None, "\r\n", 3, 0.0),
        (None, "\r\n", 1, 0.0001),
    ],
)
def test_framing_variants_same_text(
    server: AmigoServer,
    client: httpx.Client,
    split: int | None,
    line_ending: str,
    batch: int,
    drip: float,
) -> None:
    text = "héllo wörld — 日本語 text\u2028with a line separator 🙂"
    if drip:
        text = "日本 🙂"
    server.enqueue(
        Reply.stream(
            text,
            split=split,
            line_ending=line_ending,
            batch=batch,
            drip=drip,
            keepalive_every=2,
        )
    )
    pieces: list[bytes] = []
    with client.stream("POST", "/chat/completions", json=chat_body()) as response:
        pieces.extend(response.iter_raw())
    raw = b"".join(pieces)
    assert text_of(sse_data(raw)) == text
    assert b": keep-alive" in raw
    if split == 1:
        assert line_ending.encode() in raw
        assert len(pieces) > 50  # many small network chunks arrived


def test_stream_faults(server: AmigoServer, client: httpx.Client) -> None:
    server.enqueue(
        Reply.stream("a b c d", role_chunk=False, usage=False, done=False, finish_reason=None),
        Reply.stream("a b c d", malformed_after=2),
        Reply.stream("a b c d", error_after=1),
        Reply.stream("a b", invalid_utf8=True, text_field="text", status=200),
        Reply.stream(chunks=["x", "", "y"]),
        Reply.stream("u v w", coalesce=False),
    )
    plain = sse_data(client.post("/chat/completions", json=chat_body()).content)
    assert plain[-1] != "[DONE]"
    assert text_of(plain) == "a b c d"
    assert all("usage" not in json.loads(e) for e in plain)

    malformed = sse_data(client.post("/chat/completions", json=chat_body()).content)
    assert 'data: {"choices": [' not in malformed
    assert '{"choices": [' in malformed
    assert malformed.index('{"choices": [') == 3  # role + two text chunks before it

    errored = sse_data(client.post("/chat/completions", json=chat_body()).content)
    assert json.loads(errored[-1]) == {
        "error": {"message": "Internal error", "type": "server_error"}
    }
    assert len(errored) == 3

    response = client.post("/chat/completions", json=chat_body())
    assert response.status_code == 200
    assert b"\xff\xfe" in response.content
    events = sse_data(response.content)
    assert json.loads(events[1])["choices"][0]["text"] == "\ufffd\ufffda "

    assert text_of(sse_data(client.post("/chat/completions", json=chat_body()).content)) == "xy"
    uncoalesced = client.post("/chat/completions", json=chat_body()).content
    assert text_of(sse_data(uncoalesced)) == "u v w"


def test_fail_after_cuts_stream(server: AmigoServer, client: httpx.Client) -> None:
    server.enqueue(Reply.stream("one two three four five", fail_after=2))
    pieces: list[bytes] = []
    with client.stream("POST", "/chat/completions", json=chat_body()) as response:
        assert response.status_code == 201
        with pytest.raises(httpx.RemoteProtocolError):
            pieces.extend(response.iter_raw())
    received = b"".join(pieces)
    assert text_of(sse_data(received)) == "one two "
    # the client recovers with a fresh connection
    assert client.post("/chat/completions", json=chat_body()).status_code == 201


def test_stalls(server: AmigoServer, client: httpx.Client) -> None:
    server.enqueue(Reply.stream("a b", stall_before=0.3), Reply.stream("a b", stall_after=(1, 0.3)))
    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat/completions", json=chat_body(), timeout=0.1)
    started = time.monotonic()
    with client.stream("POST", "/chat/completions", json=chat_body()) as response:
        first_at = time.monotonic() - started
        body = response.read()
    assert first_at < 0.25
    assert time.monotonic() - started >= 0.3
    assert text_of(sse_data(body)) == "a b"


def test_recorded_requests(server: AmigoServer, client: httpx.Client) -> None:
    body = chat_body("recorded")
    client.post("/chat/completions", json=body, headers={"X-Device-UUID": "abc"})
    [recorded] = server.requests
    assert recorded.method == "POST"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.headers["x-device-uuid"] == "abc"
    assert recorded.headers["x-device-version"] == "1.0.45"
    assert recorded.json == body
    assert json.loads(recorded.body) == body
    server.enqueue(Reply.json({}))
    server.reset()
    assert server.requests == []
    assert client.post("/chat/completions", json=body).status_code == 201  # queue cleared


def test_client_disconnect_counted(server: AmigoServer, client: httpx.Client) -> None:
    server.enqueue(Reply.stream("a b c d e f g h i j", delay=0.3))
    with client.stream("POST", "/chat/completions", json=chat_body()) as response:
        chunks = response.iter_raw()  # keep a reference: dropping it closes the response
        next(chunks)
        assert server.active_streams == 1
    deadline = time.monotonic() + 2
    while server.client_disconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.client_disconnects == 1
    assert server.active_streams == 0


def test_keep_alive_across_replies(server: AmigoServer) -> None:
    server.enqueue(Reply.error(503, "busy"), Reply.stream("a b"), Reply.cloudflare())
    conn = http.client.HTTPConnection("127.0.0.1", int(server.origin.rsplit(":", 1)[1]), timeout=5)
    try:
        payload = json.dumps(chat_body())
        sockets = set()
        for expected in (503, 201, 403, 406, 201):
            headers = dict(HEADERS)
            if expected == 406:
                headers["x-device-version"] = "0.9"
            conn.request("POST", "/v1/chat/completions", body=payload, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == expected
            sockets.add(id(conn.sock))
        assert len(sockets) == 1
    finally:
        conn.close()


def test_stop_closes_idle_connections() -> None:
    srv = AmigoServer().start()
    client = httpx.Client(headers=HEADERS, timeout=5)
    try:
        client.post(srv.base_url + "/chat/completions", json=chat_body())  # keep-alive conn
        srv.enqueue(Reply.stream("a b c", stall_after=(1, 30)))
        with client.stream("POST", srv.base_url + "/chat/completions", json=chat_body()) as r:
            chunks = r.iter_raw()
            next(chunks)
            started = time.monotonic()
            srv.stop()
            assert time.monotonic() - started < 2
        assert srv.client_disconnects == 0
    finally:
        client.close()
        srv.stop()


def test_command_line() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.amigo_server", "--api-key", "k"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert re.fullmatch(r"AMIGO_BASE_URL=http://127\.0\.0\.1:\d+/v1", line)
        base = line.split("=", 1)[1]
        with httpx.Client(headers=HEADERS, timeout=5) as c:
            assert c.post(base + "/chat/completions", json=chat_body()).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
