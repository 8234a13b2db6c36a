"""The loopback servers, in their own process so that serving never competes with the client
being measured for the GIL (with two cores, the server gets one to itself while it streams).

Two :class:`tests.amigo_server.AmigoServer` instances on 127.0.0.1: ``amigo`` checks headers as
the real service does (our client and the raw floor), ``openai`` has the gates off
(``strict_headers=False``) for the OpenAI SDK. Both write the same bytes for the same answer.

The parent drives the child over a pipe, one JSON line per command::

    {"op": "enqueue", "server": "amigo", "n": 50000, "stall_before": 0.2}   -> "ok"
    {"op": "enqueue", "server": "amigo", "size": 1000000}                   -> "ok"
    {"op": "enqueue", "server": "amigo", "n": 8, "stall_before": 0.05, "count": 1000} -> "ok"
    {"op": "quit"}
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from typing import Any

from benchmarks.common import ROOT, chunks, chunks_for_size

__all__ = ["ServerProcess"]


class ServerProcess:
    """Parent side: start the child, read its URLs, queue replies."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server did not start")
        urls = json.loads(line)
        self.amigo_url: str = urls["amigo"]
        self.openai_url: str = urls["openai"]
        self.pid = self._proc.pid

    def _call(self, command: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"benchmark server: {answer or 'no answer'}")

    def enqueue(
        self,
        server: str = "amigo",
        *,
        n: int | None = None,
        size: int | None = None,
        stall_before: float = 0.0,
        delay: float = 0.0,
        count: int = 1,
        echo: bool = False,
    ) -> None:
        """Queue ``count`` streamed answers of ``n`` chunks (or ``size`` characters) each; with
        ``echo``, the server's own answer to each request ("Echo: <its prompt>")."""
        self._call(
            {
                "echo": echo,
                "op": "enqueue",
                "server": server,
                "n": n,
                "size": size,
                "stall_before": stall_before,
                "delay": delay,
                "count": count,
            }
        )

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self._call({"op": "quit"})
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def main() -> int:
    """Child side: serve until "quit" or the pipe closes."""
    sys.path.insert(0, str(ROOT))
    from tests.amigo_server import AmigoServer, Reply

    servers = {
        "amigo": AmigoServer().start(),
        "openai": AmigoServer(strict_headers=False).start(),
    }
    print(json.dumps({name: s.base_url for name, s in servers.items()}), flush=True)
    cache: dict[tuple[str, int], list[str]] = {}
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "quit":
                break
            try:
                if command.get("echo"):  # the server's own answer: "Echo: <the prompt>"
                    reply = Reply.stream(stall_before=float(command.get("stall_before") or 0))
                    servers[command["server"]].enqueue(*[reply] * int(command.get("count") or 1))
                    print("ok", flush=True)
                    continue
                if command.get("size"):
                    key = ("size", int(command["size"]))
                    if key not in cache:
                        cache[key] = chunks_for_size(key[1])
                else:
                    key = ("n", int(command["n"]))
                    if key not in cache:
                        cache[key] = chunks(key[1])
                if len(cache) > 8:  # big answers: keep only a few
                    cache = {key: cache[key]}
                reply = Reply.stream(
                    chunks=cache[key],
                    stall_before=float(command.get("stall_before") or 0),
                    delay=float(command.get("delay") or 0),
                )
                servers[command["server"]].enqueue(*[reply] * int(command.get("count") or 1))
            except Exception as error:  # tell the parent, keep serving
                print(f"error: {error!r}", flush=True)
                continue
            print("ok", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
